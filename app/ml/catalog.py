"""The algorithm catalog: what Lloyd can train, what each supports, and its hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.svm import OneClassSVM

from app.ml.dbscan_knn import DBSCANKNN
from app.ml.exceptions import HyperparameterError
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

    @cached_property
    def params_schema(self) -> dict[str, Any]:
        return params_schema(self.estimator_class, refused=self.refused | set(self.fixed))

    def supports(self, operation: str) -> bool:
        return operation in self.operations

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
        ),
        Algorithm(
            name="minibatch_kmeans",
            family="clustering",
            estimator_class=MiniBatchKMeans,
            wraps="sklearn.cluster.MiniBatchKMeans",
            operations=_CLUSTERING,
            summary="k-means on mini-batches: faster on large data, slightly higher inertia.",
            n_clusters_param="n_clusters",
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
        ),
    )
}


def get_algorithm(name: str) -> Algorithm | None:
    return ALGORITHMS.get(name)
