"""AgglomerativeKNN, SpectralKNN and HDBSCANKNN: scikit-learn's clusterers without predict, made
inductive by app.ml.inductive (their clustered training rows vote for a new point's cluster)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, SpectralClustering
from sklearn.utils._param_validation import Interval, StrOptions

from app.ml.inductive import INDUCTIVE_CONSTRAINTS, NOISE, Clustering, InductiveClusterer

# Metrics both the clusterer and KNeighborsClassifier take on dense float arrays. No callables,
# no "precomputed": a server must not take them from a client.
AGGLOMERATIVE_METRICS = frozenset(
    {"euclidean", "l1", "l2", "manhattan", "cityblock", "cosine", "chebyshev"}
)
# HDBSCAN's tree metrics only: any other makes it compute every pairwise distance (its "brute"
# algorithm, O(n^2) memory). minkowski is left out: its p would come in metric_params.
HDBSCAN_METRICS = frozenset({"euclidean", "l1", "l2", "manhattan", "cityblock", "chebyshev"})
# Kernels SpectralClustering computes itself; the precomputed affinities are a client's matrix.
SPECTRAL_AFFINITIES = frozenset(
    {
        "nearest_neighbors",
        "rbf",
        "additive_chi2",
        "chi2",
        "linear",
        "poly",
        "polynomial",
        "laplacian",
        "sigmoid",
        "cosine",
    }
)


def _clustered(labels: NDArray[np.intp]) -> NDArray[np.intp]:
    anchors: NDArray[np.intp] = np.flatnonzero(labels != NOISE)
    return anchors


class AgglomerativeKNN(InductiveClusterer):
    """:class:`sklearn.cluster.AgglomerativeClustering`; every training row is an anchor. The
    classifier measures ``metric``; without ``max_distance``, a new point is noise when it is
    farther from every training row than the loneliest training row is from its nearest."""

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - scikit-learn's own convention
        "n_clusters": [Interval(Integral, 1, None, closed="left"), None],
        "metric": [StrOptions(set(AGGLOMERATIVE_METRICS))],
        "compute_full_tree": [StrOptions({"auto"}), "boolean"],
        "linkage": [StrOptions({"ward", "complete", "average", "single"})],
        "distance_threshold": [Interval(Real, 0, None, closed="left"), None],
        "compute_distances": ["boolean"],
        **INDUCTIVE_CONSTRAINTS,
    }

    def __init__(
        self,
        n_clusters: int | None = 2,
        *,
        metric: str = "euclidean",
        compute_full_tree: str | bool = "auto",
        linkage: str = "ward",
        distance_threshold: float | None = None,
        compute_distances: bool = False,
        n_neighbors: int = 5,
        weights: str = "uniform",
        max_distance: float | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.metric = metric
        self.compute_full_tree = compute_full_tree
        self.linkage = linkage
        self.distance_threshold = distance_threshold
        self.compute_distances = compute_distances
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.max_distance = max_distance

    def _cluster(self, X: NDArray[np.float64]) -> Clustering:
        clusterer = AgglomerativeClustering(
            n_clusters=self.n_clusters,
            metric=self.metric,
            compute_full_tree=self.compute_full_tree,
            linkage=self.linkage,
            distance_threshold=self.distance_threshold,
            compute_distances=self.compute_distances,
        ).fit(X)
        self.n_clusters_ = int(clusterer.n_clusters_)
        self.n_leaves_ = int(clusterer.n_leaves_)
        self.n_connected_components_ = int(clusterer.n_connected_components_)
        self.children_ = clusterer.children_
        if self.compute_distances or self.distance_threshold is not None:
            self.distances_ = clusterer.distances_
        return Clustering(clusterer.labels_, np.arange(len(X)))

    def distance_metric(self) -> tuple[str, float]:
        return self.metric, 2.0


class SpectralKNN(InductiveClusterer):
    """:class:`sklearn.cluster.SpectralClustering`; every training row is an anchor, measured
    by the euclidean distance. ``n_neighbors`` is scikit-learn's (the affinity graph of
    ``affinity="nearest_neighbors"``); the classifier's neighbours are ``knn_neighbors``."""

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - scikit-learn's own convention
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "eigen_solver": [StrOptions({"arpack", "lobpcg", "amg"}), None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "affinity": [StrOptions(set(SPECTRAL_AFFINITIES))],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "eigen_tol": [Interval(Real, 0.0, None, closed="left"), StrOptions({"auto"})],
        "assign_labels": [StrOptions({"kmeans", "discretize", "cluster_qr"})],
        "degree": [Interval(Real, 0, None, closed="left")],
        "coef0": [Interval(Real, None, None, closed="neither")],
        "knn_neighbors": INDUCTIVE_CONSTRAINTS["n_neighbors"],
        "weights": INDUCTIVE_CONSTRAINTS["weights"],
        "max_distance": INDUCTIVE_CONSTRAINTS["max_distance"],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        eigen_solver: str | None = None,
        n_components: int | None = None,
        random_state: int | None = None,
        n_init: int = 10,
        gamma: float = 1.0,
        affinity: str = "rbf",
        n_neighbors: int = 10,
        eigen_tol: float | str = "auto",
        assign_labels: str = "kmeans",
        degree: float = 3,
        coef0: float = 1,
        knn_neighbors: int = 5,
        weights: str = "uniform",
        max_distance: float | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.eigen_solver = eigen_solver
        self.n_components = n_components
        self.random_state = random_state
        self.n_init = n_init
        self.gamma = gamma
        self.affinity = affinity
        self.n_neighbors = n_neighbors
        self.eigen_tol = eigen_tol
        self.assign_labels = assign_labels
        self.degree = degree
        self.coef0 = coef0
        self.knn_neighbors = knn_neighbors
        self.weights = weights
        self.max_distance = max_distance

    def _cluster(self, X: NDArray[np.float64]) -> Clustering:
        clusterer = SpectralClustering(
            n_clusters=self.n_clusters,
            eigen_solver=self.eigen_solver,
            n_components=self.n_components,
            random_state=self.random_state,
            n_init=self.n_init,
            gamma=self.gamma,
            affinity=self.affinity,
            n_neighbors=self.n_neighbors,
            eigen_tol=self.eigen_tol,
            assign_labels=self.assign_labels,
            degree=self.degree,
            coef0=self.coef0,
        ).fit(X)
        # Not its affinity_matrix_ (rows x rows): a model must not grow with the square.
        return Clustering(clusterer.labels_, np.arange(len(X)))

    def _vote_neighbors(self) -> int:
        return self.knn_neighbors


class HDBSCANKNN(InductiveClusterer):
    """:class:`sklearn.cluster.HDBSCAN`; the anchors are its clustered rows (its training noise
    stays noise, and is never a vote). ``probabilities_`` are HDBSCAN's own: how strongly each
    training row belongs to its cluster (0 for noise)."""

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - scikit-learn's own convention
        "min_cluster_size": [Interval(Integral, 2, None, closed="left")],
        "min_samples": [Interval(Integral, 1, None, closed="left"), None],
        "cluster_selection_epsilon": [Interval(Real, 0, None, closed="left")],
        "max_cluster_size": [None, Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions(set(HDBSCAN_METRICS))],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "algorithm": [StrOptions({"auto", "kd_tree", "ball_tree"})],
        "leaf_size": [Interval(Integral, 1, None, closed="left")],
        "cluster_selection_method": [StrOptions({"eom", "leaf"})],
        "allow_single_cluster": ["boolean"],
        **INDUCTIVE_CONSTRAINTS,
    }

    def __init__(
        self,
        min_cluster_size: int = 5,
        *,
        min_samples: int | None = None,
        cluster_selection_epsilon: float = 0.0,
        max_cluster_size: int | None = None,
        metric: str = "euclidean",
        alpha: float = 1.0,
        algorithm: str = "auto",
        leaf_size: int = 40,
        cluster_selection_method: str = "eom",
        allow_single_cluster: bool = False,
        n_neighbors: int = 5,
        weights: str = "uniform",
        max_distance: float | None = None,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.max_cluster_size = max_cluster_size
        self.metric = metric
        self.alpha = alpha
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.cluster_selection_method = cluster_selection_method
        self.allow_single_cluster = allow_single_cluster
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.max_distance = max_distance

    def hdbscan(self) -> HDBSCAN:
        """The scikit-learn HDBSCAN this one runs (unfitted)."""
        return HDBSCAN(
            min_cluster_size=self.min_cluster_size,
            min_samples=self.min_samples,
            cluster_selection_epsilon=self.cluster_selection_epsilon,
            max_cluster_size=self.max_cluster_size,
            metric=self.metric,
            alpha=self.alpha,
            algorithm=self.algorithm,
            leaf_size=self.leaf_size,
            cluster_selection_method=self.cluster_selection_method,
            allow_single_cluster=self.allow_single_cluster,
            # Only the brute algorithm (never chosen here) would copy; set, it does not warn.
            copy=True,
        )

    def _cluster(self, X: NDArray[np.float64]) -> Clustering:
        clusterer = self.hdbscan().fit(X)
        self.probabilities_ = clusterer.probabilities_
        return Clustering(clusterer.labels_, _clustered(clusterer.labels_))

    def _no_anchors(self) -> str:
        return (
            f"HDBSCAN found no cluster (min_cluster_size={self.min_cluster_size}): every row "
            "is noise, so there is nothing to assign new points to; lower min_cluster_size or "
            "min_samples, or set allow_single_cluster"
        )

    def distance_metric(self) -> tuple[str, float]:
        return self.metric, 2.0
