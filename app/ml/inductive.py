"""InductiveClusterer: a clusterer without predict, made to assign new points by the vote of
its clustered training points (a k-nearest-neighbours classifier), or noise beyond a distance.

DBSCAN, agglomerative, spectral clustering and HDBSCAN only label the rows they were fitted on.
Each subclass runs one of them and names its *anchors*: the training rows whose labels new
points may take (DBSCAN's core samples; every clustered row of the others, HDBSCAN's noise
left out). One mechanism serves all four:

- ``predict``: the label the :class:`~sklearn.neighbors.KNeighborsClassifier` on the anchors
  votes for, or ``-1`` (noise) when the nearest anchor is farther than ``max_distance_``;
- ``predict_proba``: columns ``classes_ = [-1, cluster labels...]``; a row ``predict`` calls
  noise has probability 1 of ``-1`` and 0 elsewhere, any other row the vote shares of its
  nearest anchors and 0 of ``-1``, so that the most probable class is always ``predict``'s;
- ``anchor_distance``: the distance to the nearest anchor, which is the anomaly score, so that
  a row is an anomaly at the threshold ``max_distance_`` exactly when ``predict`` calls it noise;
- ``leave_one_out_distance``: the same distance with a row that is an anchor left out of its
  own neighbours, the score of a training row as if it were new (its own distance is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

NOISE = -1

# The classifier's own hyperparameters, shared by every inductive clusterer.
INDUCTIVE_CONSTRAINTS: dict[str, list[Any]] = {
    "n_neighbors": [Interval(Integral, 1, None, closed="left")],
    "weights": [StrOptions({"uniform", "distance"})],
    "max_distance": [Interval(Real, 0.0, None, closed="left"), None],
}
INDUCTIVE_DESCRIPTIONS = {
    "n_neighbors": "How many of the nearest anchors (clustered training rows) vote for a new "
    "row's cluster; capped by the number of anchors.",
    "weights": "'uniform': one vote each; 'distance': votes weighted by 1 / distance.",
}


@dataclass(frozen=True)
class Clustering:
    """What a subclass's clusterer found: every training row's label, and the anchors (their
    rows too, when the clusterer already holds them as an array of their own)."""

    labels: NDArray[np.intp]
    anchor_indices: NDArray[np.intp]
    anchors: NDArray[np.float64] | None = None


class InductiveClusterer(ClusterMixin, BaseEstimator):  # type: ignore[misc]  # sklearn: no types
    """The shared mechanism; a subclass implements ``_cluster`` (and may override the hooks).

    Fitted attributes: ``labels_`` (the clusterer's own training labels, noise ``-1``),
    ``anchor_indices_`` and ``anchors_`` (the rows the classifier learnt), ``knn_``,
    ``classes_`` (``-1`` first, then the cluster labels: the columns of ``predict_proba``),
    ``n_neighbors_`` and ``max_distance_`` (the effective values), ``n_features_in_``.
    """

    n_neighbors: int
    weights: str
    max_distance: float | None

    # -- what a subclass says ------------------------------------------------------------------
    def _cluster(self, X: NDArray[np.float64]) -> Clustering:
        raise NotImplementedError

    def _no_anchors(self) -> str:
        """Why a fit that left every row noise cannot assign new points, and what to change."""
        return "every training row is noise: there is nothing to assign new points to"

    def distance_metric(self) -> tuple[str, float]:
        """The distance the classifier and ``max_distance`` measure: a metric name and ``p``."""
        return "euclidean", 2.0

    def _classifier_options(self) -> dict[str, Any]:
        """More of the classifier's options (its neighbour search)."""
        return {}

    def _vote_neighbors(self) -> int:
        return self.n_neighbors

    def _default_max_distance(self) -> float:
        """Without ``max_distance``: the largest distance from an anchor to its nearest other
        anchor, so that no clustered training row would be noise were it new."""
        if len(self.anchor_indices_) < 2:
            return 0.0
        distances: NDArray[np.float64]
        distances, _ = self.knn_.kneighbors(None, n_neighbors=1)  # each anchor left out
        return float(distances.max())

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: object = None) -> Self:
        """Cluster ``X``, then fit the classifier on the anchors and their labels."""
        self._validate_params()
        rows: NDArray[np.float64] = validate_data(self, X, dtype=np.float64)
        found = self._cluster(rows)
        self.labels_ = found.labels
        if len(found.anchor_indices) == 0:
            raise ValueError(self._no_anchors())
        self.anchor_indices_ = found.anchor_indices
        self.anchors_ = rows[found.anchor_indices] if found.anchors is None else found.anchors
        self.n_neighbors_ = min(self._vote_neighbors(), len(found.anchor_indices))
        metric, p = self.distance_metric()
        self.knn_ = KNeighborsClassifier(
            n_neighbors=self.n_neighbors_,
            weights=self.weights,
            metric=metric,
            p=p,
            **self._classifier_options(),
        ).fit(self.anchors_, found.labels[found.anchor_indices])
        self.classes_ = np.concatenate([[NOISE], self.knn_.classes_])
        self.max_distance_ = (
            self._default_max_distance() if self.max_distance is None else float(self.max_distance)
        )
        return self

    # -- inference -----------------------------------------------------------------------------
    def _validated(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self, "knn_")
        rows: NDArray[np.float64] = validate_data(self, X, dtype=np.float64, reset=False)
        return rows

    def anchor_distance(self, X: ArrayLike) -> NDArray[np.float64]:
        """Distance from each row to its nearest anchor."""
        X = self._validated(X)
        distances: NDArray[np.float64]
        distances, _ = self.knn_.kneighbors(X, n_neighbors=1)
        return distances[:, 0]

    def leave_one_out_distance(self, X: ArrayLike) -> NDArray[np.float64]:
        """Distance from each row to its nearest anchor other than itself: a row at distance 0
        of an anchor (the anchor itself, on the training rows) takes the next anchor's distance.
        A duplicated anchor is 0 from its copy either way."""
        X = self._validated(X)
        distances: NDArray[np.float64]
        distances, _ = self.knn_.kneighbors(X, n_neighbors=min(2, len(self.anchor_indices_)))
        if distances.shape[1] == 1:
            return distances[:, 0]
        return np.where(distances[:, 0] == 0.0, distances[:, 1], distances[:, 0])

    def _is_noise(self, X: NDArray[np.float64]) -> NDArray[np.bool_]:
        distances: NDArray[np.float64]
        distances, _ = self.knn_.kneighbors(X, n_neighbors=1)
        noise: NDArray[np.bool_] = distances[:, 0] > self.max_distance_
        return noise

    def predict(self, X: ArrayLike) -> NDArray[np.intp]:
        """Cluster label of each row, ``-1`` beyond ``max_distance_`` of every anchor."""
        X = self._validated(X)
        labels: NDArray[np.intp] = self.knn_.predict(X)
        return np.where(self._is_noise(X), NOISE, labels)

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Per row, the probability of each of ``classes_``: ``-1`` (noise) first."""
        X = self._validated(X)
        votes: NDArray[np.float64] = self.knn_.predict_proba(X)
        noise = self._is_noise(X)
        proba = np.zeros((len(X), len(self.classes_)))
        proba[:, 1:] = np.where(noise[:, np.newaxis], 0.0, votes)
        proba[:, 0] = noise
        return proba
