"""Concurrent registrations: every training gets its own version number, row and artifact, on
SQLite and on PostgreSQL, through one registry or through two (two replicas)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from app.registry.artifacts import TEMP_PREFIX, ArtifactStore
from app.registry.cache import ModelCache
from app.registry.database import create_database_engine
from app.registry.model_registry import ModelRegistry
from app.registry.records import ModelVersion
from tests.registry.conftest import Trained, artifact_files, count_rows

THREADS = 8


def register_at_once(jobs: list[tuple[ModelRegistry, str, Trained]]) -> list[ModelVersion]:
    """Run every ``registry.register(name, ...)`` in its own thread, all released together."""
    barrier = threading.Barrier(len(jobs))

    def run(job: tuple[ModelRegistry, str, Trained]) -> ModelVersion:
        registry, name, trained = job
        barrier.wait(timeout=30)
        return registry.register(name, trained.new, trained.model)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs, timeout=120))


def assert_store_matches_rows(registry: ModelRegistry, engine: sa.Engine) -> None:
    """One artifact file per row, no orphan and no temporary file."""
    with engine.connect() as connection:
        paths = connection.execute(sa.text("SELECT artifact_path FROM model_versions")).scalars()
        recorded = sorted(registry.store.root / p for p in paths)
    files = artifact_files(registry)
    assert not [f for f in files if f.name.startswith(TEMP_PREFIX)]
    assert files == recorded
    assert len(set(files)) == len(files)


def test_concurrent_trainings_of_one_name_get_versions_one_to_eight(
    registry, engine, store_root, trained
):
    # Distinct models (2..9 clusters), so each row can be checked against its own artifact.
    models = {k: trained(n_clusters=k, description=f"k={k}") for k in range(2, 2 + THREADS)}
    versions = register_at_once([(registry, "line-7", m) for m in models.values()])

    assert sorted(v.version for v in versions) == list(range(1, THREADS + 1))
    assert count_rows(engine, "models") == 1
    assert count_rows(engine, "model_versions") == THREADS
    assert len({v.artifact_path for v in versions}) == THREADS
    assert_store_matches_rows(registry, engine)

    listed, total = registry.list_versions("line-7", offset=0, limit=50)
    assert total == THREADS
    assert sorted(listed, key=lambda v: v.version) == sorted(versions, key=lambda v: v.version)
    # Every row points at the artifact of the model it describes.
    fresh = ModelRegistry(engine, ArtifactStore(store_root), ModelCache(0))
    for version in listed:
        loaded = fresh.load(version)
        assert loaded.estimator.n_clusters == version.params["n_clusters"]
        assert version.description == f"k={version.params['n_clusters']}"


def test_concurrent_trainings_of_two_names(registry, engine, trained):
    model = trained()
    jobs = [(registry, name, model) for name in ("line-a", "line-b") for _ in range(THREADS // 2)]
    versions = register_at_once(jobs)

    for name in ("line-a", "line-b"):
        numbers = sorted(v.version for v in versions if v.name == name)
        assert numbers == list(range(1, THREADS // 2 + 1))
        assert registry.get_model(name).n_versions == THREADS // 2
    assert count_rows(engine, "models") == 2
    assert count_rows(engine, "model_versions") == THREADS
    assert_store_matches_rows(registry, engine)


def test_concurrent_trainings_through_two_registries(
    registry, engine, database_url, store_root: Path, trained
):
    """Two replicas: separate engines and caches on one database and one store."""
    other_engine = create_database_engine(database_url)
    try:
        other = ModelRegistry(other_engine, ArtifactStore(store_root), ModelCache(4))
        model = trained()
        jobs = [(registry if i % 2 else other, "line-7", model) for i in range(THREADS)]
        versions = register_at_once(jobs)
    finally:
        other_engine.dispose()

    assert sorted(v.version for v in versions) == list(range(1, THREADS + 1))
    assert count_rows(engine, "model_versions") == THREADS
    assert_store_matches_rows(registry, engine)


def test_repeated_rounds_keep_counting(registry, engine, trained):
    model = trained()
    for round_number in range(3):
        versions = register_at_once([(registry, "line-7", model)] * THREADS)
        start = round_number * THREADS + 1
        assert sorted(v.version for v in versions) == list(range(start, start + THREADS))
    assert count_rows(engine, "model_versions") == 3 * THREADS
    assert_store_matches_rows(registry, engine)
