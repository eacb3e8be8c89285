"""Small, seeded, read-only datasets for the ml-layer tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_moons


@dataclass(frozen=True)
class Dataset:
    """Training rows and new rows from the same distribution (plus a few far-away rows)."""

    X: np.ndarray
    X_new: np.ndarray


def _read_only(*arrays: np.ndarray) -> None:
    # Any in-place change of a caller's array by the code under test fails loudly.
    for array in arrays:
        array.setflags(write=False)


@pytest.fixture(scope="session")
def blobs() -> Dataset:
    """300 training rows in 4 features (3 blobs; the 4th feature is nearly a mix of the first two,
    so PCA at 0.99 variance drops a component), 100 new rows and 3 far-away rows."""
    X, _ = make_blobs(n_samples=400, n_features=3, centers=3, cluster_std=1.0, random_state=0)
    rng = np.random.default_rng(0)
    X = np.column_stack([X, X[:, 0] - 0.5 * X[:, 1] + 0.05 * rng.standard_normal(len(X))])
    far = np.array([[40.0, -40.0, 40.0, 0.0], [-30.0, 30.0, 0.0, 30.0], [0.0, 0.0, 60.0, -60.0]])
    train, new = X[:300].copy(), np.vstack([X[300:], far])
    _read_only(train, new)
    return Dataset(train, new)


@pytest.fixture(scope="session")
def moons() -> Dataset:
    """300 training rows of two noisy half-moons and 200 new rows spread over and around them."""
    X, _ = make_moons(n_samples=300, noise=0.1, random_state=0)
    rng = np.random.default_rng(1)
    new = rng.uniform(low=[-1.5, -1.0], high=[2.5, 1.5], size=(200, 2))
    _read_only(X, new)
    return Dataset(X, new)
