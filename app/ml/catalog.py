"""The algorithm catalog: what Lloyd can train, what each supports, and its hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from sklearn.base import BaseEstimator
from sklearn.cluster import AffinityPropagation, Birch, KMeans, MeanShift, MiniBatchKMeans
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.svm import OneClassSVM

from app.ml.dbscan_knn import DBSCANKNN
from app.ml.exceptions import HyperparameterError, TrainingRowsError
from app.ml.inductive import INDUCTIVE_DESCRIPTIONS
from app.ml.inductive_clusterers import HDBSCANKNN, AgglomerativeKNN, SpectralKNN
from app.ml.params_schema import REFUSED_OPTIONS, params_schema
from app.ml.pca_reconstruction import PCAReconstruction

Family = Literal["clustering", "mixture", "anomaly"]


class Operation(StrEnum):
    """Every operation the service knows, in the order the API documents them; an algorithm's
    ``operations`` (and a version's) are some of these."""

    PREDICT = "predict"
    PREDICT_PROBA = "predict_proba"
    TRANSFORM = "transform"
    SCORE_SAMPLES = "score_samples"
    SCORE = "score"
    ANOMALIES = "anomalies"
    SAMPLE = "sample"
    BIC = "bic"
    AIC = "aic"


OPERATIONS = tuple(operation.value for operation in Operation)

# Hyperparameters that would harm a shared server (its threads, its logs) or that only make sense
# across repeated fits in one process; refused for every algorithm.
SERVER_REFUSED = frozenset(
    {"n_jobs", "verbose", "verbose_interval", "warm_start", "copy_x", "memory", "metric_params"}
)


@dataclass(frozen=True)
class Algorithm:
    """One entry of the catalog."""

    name: str
    family: Family
    estimator_class: type[BaseEstimator]
    wraps: str
    operations: tuple[str, ...]
    summary: str
    refused: frozenset[str] = field(default=SERVER_REFUSED)
    # Hyperparameters the service sets itself, whatever the client sends (LOF's novelty mode).
    fixed: dict[str, Any] = field(default_factory=dict)
    # Why a refused hyperparameter is refused, where there is more to say than "server-set".
    refusal_hints: dict[str, str] = field(default_factory=dict)
    # The hyperparameter that sets the number of clusters, checked against the number of rows.
    n_clusters_param: str | None = None
    # The most rows one training takes, for the algorithms whose memory grows with the square
    # of the rows, and why (the error and the catalog say it).
    max_training_rows: int | None = None
    row_limit_reason: str = ""
    # Hyperparameters that suit EXAMPLE_ROWS: the catalog's runnable training example.
    example_params: dict[str, Any] = field(default_factory=dict)
    # What a hyperparameter means, where scikit-learn's name does not say it (Lloyd's own).
    descriptions: dict[str, str] = field(default_factory=dict)

    @cached_property
    def params_schema(self) -> dict[str, Any]:
        return params_schema(
            self.estimator_class,
            refused=self.refused | set(self.fixed),
            descriptions=self.descriptions,
        )

    def supports(self, operation: str) -> bool:
        return operation in self.operations

    def check_training_rows(self, n_rows: int) -> None:
        """Refuse, before anything is allocated, more rows than the algorithm can take."""
        limit = self.max_training_rows
        if limit is not None and n_rows > limit:
            raise TrainingRowsError(
                f"{self.name} trains on at most {limit:,} rows ({self.row_limit_reason}); "
                f"{n_rows:,} were posted: train on a sample of them, or use an algorithm "
                "without this limit (birch, minibatch_kmeans, hdbscan)",
                n_rows=n_rows,
                limit=limit,
            )

    def build(self, params: dict[str, Any]) -> BaseEstimator:
        """An unfitted estimator with ``params``, validated by scikit-learn's own constraints."""
        allowed = (
            set(self.estimator_class().get_params(deep=False)) - self.refused - set(self.fixed)
        )
        constraints = getattr(self.estimator_class, "_parameter_constraints", {})
        for name, value in params.items():
            if name in self.refused or name in self.fixed:
                hint = self.refusal_hints.get(name, "it is set by the server")
                raise HyperparameterError(name, f"'{name}' is not accepted by this service: {hint}")
            if name not in allowed:
                raise HyperparameterError(
                    name,
                    f"unknown hyperparameter '{name}' for {self.name}; "
                    f"accepted: {', '.join(sorted(allowed))}",
                )
            if isinstance(value, str) and value in REFUSED_OPTIONS:
                raise HyperparameterError(
                    name, f"'{value}' is not accepted for '{name}' by this service"
                )
            # bool subclasses int, so scikit-learn's Interval(Integral, ...) lets `true` through
            # to the fit (n_clusters=True is one cluster; n_components=True a TypeError).
            if isinstance(value, bool) and "boolean" not in constraints.get(name, []):
                raise HyperparameterError(
                    name, f"'{name}' does not take a boolean; see the algorithm's params_schema"
                )
        estimator = self.estimator_class(**params, **self.fixed)
        try:
            estimator._validate_params()
        except ValueError as exc:  # InvalidParameterError subclasses ValueError
            bad = next((n for n in params if f"'{n}' parameter" in str(exc)), "params")
            raise HyperparameterError(bad, str(exc)) from exc
        return estimator


_CLUSTERING = ("predict", "transform", "score", "anomalies")
_INDUCTIVE = ("predict", "predict_proba", "anomalies")
# Two tight groups of six rows: what every algorithm's catalog example trains on.
EXAMPLE_ROWS: list[list[float]] = [
    [0.1, 2.3], [0.2, 2.1], [0.15, 2.2], [0.12, 2.25], [0.18, 2.32], [0.09, 2.18],
    [5.1, 0.3], [5.0, 0.4], [5.2, 0.35], [5.05, 0.32], [4.95, 0.28], [5.12, 0.41],
]  # fmt: skip
_MAX_DISTANCE = {
    "max_distance": "Farther than this from every clustered training row, a new row is noise "
    "(-1), and an anomaly at the stored threshold. Default: the largest distance from a "
    "clustered training row to its nearest other one, so that none of them would be noise "
    "were it new.",
}
_SQUARE_MEMORY = "its memory grows with the square of the rows"
_NO_CALLABLES = "callables, precomputed matrices and per-row matrices are not accepted"
_DETECTOR = ("score_samples", "anomalies")
# The detectors' own contamination only moves scikit-learn's offset_, which Lloyd does not use:
# the threshold is the service's, set by anomaly.contamination.
_DETECTOR_REFUSED = SERVER_REFUSED | {"contamination"}
_CONTAMINATION_HINT = {
    "contamination": "set the threshold with the request's anomaly.contamination instead",
}

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            name="kmeans",
            family="clustering",
            estimator_class=KMeans,
            wraps="sklearn.cluster.KMeans",
            operations=_CLUSTERING,
            summary="Lloyd's k-means: k centroids, each point to its nearest.",
            n_clusters_param="n_clusters",
            example_params={"n_clusters": 2, "n_init": 10, "random_state": 0},
        ),
        Algorithm(
            name="minibatch_kmeans",
            family="clustering",
            estimator_class=MiniBatchKMeans,
            wraps="sklearn.cluster.MiniBatchKMeans",
            operations=_CLUSTERING,
            summary="k-means on mini-batches: faster on large data, slightly higher inertia.",
            n_clusters_param="n_clusters",
            example_params={"n_clusters": 2, "random_state": 0},
        ),
        Algorithm(
            name="dbscan",
            family="clustering",
            estimator_class=DBSCANKNN,
            wraps="sklearn.cluster.DBSCAN + sklearn.neighbors.KNeighborsClassifier",
            operations=("predict", "predict_proba", "anomalies"),
            summary=(
                "Density-based clusters of any shape; new points take the vote of the nearest "
                "core samples, or -1 (noise) beyond max_distance (default eps)."
            ),
            example_params={"eps": 0.3, "min_samples": 3},
            descriptions={
                **INDUCTIVE_DESCRIPTIONS,
                "n_neighbors": "How many of the nearest core samples vote for a new row's "
                "cluster; capped by the number of core samples.",
                "max_distance": "Farther than this from every core sample, a new row is noise "
                "(-1), and an anomaly at the stored threshold. Default: eps (DBSCAN's own rule "
                "for a border point).",
            },
        ),
        Algorithm(
            name="birch",
            family="clustering",
            estimator_class=Birch,
            wraps="sklearn.cluster.Birch",
            operations=("predict", "transform", "anomalies"),
            summary="BIRCH: one pass builds a tree of subclusters no wider than threshold, then "
            "n_clusters groups of them; scales to large data. transform: the distance to every "
            "subcluster centre.",
            fixed={"compute_labels": True},
            refusal_hints={"compute_labels": "Lloyd keeps every clusterer's training labels"},
            n_clusters_param="n_clusters",
            example_params={"threshold": 0.3, "n_clusters": 2},
        ),
        Algorithm(
            name="mean_shift",
            family="clustering",
            estimator_class=MeanShift,
            wraps="sklearn.cluster.MeanShift",
            operations=("predict", "anomalies"),
            summary="Mean-shift: every seed climbs to a density peak within bandwidth; each peak "
            "is a cluster. Its time grows with the square of the rows (bin_seeding=true cuts it).",
            example_params={"bandwidth": 1.0},
        ),
        Algorithm(
            name="affinity_propagation",
            family="clustering",
            estimator_class=AffinityPropagation,
            wraps="sklearn.cluster.AffinityPropagation",
            operations=("predict", "anomalies"),
            summary="Affinity propagation: rows pass messages until some are chosen exemplars; "
            "the number of clusters follows from preference. A fit that does not converge is "
            "a training error.",
            refused=SERVER_REFUSED | {"copy"},
            refusal_hints={"copy": "it only matters for a precomputed affinity"},
            max_training_rows=3_000,
            row_limit_reason=f"{_SQUARE_MEMORY}: 3,000 rows hold about 300 MB",
            example_params={"random_state": 0},
        ),
        Algorithm(
            name="agglomerative",
            family="clustering",
            estimator_class=AgglomerativeKNN,
            wraps=(
                "sklearn.cluster.AgglomerativeClustering + sklearn.neighbors.KNeighborsClassifier"
            ),
            operations=_INDUCTIVE,
            summary="Hierarchical clustering, merging the closest clusters bottom up (ward, "
            "complete, average or single linkage); new rows take the vote of the nearest "
            "training rows, or -1 (noise) beyond max_distance.",
            refused=SERVER_REFUSED | {"connectivity"},
            refusal_hints={"connectivity": _NO_CALLABLES},
            n_clusters_param="n_clusters",
            max_training_rows=6_000,
            row_limit_reason=f"{_SQUARE_MEMORY} (pairwise distances): 6,000 rows hold about 300 MB",
            example_params={"n_clusters": 2},
            descriptions={**INDUCTIVE_DESCRIPTIONS, **_MAX_DISTANCE},
        ),
        Algorithm(
            name="spectral",
            family="clustering",
            estimator_class=SpectralKNN,
            wraps="sklearn.cluster.SpectralClustering + sklearn.neighbors.KNeighborsClassifier",
            operations=_INDUCTIVE,
            summary="Spectral clustering: k-means on an embedding of the rows' affinity graph, "
            "for clusters of any shape; new rows take the vote of the nearest training rows, or "
            "-1 (noise) beyond max_distance.",
            refused=SERVER_REFUSED | {"kernel_params"},
            refusal_hints={"kernel_params": f"{_NO_CALLABLES}; use gamma, degree and coef0"},
            n_clusters_param="n_clusters",
            max_training_rows=3_000,
            row_limit_reason=f"{_SQUARE_MEMORY} (a dense rows x rows affinity matrix): 3,000 "
            "rows hold about 300 MB",
            example_params={"n_clusters": 2, "random_state": 0},
            descriptions={
                **INDUCTIVE_DESCRIPTIONS,
                **_MAX_DISTANCE,
                "knn_neighbors": INDUCTIVE_DESCRIPTIONS["n_neighbors"],
                "n_neighbors": "scikit-learn's: the neighbours of the affinity graph of "
                "affinity='nearest_neighbors' (knn_neighbors is the vote's).",
            },
        ),
        Algorithm(
            name="hdbscan",
            family="clustering",
            estimator_class=HDBSCANKNN,
            wraps="sklearn.cluster.HDBSCAN + sklearn.neighbors.KNeighborsClassifier",
            operations=_INDUCTIVE,
            summary="Hierarchical DBSCAN: density-based clusters at every scale, the most stable "
            "kept; no eps to choose. Training noise stays noise; new rows take the vote of the "
            "nearest clustered rows, or -1 (noise) beyond max_distance.",
            refused=SERVER_REFUSED | {"copy", "store_centers"},
            refusal_hints={
                "copy": "it only matters for precomputed distances",
                "store_centers": "the service keeps labels and probabilities, not centres",
            },
            example_params={"min_cluster_size": 3},
            descriptions={**INDUCTIVE_DESCRIPTIONS, **_MAX_DISTANCE},
        ),
        Algorithm(
            name="gaussian_mixture",
            family="mixture",
            estimator_class=GaussianMixture,
            wraps="sklearn.mixture.GaussianMixture",
            operations=(
                "predict",
                "predict_proba",
                "score_samples",
                "score",
                "sample",
                "bic",
                "aic",
                "anomalies",
            ),
            summary="Gaussian mixture fitted by EM: soft clusters, densities, sampling, BIC/AIC.",
            n_clusters_param="n_components",
            example_params={"n_components": 2, "random_state": 0},
        ),
        Algorithm(
            name="bayesian_gaussian_mixture",
            family="mixture",
            estimator_class=BayesianGaussianMixture,
            wraps="sklearn.mixture.BayesianGaussianMixture",
            operations=(
                "predict",
                "predict_proba",
                "score_samples",
                "score",
                "sample",
                "anomalies",
            ),
            summary=(
                "Variational Bayesian Gaussian mixture: gives near-zero weight to the "
                "components the data does not need."
            ),
            n_clusters_param="n_components",
            example_params={"n_components": 2, "random_state": 0},
        ),
        Algorithm(
            name="isolation_forest",
            family="anomaly",
            estimator_class=IsolationForest,
            wraps="sklearn.ensemble.IsolationForest",
            operations=_DETECTOR,
            summary="Random trees isolate rows; rows isolated in few splits are unusual.",
            refused=_DETECTOR_REFUSED,
            refusal_hints=_CONTAMINATION_HINT,
            example_params={"n_estimators": 50, "random_state": 0},
        ),
        Algorithm(
            name="local_outlier_factor",
            family="anomaly",
            estimator_class=LocalOutlierFactor,
            wraps="sklearn.neighbors.LocalOutlierFactor (novelty=True)",
            operations=_DETECTOR,
            summary="Local density against the neighbours' density; always in novelty mode, "
            "since the service scores new rows.",
            refused=_DETECTOR_REFUSED,
            fixed={"novelty": True},
            refusal_hints={
                **_CONTAMINATION_HINT,
                "novelty": "the service always fits LocalOutlierFactor in novelty mode",
            },
            example_params={"n_neighbors": 5},
        ),
        Algorithm(
            name="elliptic_envelope",
            family="anomaly",
            estimator_class=EllipticEnvelope,
            wraps="sklearn.covariance.EllipticEnvelope",
            operations=_DETECTOR,
            summary="A robust Gaussian fit (minimum covariance determinant); the score is the "
            "Mahalanobis distance.",
            refused=_DETECTOR_REFUSED,
            refusal_hints=_CONTAMINATION_HINT,
            example_params={"random_state": 0},
        ),
        Algorithm(
            name="one_class_svm",
            family="anomaly",
            estimator_class=OneClassSVM,
            wraps="sklearn.svm.OneClassSVM",
            operations=_DETECTOR,
            summary="A kernel boundary around the normal rows.",
            # cache_size is megabytes of kernel cache per fit: the server's memory, not a model's.
            refused=_DETECTOR_REFUSED | {"cache_size"},
            refusal_hints=_CONTAMINATION_HINT,
            example_params={"nu": 0.1},
        ),
        Algorithm(
            name="pca_reconstruction",
            family="anomaly",
            estimator_class=PCAReconstruction,
            wraps="sklearn.decomposition.PCA (reconstruction error)",
            operations=_DETECTOR,
            summary="A PCA of the normal rows; the anomaly score is the squared error of "
            "rebuilding a row from the kept components.",
            refused=_DETECTOR_REFUSED,
            refusal_hints=_CONTAMINATION_HINT,
            example_params={"n_components": 1},
        ),
    )
}


def get_algorithm(name: str) -> Algorithm | None:
    return ALGORITHMS.get(name)
