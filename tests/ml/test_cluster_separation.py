"""separation_metrics against scikit-learn's silhouette_score, davies_bouldin_score and
calinski_harabasz_score called directly on the same rows and labels: equal, not close."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from app.ml.cluster_separation import SILHOUETTE_SAMPLE_SIZE, separation_metrics


def sklearn_metrics(X: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    sampled = len(labels) > SILHOUETTE_SAMPLE_SIZE
    return {
        "silhouette": silhouette_score(
            X,
            labels,
            sample_size=SILHOUETTE_SAMPLE_SIZE if sampled else None,
            random_state=0 if sampled else None,
        ),
        "davies_bouldin": davies_bouldin_score(X, labels),
        "calinski_harabasz": calinski_harabasz_score(X, labels),
    }


def assert_equal_to_sklearn(X: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    ours = separation_metrics(X, labels)
    expected = sklearn_metrics(X, labels)
    assert {k: ours[k] for k in expected} == expected  # exact equality, float for float
    assert ("silhouette_sample_size" in ours) == (len(labels) > SILHOUETTE_SAMPLE_SIZE)
    return ours


def _cases() -> list[tuple[int, int, int, float]]:
    # (rows, features, clusters, scale)
    return [
        (50, 2, 2, 1.0),
        (300, 4, 3, 1.0),
        (1_999, 3, 5, 1e-3),
        (2_001, 16, 8, 1.0),
        (5_000, 5, 4, 1e6),
        (20_000, 16, 8, 1.0),
    ]


@pytest.mark.parametrize(("n", "d", "k", "scale"), _cases())
def test_kmeans_labels_give_scikit_learns_values(n, d, k, scale):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=n)
    X = X * scale
    labels = KMeans(n_clusters=k, n_init=1, random_state=0).fit(X).labels_
    metrics = assert_equal_to_sklearn(X, labels)
    if n > SILHOUETTE_SAMPLE_SIZE:
        assert metrics["silhouette_sample_size"] == SILHOUETTE_SAMPLE_SIZE


@pytest.mark.parametrize(
    "relabel",
    [
        lambda labels: labels + 3,  # numbers that do not start at 0
        lambda labels: np.where(labels == 0, 9, labels),  # a gap
        lambda labels: labels.astype(np.int64) * -1,  # negative numbers
        lambda labels: labels.astype(np.uint8),
        lambda labels: labels.astype(np.float64),
    ],
    ids=["offset", "gap", "negative", "uint8", "float"],
)
def test_any_numbering_of_the_clusters_gives_scikit_learns_values(relabel):
    X, labels = make_blobs(n_samples=3_000, n_features=4, centers=4, random_state=1)
    assert_equal_to_sklearn(X, relabel(labels))


@pytest.mark.parametrize(
    "layout",
    [np.asfortranarray, lambda X: X.astype(np.float32), lambda X: X[:, ::2]],
    ids=["fortran", "float32", "strided"],
)
def test_other_layouts_and_dtypes_give_scikit_learns_values(layout):
    X, labels = make_blobs(n_samples=2_500, n_features=6, centers=3, random_state=2)
    assert_equal_to_sklearn(layout(X), labels)


def test_degenerate_clusterings_give_scikit_learns_special_values():
    # Every cluster a single repeated point: no spread within clusters (CH is 1.0, DB 0.0).
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 1.0]]), 10, axis=0)
    labels = np.repeat(np.arange(3), 10)
    assert_equal_to_sklearn(X, labels)


@pytest.mark.parametrize("labels", [np.zeros(10, dtype=int), np.arange(10)], ids=["1", "n"])
def test_one_cluster_or_one_per_row_has_no_separation_metrics(labels):
    X = np.random.default_rng(0).normal(size=(10, 2))
    assert separation_metrics(X, labels) == {
        "silhouette": None,
        "davies_bouldin": None,
        "calinski_harabasz": None,
    }


def test_non_finite_rows_are_refused_as_scikit_learn_refuses_them():
    X, labels = make_blobs(n_samples=100, n_features=2, centers=2, random_state=0)
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        separation_metrics(X, labels)
