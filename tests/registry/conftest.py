"""Registry fixtures: a migrated database (SQLite or PostgreSQL), an artifact store under
``tmp_path``, and small k-means models fitted on seeded blobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.datasets import make_blobs

from app.ml.anomaly import DEFAULT_CONTAMINATION
from app.ml.catalog import ALGORITHMS
from app.ml.fitting import fit_model
from app.ml.model import FittedModel
from app.registry.artifacts import ArtifactStore
from app.registry.cache import ModelCache
from app.registry.database import create_database_engine, upgrade_database
from app.registry.model_registry import ModelRegistry
from app.registry.records import NewVersion
from app.services.training import library_versions


@dataclass(frozen=True)
class Trained:
    """A fitted model and the metadata the registry stores with it."""

    model: FittedModel
    new: NewVersion


@pytest.fixture(scope="session")
def points() -> np.ndarray:
    """120 rows in 2 features around 3 well separated centres."""
    X, _ = make_blobs(n_samples=120, n_features=2, centers=3, cluster_std=0.6, random_state=7)
    X.setflags(write=False)
    return X


def train_kmeans(X: np.ndarray, *, n_clusters: int = 3, seed: int = 0, **new: object) -> Trained:
    """k-means fitted by the service's own ``fit_model``; ``new`` overrides NewVersion fields."""
    algorithm = ALGORITHMS["kmeans"]
    result = fit_model(
        algorithm=algorithm,
        params={"n_clusters": n_clusters, "n_init": 3, "random_state": seed},
        preprocessing=[],
        X=X,
        feature_names=None,
        contamination=DEFAULT_CONTAMINATION,
    )
    fields = {
        "algorithm": algorithm.name,
        "params": result.params,
        "preprocessing": [],
        "feature_names": None,
        "n_samples": X.shape[0],
        "n_features": X.shape[1],
        "metrics": result.metrics,
        "anomaly": result.model.anomaly.summary,
        "operations": list(algorithm.operations),
        "library_versions": library_versions(),
        "training_seconds": result.training_seconds,
    } | new
    return Trained(result.model, NewVersion(**fields))


@pytest.fixture
def trained(points: np.ndarray) -> Callable[..., Trained]:
    """``trained(n_clusters=..., seed=..., **NewVersion overrides)``."""
    return lambda **kwargs: train_kmeans(points, **kwargs)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_database_engine(database_url)
    upgrade_database(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def registry(engine: sa.Engine, store_root: Path) -> ModelRegistry:
    return ModelRegistry(engine, ArtifactStore(store_root), ModelCache(4))


def artifact_files(registry: ModelRegistry) -> list[Path]:
    """Every file in the store's artifact folder, temporary files included."""
    return sorted(registry.store.folder.iterdir())


def count_rows(engine: sa.Engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
