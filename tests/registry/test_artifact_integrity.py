"""Failure atomicity and artifact integrity: a failed insert leaves no artifact, a changed or
missing artifact is refused with ArtifactIntegrityError, and a refused file is never unpickled."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import joblib
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.errors import ArtifactIntegrityError
from app.registry.artifacts import ArtifactStore
from app.registry.cache import ModelCache
from app.registry.model_registry import ModelRegistry
from tests.registry.conftest import artifact_files, count_rows


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(_CreatesFile(marker))


def fresh_registry(engine: sa.Engine, store_root: Path) -> ModelRegistry:
    """A second process's view: same database and store, empty cache."""
    return ModelRegistry(engine, ArtifactStore(store_root), ModelCache(4))


def test_failed_insert_removes_the_artifact_and_leaves_no_row(registry, engine, trained):
    kept = registry.register("line-7", trained().new, trained().model)
    before = artifact_files(registry)

    # algorithm is NOT NULL: the insert fails after the artifact was written.
    with pytest.raises(IntegrityError):
        registry.register("line-7", trained(algorithm=None).new, trained().model)
    with pytest.raises(IntegrityError):
        registry.register("line-8", trained(algorithm=None).new, trained().model)

    assert artifact_files(registry) == before
    assert count_rows(engine, "model_versions") == 1
    # The model row created for the new name went with the failed transaction.
    assert count_rows(engine, "models") == 1
    assert registry.get_version("line-7", "latest") == kept
    # Nothing was half-allocated: the next training takes version 2.
    assert registry.register("line-7", trained().new, trained().model).version == 2


def test_unpicklable_model_writes_nothing(registry, engine, trained):
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        registry.register("line-7", trained().new, lambda rows: rows)
    assert artifact_files(registry) == []
    assert count_rows(engine, "models") == 0


def test_changed_artifact_is_refused(registry, engine, store_root, trained):
    version = registry.register("line-7", trained().new, trained().model)
    path = store_root / version.artifact_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    fresh = fresh_registry(engine, store_root)
    with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256") as info:
        fresh.load(fresh.get_version("line-7", 1))
    assert info.value.status == 409
    assert info.value.code == "artifact_integrity"
    assert info.value.extra["expected_sha256"] == version.artifact_sha256
    assert info.value.extra["actual_sha256"] != version.artifact_sha256
    assert "'line-7' version 1" in info.value.detail
    # A failed load is not cached: the next call checks the file again.
    assert len(fresh.cache) == 0
    with pytest.raises(ArtifactIntegrityError):
        fresh.load(version)


def test_substituted_pickle_is_never_unpickled(registry, engine, store_root, trained, tmp_path):
    # The payload works: unpickling it creates its marker file.
    control = tmp_path / "control-marker"
    joblib.load(io.BytesIO(malicious_pickle(control))).close()  # the file it opened
    assert control.exists()

    version = registry.register("line-7", trained().new, trained().model)
    marker = tmp_path / "marker"
    (store_root / version.artifact_path).write_bytes(malicious_pickle(marker))

    fresh = fresh_registry(engine, store_root)
    with pytest.raises(ArtifactIntegrityError):
        fresh.load(fresh.get_version("line-7", 1))
    assert not marker.exists()


def test_missing_artifact_is_refused_and_the_version_can_still_be_deleted(
    registry, engine, store_root, trained
):
    version = registry.register("line-7", trained().new, trained().model)
    (store_root / version.artifact_path).unlink()

    fresh = fresh_registry(engine, store_root)
    with pytest.raises(ArtifactIntegrityError, match="missing from the store"):
        fresh.load(fresh.get_version("line-7", 1))
    assert fresh.delete_version("line-7", 1).version == 1
    assert count_rows(engine, "model_versions") == 0


def test_artifact_path_outside_the_store_is_refused(registry, engine, store_root, trained):
    registry.register("line-7", trained().new, trained().model)
    outside = store_root.parent / "elsewhere.joblib"
    joblib.dump({"not": "a model"}, outside)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE model_versions SET artifact_path = :path"),
            {"path": "artifacts/../../elsewhere.joblib"},
        )
    fresh = fresh_registry(engine, store_root)
    with pytest.raises(ArtifactIntegrityError, match="outside the store"):
        fresh.load(fresh.get_version("line-7", 1))
    assert outside.exists()


def test_a_corrupted_version_does_not_affect_the_others(
    registry, engine, store_root, trained, points
):
    good = registry.register("line-7", trained(n_clusters=2).new, trained(n_clusters=2).model)
    bad = registry.register("line-7", trained(n_clusters=3).new, trained(n_clusters=3).model)
    (store_root / bad.artifact_path).write_bytes(b"not a joblib file")
    fresh = fresh_registry(engine, store_root)
    with pytest.raises(ArtifactIntegrityError):
        fresh.load(bad)
    assert (fresh.load(good).predict(points) == trained(n_clusters=2).model.predict(points)).all()


def test_artifact_replaced_by_another_valid_model_is_refused(
    registry, engine, store_root, trained, points
):
    """A well-formed joblib file of another model would unpickle and answer; only the sha256
    tells it apart, and it is refused without being loaded."""
    two = registry.register("line-7", trained(n_clusters=2).new, trained(n_clusters=2).model)
    four = registry.register("line-8", trained(n_clusters=4).new, trained(n_clusters=4).model)
    (store_root / two.artifact_path).write_bytes((store_root / four.artifact_path).read_bytes())

    fresh = fresh_registry(engine, store_root)
    with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256") as info:
        fresh.load(fresh.get_version("line-7", 1))
    assert info.value.extra["actual_sha256"] == four.artifact_sha256
    assert len(fresh.cache) == 0
    loaded = fresh.load(fresh.get_version("line-8", 1))
    assert (loaded.predict(points) == trained(n_clusters=4).model.predict(points)).all()


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "emptied"])
def test_truncated_artifact_is_refused(registry, engine, store_root, trained, keep):
    version = registry.register("line-7", trained().new, trained().model)
    path = store_root / version.artifact_path
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])

    fresh = fresh_registry(engine, store_root)
    with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256"):
        fresh.load(fresh.get_version("line-7", 1))
    # Put back, the very same file loads again: nothing about the refusal was remembered.
    path.write_bytes(data)
    assert fresh.load(fresh.get_version("line-7", 1)) is not None
