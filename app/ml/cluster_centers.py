"""The centres a centroid clusterer measures new rows against, and the distances to them.

k-means, mean-shift and affinity propagation (its exemplars) keep ``cluster_centers_``; BIRCH
assigns a row by its nearest subcluster, so its centres are ``subcluster_centers_`` (the
columns of its ``transform``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import Birch
from sklearn.metrics.pairwise import euclidean_distances


def centers_of(estimator: Any) -> NDArray[np.float64] | None:
    """The centres of a centroid clusterer, None for any other estimator."""
    if isinstance(estimator, Birch):
        subclusters: NDArray[np.float64] = estimator.subcluster_centers_
        return subclusters
    centers: NDArray[np.float64] | None = getattr(estimator, "cluster_centers_", None)
    return centers


def center_distances(estimator: Any, Xt: NDArray[np.float64]) -> NDArray[np.float64]:
    """Distance from each row to every centre: the estimator's own ``transform`` where it has
    one (k-means, BIRCH: scikit-learn's numbers, or the fast path's), else the euclidean
    distances its ``predict`` takes the nearest of (mean-shift, affinity propagation)."""
    if hasattr(estimator, "transform"):
        distances: NDArray[np.float64] = estimator.transform(Xt)
        return distances
    centers = centers_of(estimator)
    if centers is None:
        raise TypeError(f"{type(estimator).__name__} has no cluster centres")
    computed: NDArray[np.float64] = euclidean_distances(Xt, centers)
    return computed
