"""DBSCANKNN: DBSCAN, then a k-nearest-neighbours classifier on its core samples for new points."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.cluster import DBSCAN
from sklearn.utils._param_validation import Interval, StrOptions

from app.ml.inductive import INDUCTIVE_CONSTRAINTS, NOISE, Clustering, InductiveClusterer

# Metrics that both DBSCAN and KNeighborsClassifier accept on dense float arrays; "precomputed"
# and callables are deliberately absent, a server must not take them from a client.
DBSCAN_METRICS = frozenset(
    {"euclidean", "manhattan", "chebyshev", "minkowski", "cityblock", "l1", "l2", "cosine"}
)


class DBSCANKNN(InductiveClusterer):
    """DBSCAN whose clusters can be assigned to new points (see :mod:`app.ml.inductive`).

    ``fit`` runs :class:`sklearn.cluster.DBSCAN`; the anchors are its core samples. A new point
    takes the label the classifier votes for, or ``-1`` (noise) when its nearest core sample is
    farther than ``max_distance`` (``eps`` when ``None``): exactly DBSCAN's rule for a border
    point. ``n_neighbors`` is capped by the number of core samples.

    Fitted attributes, besides the inductive ones: ``core_sample_indices_`` and ``components_``
    (the core samples, DBSCAN's own; ``anchors_`` is the same array).
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - scikit-learn's own convention
        "eps": [Interval(Real, 0.0, None, closed="neither")],
        "min_samples": [Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions(set(DBSCAN_METRICS))],
        "algorithm": [StrOptions({"auto", "ball_tree", "kd_tree", "brute"})],
        "leaf_size": [Interval(Integral, 1, None, closed="left")],
        "p": [Interval(Real, 1.0, None, closed="left"), None],
        **INDUCTIVE_CONSTRAINTS,
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

    def _cluster(self, X: NDArray[np.float64]) -> Clustering:
        dbscan = DBSCAN(
            eps=self.eps,
            min_samples=self.min_samples,
            metric=self.metric,
            algorithm=self.algorithm,
            leaf_size=self.leaf_size,
            p=self.p,
        ).fit(X)
        self.core_sample_indices_ = dbscan.core_sample_indices_
        self.components_ = dbscan.components_
        # The classifier learns components_ itself: one array, stored once in an artifact.
        return Clustering(dbscan.labels_, dbscan.core_sample_indices_, dbscan.components_)

    def _no_anchors(self) -> str:
        return (
            f"DBSCAN found no core samples (eps={self.eps}, min_samples={self.min_samples}): "
            "every point is noise, so there is nothing to assign new points to; "
            "raise eps or lower min_samples"
        )

    def distance_metric(self) -> tuple[str, float]:
        return self.metric, 2.0 if self.p is None else float(self.p)

    def _classifier_options(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "leaf_size": self.leaf_size}

    def _default_max_distance(self) -> float:
        return float(self.eps)

    def core_distance(self, X: ArrayLike) -> NDArray[np.float64]:
        """Distance from each row to its nearest core sample (its anchor distance)."""
        return self.anchor_distance(X)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Artifacts written before the inductive clusterers shared one mechanism hold DBSCAN's
        core samples only as ``core_sample_indices_`` and ``components_``, and ``classes_``
        without the noise class: the same model, in the names the mechanism reads now."""
        if "knn_" in state and "anchor_indices_" not in state:
            state = dict(state)
            state["anchor_indices_"] = state["core_sample_indices_"]
            state["anchors_"] = state["components_"]
            classes = np.asarray(state["classes_"])
            if len(classes) == 0 or classes[0] != NOISE:
                state["classes_"] = np.concatenate([[NOISE], classes])
        super().__setstate__(state)
