"""DBSCANKNN: DBSCAN, then a k-nearest-neighbours classifier on its core samples for new points."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import DBSCAN
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

# Metrics that both DBSCAN and KNeighborsClassifier accept on dense float arrays; "precomputed"
# and callables are deliberately absent, a server must not take them from a client.
DBSCAN_METRICS = frozenset(
    {"euclidean", "manhattan", "chebyshev", "minkowski", "cityblock", "l1", "l2", "cosine"}
)


class DBSCANKNN(ClusterMixin, BaseEstimator):  # type: ignore[misc]  # scikit-learn has no types
    """DBSCAN whose clusters can be assigned to new points.

    ``fit`` runs :class:`sklearn.cluster.DBSCAN`, then fits a
    :class:`sklearn.neighbors.KNeighborsClassifier` on the core samples and their cluster labels.
    ``predict`` gives a new point the label the classifier votes for, or ``-1`` (noise) when its
    nearest core sample is farther than ``max_distance`` (``eps`` when ``None``): exactly DBSCAN's
    rule for a border point. ``n_neighbors`` is capped by the number of core samples.

    Fitted attributes: ``labels_`` (DBSCAN's training labels), ``core_sample_indices_``,
    ``components_`` (the core samples), ``classes_`` (the cluster labels), ``knn_``,
    ``n_neighbors_`` and ``max_distance_`` (the effective values), ``n_features_in_``.
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - scikit-learn's own convention
        "eps": [Interval(Real, 0.0, None, closed="neither")],
        "min_samples": [Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions(set(DBSCAN_METRICS))],
        "algorithm": [StrOptions({"auto", "ball_tree", "kd_tree", "brute"})],
        "leaf_size": [Interval(Integral, 1, None, closed="left")],
        "p": [Interval(Real, 1.0, None, closed="left"), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "weights": [StrOptions({"uniform", "distance"})],
        "max_distance": [Interval(Real, 0.0, None, closed="left"), None],
    }

    def __init__(
        self,
        eps: float = 0.5,
        *,
        min_samples: int = 5,
        metric: str = "euclidean",
        algorithm: str = "auto",
        leaf_size: int = 30,
        p: float | None = None,
        n_neighbors: int = 5,
        weights: str = "uniform",
        max_distance: float | None = None,
    ) -> None:
        self.eps = eps
        self.min_samples = min_samples
        self.metric = metric
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.p = p
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.max_distance = max_distance

    def fit(self, X: ArrayLike, y: object = None) -> DBSCANKNN:
        """Run DBSCAN on ``X`` and fit the classifier on its core samples."""
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        dbscan = DBSCAN(
            eps=self.eps,
            min_samples=self.min_samples,
            metric=self.metric,
            algorithm=self.algorithm,
            leaf_size=self.leaf_size,
            p=self.p,
        ).fit(X)
        self.labels_ = dbscan.labels_
        self.core_sample_indices_ = dbscan.core_sample_indices_
        self.components_ = dbscan.components_
        if len(self.core_sample_indices_) == 0:
            raise ValueError(
                f"DBSCAN found no core samples (eps={self.eps}, min_samples={self.min_samples}): "
                "every point is noise, so there is nothing to assign new points to; "
                "raise eps or lower min_samples"
            )
        core_labels = self.labels_[self.core_sample_indices_]
        self.n_neighbors_ = min(self.n_neighbors, len(self.core_sample_indices_))
        self.max_distance_ = float(self.eps if self.max_distance is None else self.max_distance)
        self.knn_ = KNeighborsClassifier(
            n_neighbors=self.n_neighbors_,
            weights=self.weights,
            algorithm=self.algorithm,
            leaf_size=self.leaf_size,
            metric=self.metric,
            p=2 if self.p is None else self.p,
        ).fit(self.components_, core_labels)
        self.classes_ = self.knn_.classes_
        return self

    def _validated(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self, "knn_")
        rows: NDArray[np.float64] = validate_data(self, X, dtype=np.float64, reset=False)
        return rows

    def core_distance(self, X: ArrayLike) -> NDArray[np.float64]:
        """Distance from each row to its nearest core sample."""
        X = self._validated(X)
        distances: NDArray[np.float64]
        distances, _ = self.knn_.kneighbors(X, n_neighbors=1)
        return distances[:, 0]

    def predict(self, X: ArrayLike) -> NDArray[np.intp]:
        """Cluster label of each row, ``-1`` beyond ``max_distance`` of every core sample."""
        X = self._validated(X)
        labels: NDArray[np.intp] = self.knn_.predict(X)
        distances: NDArray[np.float64]
        distances, _ = self.knn_.kneighbors(X, n_neighbors=1)
        return np.where(distances[:, 0] > self.max_distance_, -1, labels)

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """The classifier's vote shares over ``classes_`` among the nearest core samples."""
        X = self._validated(X)  # first: it raises NotFittedError before knn_ is read
        proba: NDArray[np.float64] = self.knn_.predict_proba(X)
        return proba
