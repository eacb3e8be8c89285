"""The sweep of the artifact folder: what a crash leaves behind (temporary files, artifacts no
version refers to) goes, every referenced artifact and every other file stays, recent files are
spared for the grace period, and start-up sweeps and says what it removed."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.registry.artifacts import TEMP_PREFIX, ArtifactStore, SweepReport
from tests.conftest import make_settings
from tests.registry.conftest import artifact_files

HOUR = 3600.0


def backdate(path: Path, seconds: float) -> Path:
    """Make ``path`` look last written ``seconds`` ago."""
    moment = time.time() - seconds
    os.utime(path, (moment, moment))
    return path


def stray_temporary_file(store: ArtifactStore) -> Path:
    """What a write killed before its rename leaves: a half-written temporary file."""
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=store.folder)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"half an artifact")
    return Path(name)


def orphan_artifact(store: ArtifactStore, model: object) -> Path:
    """What a crash between the write and the commit leaves: a complete artifact, no row."""
    return store.root / store.write(store.serialize(model)).path


def test_orphans_and_temporary_files_go_referenced_artifacts_stay(registry, trained):
    store = registry.store
    kept = [
        registry.register("line-7", trained().new, trained().model),
        registry.register("line-8", trained(n_clusters=2).new, trained(n_clusters=2).model),
    ]
    orphan = orphan_artifact(store, trained().model)
    temporary = stray_temporary_file(store)

    report = store.sweep(registry.artifact_paths(), older_than_seconds=0)

    assert report == SweepReport(orphans=[orphan.name], temporary=[temporary.name])
    assert report.removed == 2
    assert artifact_files(registry) == sorted(store.root / v.artifact_path for v in kept)
    for version in kept:  # straight from disk, past the cache, sha256 checked
        assert store.load(version.artifact_path, version.artifact_sha256, label=version.label)
    assert store.sweep(registry.artifact_paths(), older_than_seconds=0) == SweepReport()


def test_the_file_of_a_deleted_version_that_outlived_its_row_is_swept(registry, trained):
    """delete_version removes the row, then the file: a crash in between leaves the file."""
    store = registry.store
    stays = registry.register("line-7", trained().new, trained().model)
    goes = registry.register("line-7", trained(seed=1).new, trained(seed=1).model)
    left_over = store.root / goes.artifact_path
    data = left_over.read_bytes()
    registry.delete_version("line-7", goes.version)
    left_over.write_bytes(data)  # as if the process died before the unlink

    report = store.sweep(registry.artifact_paths(), older_than_seconds=0)

    assert report == SweepReport(orphans=[left_over.name])
    assert artifact_files(registry) == [store.root / stays.artifact_path]


def test_files_younger_than_the_grace_are_spared(registry, trained):
    store = registry.store
    version = registry.register("line-7", trained().new, trained().model)
    referenced = backdate(store.root / version.artifact_path, HOUR)
    old_orphan = backdate(orphan_artifact(store, 2), 120)
    old_temporary = backdate(stray_temporary_file(store), 120)
    young_orphan = backdate(orphan_artifact(store, 3), 30)
    young_temporary = stray_temporary_file(store)

    report = store.sweep(registry.artifact_paths(), older_than_seconds=60)

    assert report == SweepReport(orphans=[old_orphan.name], temporary=[old_temporary.name])
    assert artifact_files(registry) == sorted([referenced, young_orphan, young_temporary])


def test_the_grace_counts_back_from_now(registry):
    """``now`` is the moment read before the referenced paths: the grace ends there."""
    store = registry.store
    within = backdate(orphan_artifact(store, 1), 80)
    beyond = backdate(orphan_artifact(store, 2), 100)

    report = store.sweep(set(), older_than_seconds=60, now=time.time() - 30)

    assert report == SweepReport(orphans=[beyond.name])
    assert artifact_files(registry) == [within]


def test_other_files_are_never_touched(registry):
    store = registry.store
    others = [
        store.folder / "README",
        store.folder / "artifact.joblib.bak",
        store.folder / "kept" / "nested.joblib",
        store.root / "outside.joblib",
    ]
    for path in others:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        backdate(path, HOUR)
    (store.folder / "folder.joblib").mkdir()

    assert store.sweep(set(), older_than_seconds=0) == SweepReport()
    assert all(path.exists() for path in others)
    assert (store.folder / "folder.joblib").is_dir()


def test_artifact_paths_names_the_artifact_of_every_version(registry, trained):
    assert registry.artifact_paths() == set()
    versions = [
        registry.register("line-7", trained().new, trained().model),
        registry.register("line-7", trained(seed=1).new, trained(seed=1).model),
        registry.register("line-8", trained().new, trained().model),
    ]
    registry.delete_version("line-7", 1)

    paths = registry.artifact_paths()

    assert paths == {versions[1].artifact_path, versions[2].artifact_path}
    assert all(not Path(path).is_absolute() for path in paths)


def test_start_up_sweeps_and_says_what_it_removed(
    registry, trained, database_url, store_root, tmp_path, caplog
):
    version = registry.register("line-7", trained().new, trained().model)
    orphan = orphan_artifact(registry.store, trained().model)
    temporary = stray_temporary_file(registry.store)
    settings = make_settings(tmp_path, database_url=database_url, models_store=store_root)

    with caplog.at_level(logging.INFO, logger="app"), TestClient(create_app(settings)) as client:
        assert client.post("/v1/models/line-7/predict", json={"instances": [[0, 0]]}).is_success

    assert artifact_files(registry) == [store_root / version.artifact_path]
    swept = [r for r in caplog.records if "removed from the models store" in r.getMessage()]
    assert len(swept) == 1
    assert swept[0].levelno == logging.WARNING
    assert orphan.name in swept[0].getMessage()
    assert temporary.name in swept[0].getMessage()


def test_start_up_spares_files_within_the_grace(registry, database_url, store_root, tmp_path):
    orphan = orphan_artifact(registry.store, 1)
    temporary = stray_temporary_file(registry.store)
    settings = make_settings(
        tmp_path, database_url=database_url, models_store=store_root, orphan_grace_seconds=HOUR
    )

    with TestClient(create_app(settings)):
        pass

    assert artifact_files(registry) == sorted([orphan, temporary])
