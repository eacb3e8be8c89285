"""Library drift on SQLite and PostgreSQL: a version whose row records another scikit-learn (or
numpy major) version is refused before anything is unpickled, unless drift is allowed; then it
loads, with one warning, and a load that still fails is a VersionDrift, never a bare exception."""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
import sqlalchemy as sa

from app.errors import VersionDrift
from app.registry.artifacts import ArtifactStore
from app.registry.cache import ModelCache
from app.registry.compatibility import has_drifted
from app.registry.model_registry import ModelRegistry
from app.registry.orm import ModelRow, VersionRow
from app.registry.records import ModelVersion

OLD_SCIKIT_LEARN = "1.5.0"
RUNNING = {"scikit-learn": sklearn.__version__, "numpy": np.__version__}
NUMPY_MAJOR = int(np.__version__.split(".")[0])
OTHER_NUMPY_MAJOR = "1.26.4" if NUMPY_MAJOR >= 2 else "2.0.0"


def edit_row(engine: sa.Engine, name: str, version: int, **values: Any) -> None:
    """Change a stored version's row in place, as another process or an older server left it."""
    model_id = sa.select(ModelRow.id).where(ModelRow.name == name).scalar_subquery()
    with engine.begin() as connection:
        connection.execute(
            sa.update(VersionRow)
            .where(VersionRow.model_id == model_id, VersionRow.version == version)
            .values(**values)
        )


def trained_with(registry: ModelRegistry, engine: sa.Engine, version: ModelVersion, **libraries):
    """Record ``libraries`` (e.g. ``{"scikit-learn": "1.5.0"}``) as the version's training
    versions; the version as the registry now reads it."""
    recorded = dict(version.library_versions) | libraries
    edit_row(engine, version.name, version.version, library_versions=recorded)
    return registry.get_version(version.name, version.version)


def other_process(engine: sa.Engine, store_root: Path, **options: Any) -> ModelRegistry:
    """A second process's view: same database and store, nothing cached."""
    cache = ModelCache(options.pop("cache_size", 4))
    return ModelRegistry(engine, ArtifactStore(store_root), cache, **options)


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def replace_artifact(engine: sa.Engine, store_root: Path, version: ModelVersion, data: bytes):
    """Put ``data`` in place of the artifact *and* record its sha256 and size, so that the
    integrity check passes and only the library versions stand between it and unpickling."""
    (store_root / version.artifact_path).write_bytes(data)
    edit_row(
        engine,
        version.name,
        version.version,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        artifact_size=len(data),
    )


# -- the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("recorded", "drifted"),
    [
        (RUNNING, False),
        (RUNNING | {"scipy": "0.1", "joblib": "0.1", "python": "3.0.0"}, False),
        (RUNNING | {"numpy": f"{NUMPY_MAJOR}.999.0"}, False),  # same major
        (RUNNING | {"scikit-learn": OLD_SCIKIT_LEARN}, True),
        (RUNNING | {"scikit-learn": sklearn.__version__ + ".post1"}, True),
        (RUNNING | {"numpy": OTHER_NUMPY_MAJOR}, True),
        ({"numpy": np.__version__}, True),  # no scikit-learn recorded: cannot be vouched for
        ({"scikit-learn": sklearn.__version__}, True),
        ({}, True),
    ],
)
def test_what_counts_as_drift(recorded, drifted):
    assert has_drifted(recorded) is drifted


# -- refused -----------------------------------------------------------------------------------
def test_other_scikit_learn_is_refused_with_both_versions(registry, engine, store_root, trained):
    version = registry.register("line-7", trained().new, trained().model)
    drifted = trained_with(registry, engine, version, **{"scikit-learn": OLD_SCIKIT_LEARN})
    assert drifted.library_versions["scikit-learn"] == OLD_SCIKIT_LEARN

    fresh = other_process(engine, store_root)
    with pytest.raises(VersionDrift) as info:
        fresh.load(fresh.get_version("line-7", 1))
    error = info.value
    assert (error.status, error.code) == (409, "version_drift")
    assert "'line-7' version 1" in error.detail
    assert f"scikit-learn {OLD_SCIKIT_LEARN}" in error.detail
    assert f"scikit-learn {sklearn.__version__}" in error.detail
    assert "LLOYD_ALLOW_VERSION_DRIFT" in error.detail
    assert error.extra == {
        "trained_with": {"scikit-learn": OLD_SCIKIT_LEARN, "numpy": np.__version__},
        "running": RUNNING,
    }
    # A refusal is not cached: the next call decides again.
    assert len(fresh.cache) == 0
    with pytest.raises(VersionDrift):
        fresh.load(drifted)


def test_other_numpy_major_is_refused_and_another_minor_is_not(
    registry, engine, store_root, trained, points
):
    fitted = trained()
    major = registry.register("line-7", fitted.new, fitted.model)
    minor = registry.register("line-8", fitted.new, fitted.model)
    trained_with(registry, engine, major, numpy=OTHER_NUMPY_MAJOR)
    trained_with(registry, engine, minor, numpy=f"{NUMPY_MAJOR}.999.0")

    fresh = other_process(engine, store_root)
    with pytest.raises(VersionDrift) as info:
        fresh.load(fresh.get_version("line-7", 1))
    assert info.value.extra["trained_with"]["numpy"] == OTHER_NUMPY_MAJOR
    assert f"numpy {OTHER_NUMPY_MAJOR}" in info.value.detail
    loaded = fresh.load(fresh.get_version("line-8", 1))
    assert (loaded.predict(points) == fitted.model.predict(points)).all()


def test_a_drifted_artifact_is_never_unpickled(registry, engine, store_root, trained, tmp_path):
    """The versions come from the row, so the refusal happens before the file is even read:
    here the file is a payload whose sha256 the row records, and it does not run."""
    version = registry.register("line-7", trained().new, trained().model)
    marker = tmp_path / "marker"
    replace_artifact(engine, store_root, version, pickle.dumps(_CreatesFile(marker)))
    trained_with(registry, engine, version, **{"scikit-learn": OLD_SCIKIT_LEARN})

    fresh = other_process(engine, store_root)
    with pytest.raises(VersionDrift):
        fresh.load(fresh.get_version("line-7", 1))
    assert not marker.exists()
    # The payload was live: unpickled, it creates the marker.
    joblib.load(store_root / version.artifact_path).close()
    assert marker.exists()


def test_a_cached_model_is_refused_too(registry, engine, trained):
    """Whether a drifted version answers must not depend on what happens to be in memory."""
    version = registry.register("line-7", trained().new, trained().model)
    assert registry.cached(version) is not None  # a fresh training is cached
    drifted = trained_with(registry, engine, version, **{"scikit-learn": OLD_SCIKIT_LEARN})
    with pytest.raises(VersionDrift):
        registry.cached(drifted)
    with pytest.raises(VersionDrift):
        registry.load(drifted)


def test_a_drifted_version_does_not_affect_the_others(
    registry, engine, store_root, trained, points
):
    good = registry.register("line-7", trained(n_clusters=2).new, trained(n_clusters=2).model)
    bad = registry.register("line-7", trained(n_clusters=3).new, trained(n_clusters=3).model)
    trained_with(registry, engine, bad, **{"scikit-learn": OLD_SCIKIT_LEARN})
    fresh = other_process(engine, store_root)
    with pytest.raises(VersionDrift):
        fresh.load(fresh.get_version("line-7", "latest"))
    loaded = fresh.load(fresh.get_version("line-7", 1))
    assert (loaded.predict(points) == trained(n_clusters=2).model.predict(points)).all()
    assert good.library_versions["scikit-learn"] == sklearn.__version__
    # The drifted version can still be deleted.
    assert fresh.delete_version("line-7", 2).version == 2
    assert fresh.get_version("line-7", "latest").version == 1


# -- allowed -----------------------------------------------------------------------------------
def test_allowed_drift_loads_and_warns_once_per_version(
    registry, engine, store_root, trained, points, caplog
):
    fitted = trained()
    version = registry.register("line-7", fitted.new, fitted.model)
    trained_with(registry, engine, version, **{"scikit-learn": OLD_SCIKIT_LEARN})

    # No cache: every call reads and unpickles the file again, and still warns only once.
    fresh = other_process(engine, store_root, cache_size=0, allow_version_drift=True)
    with caplog.at_level(logging.WARNING, logger="app.registry.model_registry"):
        for _ in range(3):
            loaded = fresh.load(fresh.get_version("line-7", 1))
            assert (loaded.predict(points) == fitted.model.predict(points)).all()
            assert np.array_equal(loaded.transform(points), fitted.model.transform(points))
    warnings = [r for r in caplog.records if "LLOYD_ALLOW_VERSION_DRIFT" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "'line-7' version 1" in message
    assert OLD_SCIKIT_LEARN in message and sklearn.__version__ in message


def test_allowed_drift_that_fails_to_unpickle_is_a_version_drift(
    registry, engine, store_root, trained
):
    """An artifact of another scikit-learn can name a class this one no longer has. Its sha256
    matches, so the file is the service's own: the failure is the drift's, reported as such."""
    version = registry.register("line-7", trained().new, trained().model)
    # A pickle of a class in a scikit-learn module that does not exist here.
    replace_artifact(engine, store_root, version, b"csklearn.gone_in_this_release\nKMeans\n.")
    trained_with(registry, engine, version, **{"scikit-learn": OLD_SCIKIT_LEARN})

    fresh = other_process(engine, store_root, allow_version_drift=True)
    with pytest.raises(VersionDrift) as info:
        fresh.load(fresh.get_version("line-7", 1))
    assert info.value.status == 409
    assert "ModuleNotFoundError" in info.value.detail
    assert "sklearn.gone_in_this_release" in info.value.detail
    assert info.value.extra["trained_with"]["scikit-learn"] == OLD_SCIKIT_LEARN
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
