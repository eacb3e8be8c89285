"""fit_model and FittedModel against the same training done with scikit-learn directly."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator
from sklearn.cluster import (
    DBSCAN,
    HDBSCAN,
    AffinityPropagation,
    AgglomerativeClustering,
    Birch,
    KMeans,
    MeanShift,
    MiniBatchKMeans,
    SpectralClustering,
)
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from app.ml.anomaly import AnomalyThreshold
from app.ml.catalog import ALGORITHMS
from app.ml.exceptions import FitError, HyperparameterError, InferenceInputError
from app.ml.fitting import FitResult, fit_model

CONTAMINATION = 0.05

# The preprocessing a client posts, and the same steps built by hand with scikit-learn.
PREPROCESSING: dict[str, tuple[list[dict[str, Any]], Callable[[], list[BaseEstimator]]]] = {
    "none": ([], list),
    "scaler_pca099_whiten": (
        [{"step": "standard_scaler"}, {"step": "pca", "n_components": 0.99, "whiten": True}],
        lambda: [StandardScaler(), PCA(n_components=0.99, whiten=True)],
    ),
    "scaler_pca2": (
        [{"step": "standard_scaler"}, {"step": "pca", "n_components": 2}],
        lambda: [StandardScaler(), PCA(n_components=2)],
    ),
}

# DBSCAN's eps depends on the scale of the space it runs in.
DBSCAN_EPS = {"none": 1.2, "scaler_pca099_whiten": 0.6, "scaler_pca2": 0.25}


def params_for(algorithm: str, preprocessing: str) -> dict[str, Any]:
    return {
        "kmeans": {"n_clusters": 3, "random_state": 0},
        "minibatch_kmeans": {"n_clusters": 3, "batch_size": 64, "random_state": 0},
        "dbscan": {"eps": DBSCAN_EPS[preprocessing], "min_samples": 5},
        "gaussian_mixture": {"n_components": 3, "random_state": 0},
        "bayesian_gaussian_mixture": {"n_components": 5, "max_iter": 500, "random_state": 0},
        "birch": {"n_clusters": 3},
        "mean_shift": {"bin_seeding": True},  # seeds on a grid: the default seeds every row
        "affinity_propagation": {"random_state": 0},
        "agglomerative": {"n_clusters": 3},
        "spectral": {"n_clusters": 3, "random_state": 0},
        "hdbscan": {"min_cluster_size": 10},
    }[algorithm]


SKLEARN_CLASSES = {
    "kmeans": KMeans,
    "minibatch_kmeans": MiniBatchKMeans,
    "gaussian_mixture": GaussianMixture,
    "bayesian_gaussian_mixture": BayesianGaussianMixture,
    "birch": Birch,
    "mean_shift": MeanShift,
    "affinity_propagation": AffinityPropagation,
}
# The clusterers without predict: scikit-learn's own, then a KNeighborsClassifier by hand.
INDUCTIVE_CLASSES = {
    "dbscan": DBSCAN,
    "agglomerative": AgglomerativeClustering,
    "spectral": SpectralClustering,
    "hdbscan": lambda **p: HDBSCAN(copy=True, **p),
}


@dataclass
class Reference:
    """The training done with scikit-learn directly on the same data and parameters.

    For every algorithm with a predict, ``pipeline`` is a scikit-learn Pipeline of the
    preprocessing and the estimator; for the inductive ones (DBSCAN, agglomerative, spectral,
    HDBSCAN), ``clusterer`` is scikit-learn's own and ``knn`` a KNeighborsClassifier on its
    anchors (DBSCAN's core samples, the others' clustered rows), fitted by hand on the
    preprocessed rows, with ``max_distance`` worked out by brute force.
    """

    algorithm: str
    family: str
    preprocessor: Pipeline | None
    Xt: np.ndarray  # the training rows in model space, as the estimator saw them
    pipeline: Pipeline | None = None
    clusterer: BaseEstimator | None = None
    knn: KNeighborsClassifier | None = None
    anchors: np.ndarray | None = None
    max_distance: float | None = None

    @classmethod
    def fit(cls, algorithm: str, preprocessing: str, X: np.ndarray) -> Reference:
        params = params_for(algorithm, preprocessing)
        steps = PREPROCESSING[preprocessing][1]()
        family = ALGORITHMS[algorithm].family
        if algorithm in INDUCTIVE_CLASSES:
            preprocessor = make_pipeline(*steps) if steps else None
            Xt = preprocessor.fit_transform(X) if preprocessor else X
            clusterer = INDUCTIVE_CLASSES[algorithm](**params).fit(Xt)
            labels = clusterer.labels_
            if algorithm == "dbscan":
                anchors = clusterer.core_sample_indices_
                max_distance = params["eps"]
            else:
                anchors = np.flatnonzero(labels != -1)
                between = cdist(Xt[anchors], Xt[anchors])
                np.fill_diagonal(between, np.inf)
                max_distance = float(between.min(axis=1).max())
            knn = KNeighborsClassifier(n_neighbors=min(5, len(anchors)))
            knn.fit(Xt[anchors], labels[anchors])
            return cls(
                algorithm,
                family,
                preprocessor,
                Xt,
                clusterer=clusterer,
                knn=knn,
                anchors=anchors,
                max_distance=max_distance,
            )
        pipeline = make_pipeline(*steps, SKLEARN_CLASSES[algorithm](**params)).fit(X)
        preprocessor = pipeline[:-1] if steps else None
        # What Pipeline.fit passed to the estimator: fit_transform of fresh, identical steps.
        Xt = make_pipeline(*PREPROCESSING[preprocessing][1]()).fit_transform(X) if steps else X
        return cls(algorithm, family, preprocessor, Xt, pipeline=pipeline)

    @property
    def estimator(self) -> BaseEstimator:
        return self.clusterer if self.pipeline is None else self.pipeline[-1]

    @property
    def dbscan(self) -> DBSCAN:
        assert isinstance(self.clusterer, DBSCAN)
        return self.clusterer

    @property
    def inductive(self) -> bool:
        return self.pipeline is None

    def model_space(self, X: np.ndarray) -> np.ndarray:
        return self.preprocessor.transform(X) if self.preprocessor is not None else X

    def _anchor_distance(self, Xt: np.ndarray) -> np.ndarray:
        return cdist(Xt, self.Xt[self.anchors]).min(axis=1)

    # -- the operations, one per catalog entry -------------------------------------------------
    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.pipeline is not None:
            return self.pipeline.predict(X)
        Xt = self.model_space(X)
        return np.where(self._anchor_distance(Xt) > self.max_distance, -1, self.knn.predict(Xt))

    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.pipeline is not None:
            proba = self.pipeline.predict_proba(X)
            return proba, np.arange(proba.shape[1])
        Xt = self.model_space(X)
        noise = self._anchor_distance(Xt) > self.max_distance
        votes = np.where(noise[:, None], 0.0, self.knn.predict_proba(Xt))
        return np.column_stack([noise.astype(float), votes]), np.r_[-1, self.knn.classes_]

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline.transform(X)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline.score_samples(X)

    def score(self, X: np.ndarray) -> float:
        return self.pipeline.score(X)

    def bic(self, X: np.ndarray) -> float:
        return self.estimator.bic(self.model_space(X))

    def aic(self, X: np.ndarray) -> float:
        return self.estimator.aic(self.model_space(X))

    def sample(self, n_samples: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
        estimator = copy.deepcopy(self.estimator).set_params(random_state=random_state)
        X, components = estimator.sample(n_samples)
        return (self.preprocessor.inverse_transform(X) if self.preprocessor else X), components

    def anomaly_scores_in_model_space(self, Xt: np.ndarray) -> np.ndarray:
        if self.inductive:
            return self._anchor_distance(Xt)
        if self.family == "mixture":
            return -self.estimator.score_samples(Xt)
        if isinstance(self.estimator, MeanShift | AffinityPropagation):
            return cdist(Xt, self.estimator.cluster_centers_).min(axis=1)
        return self.estimator.transform(Xt).min(axis=1)

    def training_scores(self) -> np.ndarray:
        """The training rows' scores the threshold is drawn from: an inductive clusterer's
        anchors left out of their own neighbours."""
        if not self.inductive:
            return self.anomaly_scores_in_model_space(self.Xt)
        distances = cdist(self.Xt, self.Xt[self.anchors])
        distances[self.anchors, np.arange(len(self.anchors))] = np.inf
        return distances.min(axis=1)

    def threshold(self, contamination: float) -> float:
        if self.inductive:
            return self.max_distance
        return float(np.quantile(self.training_scores(), 1.0 - contamination))


@dataclass
class Case:
    result: FitResult
    reference: Reference


# The clustering and mixture families; the detectors have their own module (test_detectors.py).
CLUSTERERS = sorted(a for a in ALGORITHMS if ALGORITHMS[a].family != "anomaly")
CASES = [(a, p) for a in CLUSTERERS for p in PREPROCESSING]
OPERATION_CASES = [
    (a, op, p) for a in CLUSTERERS for op in ALGORITHMS[a].operations for p in PREPROCESSING
]
MIXTURES = sorted(a for a in ALGORITHMS if "sample" in ALGORITHMS[a].operations)


@pytest.fixture(scope="module")
def fitted(blobs) -> Callable[[str, str], Case]:
    """fit_model and its scikit-learn reference, fitted once per (algorithm, preprocessing)."""
    cases: dict[tuple[str, str], Case] = {}

    def get(algorithm: str, preprocessing: str) -> Case:
        if (algorithm, preprocessing) not in cases:
            result = fit_model(
                algorithm=ALGORITHMS[algorithm],
                params=params_for(algorithm, preprocessing),
                preprocessing=PREPROCESSING[preprocessing][0],
                X=blobs.X,
                feature_names=["a", "b", "c", "d"],
                contamination=CONTAMINATION,
            )
            reference = Reference.fit(algorithm, preprocessing, blobs.X)
            cases[algorithm, preprocessing] = Case(result, reference)
        return cases[algorithm, preprocessing]

    return get


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=0)


# -- 1. every operation equals scikit-learn ------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "operation", "preprocessing"), OPERATION_CASES)
def test_operation_equals_sklearn(fitted, blobs, algorithm, operation, preprocessing):
    case = fitted(algorithm, preprocessing)
    model, reference = case.result.model, case.reference
    X = blobs.X_new
    if operation == "predict":
        np.testing.assert_array_equal(model.predict(X), reference.predict(X))
    elif operation == "predict_proba":
        proba, classes = model.predict_proba(X)
        expected_proba, expected_classes = reference.predict_proba(X)
        np.testing.assert_allclose(proba, expected_proba, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(classes, expected_classes)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9, atol=0)
    elif operation == "transform":
        assert_close(model.transform(X), reference.transform(X))
    elif operation == "score_samples":
        assert_close(model.score_samples(X), reference.score_samples(X))
    elif operation == "score":
        assert_close(model.score(X), reference.score(X))
        assert_close(model.score(blobs.X), reference.score(blobs.X))
    elif operation in ("bic", "aic"):
        assert_close(getattr(model, operation)(X), getattr(reference, operation)(X))
        assert_close(getattr(model, operation)(blobs.X), getattr(reference, operation)(blobs.X))
    elif operation == "sample":
        rows, components = model.sample(7, random_state=3)
        expected_rows, expected_components = reference.sample(7, random_state=3)
        assert_close(rows, expected_rows)
        np.testing.assert_array_equal(components, expected_components)
    elif operation == "anomalies":
        check_anomalies(model, reference, X)
    else:
        pytest.fail(f"no reference for operation {operation!r}")


def check_anomalies(model, reference: Reference, X: np.ndarray) -> None:
    scores = model.anomaly_scores(X)
    expected = reference.anomaly_scores_in_model_space(reference.model_space(X))
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)
    training = reference.training_scores()
    threshold = reference.threshold(CONTAMINATION)
    np.testing.assert_allclose(model.anomaly.threshold, threshold, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(scores > model.anomaly.threshold, expected > threshold)
    # The far-away rows at the end of X_new are anomalies for every algorithm.
    assert np.all(scores[-3:] > model.anomaly.threshold)
    percentiles = model.anomaly.percentiles(scores)
    brute_force = np.array([100.0 * np.mean(training < s) for s in expected])
    np.testing.assert_allclose(percentiles, brute_force, rtol=1e-9, atol=1e-12)
    assert model.anomaly.n_training == len(reference.Xt)
    if reference.inductive:
        # The stored threshold is where predict's noise begins: the two always agree.
        np.testing.assert_array_equal(scores > model.anomaly.threshold, model.predict(X) == -1)
        assert model.anomaly.contamination == np.mean(training > threshold)


@pytest.mark.parametrize(("algorithm", "preprocessing"), CASES)
def test_model_space_equals_sklearn_preprocessing(fitted, blobs, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    assert_close(
        case.result.model.model_space(blobs.X_new), case.reference.model_space(blobs.X_new)
    )
    if preprocessing == "scaler_pca099_whiten":
        # 0.99 of the variance needs 3 of the 4 features: the PCA really reduces.
        assert case.reference.Xt.shape[1] == 3


# -- 2. sample is drawn in the original feature space ---------------------------------------------


@pytest.mark.parametrize("preprocessing", PREPROCESSING)
@pytest.mark.parametrize("algorithm", MIXTURES)
def test_sample_is_in_the_original_feature_space(fitted, blobs, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    model, reference = case.result.model, case.reference
    estimator = model.estimator
    state_before = copy.deepcopy(estimator.get_params())

    rows, components = model.sample(2000, random_state=11)
    expected_rows, expected_components = reference.sample(2000, random_state=11)
    assert rows.shape == (2000, blobs.X.shape[1])
    assert_close(rows, expected_rows)
    np.testing.assert_array_equal(components, expected_components)
    # Drawn where the training rows are, not in the scaled/rotated model space.
    np.testing.assert_allclose(rows.mean(axis=0), blobs.X.mean(axis=0), rtol=0, atol=0.5)

    again, again_components = model.sample(2000, random_state=11)
    np.testing.assert_array_equal(again, rows)
    np.testing.assert_array_equal(again_components, components)
    other, _ = model.sample(2000, random_state=12)
    assert not np.array_equal(other, rows)

    # The cached estimator is the same object, with the same random_state and parameters.
    assert model.estimator is estimator
    assert estimator.random_state == 0
    assert estimator.get_params() == state_before


@pytest.mark.parametrize("algorithm", MIXTURES)
def test_sample_without_random_state_leaves_the_estimator_alone(fitted, algorithm):
    model = fitted(algorithm, "scaler_pca2").result.model
    rows, components = model.sample(5, random_state=None)
    assert rows.shape == (5, 4)
    assert components.shape == (5,)
    assert model.estimator.random_state == 0


# -- 6. fit_model errors and training metrics -----------------------------------------------------


@pytest.mark.parametrize(
    "algorithm", sorted(a for a in ALGORITHMS if ALGORITHMS[a].n_clusters_param)
)
@pytest.mark.parametrize("k", [301, 1000])
def test_more_clusters_than_rows_is_a_fit_error(blobs, algorithm, k):
    param = ALGORITHMS[algorithm].n_clusters_param
    with pytest.raises(FitError, match=f"{param}={k}.*300 rows"):
        fit_model(
            algorithm=ALGORITHMS[algorithm],
            params={param: k},
            preprocessing=[],
            X=blobs.X,
            feature_names=None,
            contamination=CONTAMINATION,
        )


@pytest.mark.parametrize(
    "algorithm",
    # Spectral clustering's eigensolver needs fewer clusters than rows (scipy says so).
    sorted(a for a in ALGORITHMS if ALGORITHMS[a].n_clusters_param and a != "spectral"),
)
def test_as_many_clusters_as_rows_fits(algorithm):
    X = np.arange(12.0).reshape(6, 2) ** 1.5
    spec = ALGORITHMS[algorithm]
    param = spec.n_clusters_param
    seeded = "random_state" in spec.params_schema["properties"]
    more = {"random_state": 0} if seeded else {}
    result = fit_model(
        algorithm=spec,
        params={param: 6, **more},
        preprocessing=[],
        X=X,
        feature_names=None,
        contamination=CONTAMINATION,
    )
    assert result.params[param] == 6


@pytest.mark.parametrize("n_components", [5, 50])
def test_pca_with_more_components_than_features_is_a_fit_error(blobs, n_components):
    # The step's own constraints accept any non-negative int; only fitting on 4 features
    # finds it too large, so it is a FitError (not a HyperparameterError).
    with pytest.raises(FitError, match=f"n_components={n_components}") as caught:
        fit_model(
            algorithm=ALGORITHMS["kmeans"],
            params={"n_clusters": 3},
            preprocessing=[{"step": "pca", "n_components": n_components}],
            X=blobs.X,
            feature_names=None,
            contamination=CONTAMINATION,
        )
    assert not isinstance(caught.value, HyperparameterError)


@pytest.mark.parametrize(
    ("preprocessing", "parameter"),
    [
        ([{"step": "minmax_scaler"}], "preprocessing[0].step"),
        ([{"n_components": 2}], "preprocessing[0].step"),
        ([{"step": "standard_scaler"}, {"step": "pca", "tol": 0.1}], "preprocessing[1].tol"),
        ([{"step": "standard_scaler", "copy": False}], "preprocessing[0].copy"),
        ([{"step": "pca", "n_components": -1}], "preprocessing[0]"),
        ([{"step": "pca", "svd_solver": "bogus"}], "preprocessing[0]"),
    ],
)
def test_bad_preprocessing_is_a_hyperparameter_error(blobs, preprocessing, parameter):
    with pytest.raises(HyperparameterError) as caught:
        fit_model(
            algorithm=ALGORITHMS["kmeans"],
            params={"n_clusters": 3},
            preprocessing=preprocessing,
            X=blobs.X,
            feature_names=None,
            contamination=CONTAMINATION,
        )
    assert caught.value.parameter == parameter


def test_dbscan_with_no_core_samples_is_a_fit_error(blobs):
    with pytest.raises(FitError, match="no core samples"):
        fit_model(
            algorithm=ALGORITHMS["dbscan"],
            params={"eps": 1e-6},
            preprocessing=[],
            X=blobs.X,
            feature_names=None,
            contamination=CONTAMINATION,
        )


@pytest.mark.parametrize("preprocessing", PREPROCESSING)
@pytest.mark.parametrize("algorithm", ["kmeans", "minibatch_kmeans"])
def test_kmeans_metrics(fitted, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    metrics, reference = case.result.metrics, case.reference
    estimator, Xt = reference.estimator, reference.Xt
    labels = estimator.labels_
    assert_close(metrics["inertia"], estimator.inertia_)
    assert_close(metrics["silhouette"], silhouette_score(Xt, labels))
    assert_close(metrics["davies_bouldin"], davies_bouldin_score(Xt, labels))
    assert_close(metrics["calinski_harabasz"], calinski_harabasz_score(Xt, labels))
    assert metrics["n_iter"] == estimator.n_iter_
    assert metrics["cluster_sizes"] == np.bincount(labels, minlength=3).tolist()
    assert sum(metrics["cluster_sizes"]) == len(Xt)
    assert "silhouette_sample_size" not in metrics


@pytest.mark.parametrize("preprocessing", PREPROCESSING)
@pytest.mark.parametrize("algorithm", MIXTURES)
def test_mixture_metrics(fitted, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    metrics, reference = case.result.metrics, case.reference
    estimator, Xt = reference.estimator, reference.Xt
    n = len(Xt)
    assert_close(metrics["log_likelihood"], estimator.score(Xt) * n)
    assert metrics["converged"] is True
    assert metrics["converged"] == estimator.converged_
    assert metrics["n_iter"] == estimator.n_iter_
    assert_close(metrics["lower_bound"], estimator.lower_bound_)
    sizes = np.bincount(estimator.predict(Xt), minlength=len(estimator.weights_)).tolist()
    assert metrics["cluster_sizes"] == sizes
    assert sum(metrics["cluster_sizes"]) == n
    if algorithm == "gaussian_mixture":
        assert_close(metrics["bic"], estimator.bic(Xt))
        assert_close(metrics["aic"], estimator.aic(Xt))
        assert "effective_components" not in metrics
    else:
        assert "bic" not in metrics
        assert "aic" not in metrics
        assert metrics["effective_components"] == int(np.sum(estimator.weights_ > 0.01))
        # The data has 3 blobs: the Bayesian mixture switches off the 2 spare components.
        assert metrics["effective_components"] == 3
        assert_close(metrics["weights"], estimator.weights_)


@pytest.mark.parametrize("preprocessing", PREPROCESSING)
def test_dbscan_metrics(fitted, preprocessing):
    case = fitted("dbscan", preprocessing)
    metrics, dbscan = case.result.metrics, case.reference.dbscan
    labels = dbscan.labels_
    n_clusters = len(set(labels.tolist()) - {-1})
    assert metrics["n_clusters"] == n_clusters
    assert metrics["n_core_samples"] == len(dbscan.core_sample_indices_)
    assert metrics["noise_ratio"] == np.mean(labels == -1)
    assert metrics["cluster_sizes"] == np.bincount(labels[labels >= 0]).tolist()
    assert sum(metrics["cluster_sizes"]) + np.sum(labels == -1) == len(labels)
    assert metrics["n_noise"] == np.sum(labels == -1)
    np.testing.assert_array_equal(case.result.model.estimator.labels_, labels)


NEW_CLUSTERERS = ["birch", "mean_shift", "affinity_propagation", "agglomerative", "spectral"]


@pytest.mark.parametrize("preprocessing", PREPROCESSING)
@pytest.mark.parametrize("algorithm", [*NEW_CLUSTERERS, "hdbscan"])
def test_clusterer_metrics(fitted, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    metrics, reference = case.result.metrics, case.reference
    estimator, Xt = reference.estimator, reference.Xt
    labels = estimator.labels_
    clustered = labels != -1
    n_clusters = len(np.unique(labels[clustered]))
    assert metrics["n_clusters"] == n_clusters
    assert metrics["n_noise"] == np.sum(~clustered)
    assert metrics["cluster_sizes"] == np.bincount(labels[clustered]).tolist()
    if 2 <= n_clusters < np.sum(clustered):
        assert_close(metrics["silhouette"], silhouette_score(Xt[clustered], labels[clustered]))
        assert_close(
            metrics["davies_bouldin"], davies_bouldin_score(Xt[clustered], labels[clustered])
        )
        assert_close(
            metrics["calinski_harabasz"],
            calinski_harabasz_score(Xt[clustered], labels[clustered]),
        )
    else:  # mean-shift finds one cluster in the whitened space
        assert metrics["silhouette"] is None
    if algorithm == "birch":
        assert metrics["n_subclusters"] == len(estimator.subcluster_centers_)
    if algorithm in ("mean_shift", "affinity_propagation"):
        assert metrics["n_iter"] == estimator.n_iter_
    if algorithm == "affinity_propagation":
        assert metrics["converged"] is True
    if algorithm == "agglomerative":
        assert metrics["n_leaves"] == estimator.n_leaves_
        assert metrics["n_connected_components"] == estimator.n_connected_components_
    if algorithm == "hdbscan":
        assert metrics["n_noise"] > 0
        assert metrics["noise_ratio"] == np.mean(~clustered)
        assert_close(metrics["mean_probability"], estimator.probabilities_.mean())


@pytest.mark.parametrize(("algorithm", "preprocessing"), CASES)
def test_training_labels_are_kept_and_equal_scikit_learns_fit_predict(
    fitted, blobs, algorithm, preprocessing
):
    case = fitted(algorithm, preprocessing)
    model, reference = case.result.model, case.reference
    labels = model.training_labels
    if reference.inductive or algorithm in NEW_CLUSTERERS:
        expected = reference.estimator.labels_
    else:  # k-means' labels_, and a mixture's predict on the rows it was fitted on
        expected = reference.pipeline.predict(blobs.X)
    np.testing.assert_array_equal(labels, expected)
    assert len(labels) == len(reference.Xt)
    # And they survive the artifact.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).training_labels, labels)


def test_the_counts_of_every_clusterer(fitted):
    for algorithm in ("kmeans", "minibatch_kmeans", "dbscan", *NEW_CLUSTERERS, "hdbscan"):
        metrics = fitted(algorithm, "none").result.metrics
        labels = fitted(algorithm, "none").result.model.training_labels
        assert metrics["n_clusters"] == len(set(labels.tolist()) - {-1}), algorithm
        assert metrics["n_noise"] == int(np.sum(labels == -1)), algorithm


@pytest.mark.parametrize(("algorithm", "preprocessing"), CASES)
def test_fit_result_is_json_and_resolves_every_param(fitted, algorithm, preprocessing):
    result = fitted(algorithm, preprocessing).result
    json.dumps(result.metrics, allow_nan=False)
    json.dumps(result.params, allow_nan=False)
    spec = ALGORITHMS[algorithm]
    expected = {
        k: v
        for k, v in spec.estimator_class(**params_for(algorithm, preprocessing))
        .get_params(deep=False)
        .items()
        if k not in spec.refused
    }
    assert result.params == expected
    assert result.training_seconds >= 0.0
    assert result.model.algorithm == algorithm
    assert result.model.family == spec.family
    assert result.model.n_features_in == 4
    assert result.model.feature_names == ["a", "b", "c", "d"]
    assert (result.model.preprocessor is None) == (preprocessing == "none")


# -- 7. input width and fitted parameters ---------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "preprocessing"), CASES)
@pytest.mark.parametrize("shape", [(5, 3), (5, 5), (5, 1), (4,), (2, 2, 4)])
def test_model_space_refuses_a_wrong_row_width(fitted, algorithm, preprocessing, shape):
    model = fitted(algorithm, preprocessing).result.model
    with pytest.raises(InferenceInputError, match="trained on 4"):
        model.model_space(np.ones(shape))
    with pytest.raises(InferenceInputError):
        model.predict(np.ones(shape))


@pytest.mark.parametrize(("algorithm", "preprocessing"), CASES)
def test_parameters_are_json_and_equal_the_fitted_attributes(fitted, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    model, reference = case.result.model, case.reference
    parameters = model.parameters()
    assert json.loads(json.dumps(parameters, allow_nan=False)) == parameters
    estimator = model.estimator
    assert parameters["anomaly"] == {
        "contamination": model.anomaly.contamination,
        "threshold": model.anomaly.threshold,
    }
    if not reference.inductive:
        assert model.anomaly.contamination == CONTAMINATION
    if algorithm in ("kmeans", "minibatch_kmeans", "mean_shift", "affinity_propagation"):
        assert parameters["n_clusters"] == len(reference.estimator.cluster_centers_)
        np.testing.assert_array_equal(parameters["cluster_centers"], estimator.cluster_centers_)
        assert_close(parameters["cluster_centers"], reference.estimator.cluster_centers_)
        if algorithm == "affinity_propagation":
            assert parameters["cluster_centers_indices"] == (
                reference.estimator.cluster_centers_indices_.tolist()
            )
        if reference.preprocessor is not None:
            assert_close(
                parameters["cluster_centers_input_space"],
                reference.preprocessor.inverse_transform(reference.estimator.cluster_centers_),
            )
        else:
            assert "cluster_centers_input_space" not in parameters
    elif algorithm == "birch":
        birch = reference.estimator
        assert parameters["n_subclusters"] == len(birch.subcluster_centers_)
        assert_close(parameters["subcluster_centers"], birch.subcluster_centers_)
        assert parameters["subcluster_labels"] == birch.subcluster_labels_.tolist()
        assert parameters["n_clusters"] == 3
    elif reference.inductive:
        assert parameters["classes"] == [-1, *reference.knn.classes_.tolist()]
        assert parameters["n_clusters"] == len(reference.knn.classes_)
        assert parameters["n_anchors"] == len(reference.anchors)
        assert_close(parameters["max_distance"], reference.max_distance)
        assert parameters["n_neighbors"] == 5
        if algorithm == "dbscan":
            assert parameters["n_core_samples"] == len(reference.dbscan.core_sample_indices_)
            assert parameters["eps"] == DBSCAN_EPS[preprocessing]
            assert parameters["max_distance"] == DBSCAN_EPS[preprocessing]
            assert "core_sample_indices" not in parameters
            indices = model.parameters(core_sample_indices=True)["core_sample_indices"]
            assert indices == reference.dbscan.core_sample_indices_.tolist()
        if algorithm == "hdbscan":
            assert_close(parameters["mean_probability"], reference.clusterer.probabilities_.mean())
    else:
        assert parameters["n_components"] == len(reference.estimator.weights_)
        assert parameters["covariance_type"] == "full"
        assert_close(parameters["weights"], reference.estimator.weights_)
        assert_close(parameters["means"], reference.estimator.means_)
        assert_close(parameters["covariances"], reference.estimator.covariances_)
        if reference.preprocessor is not None:
            assert_close(
                parameters["means_input_space"],
                reference.preprocessor.inverse_transform(reference.estimator.means_),
            )
    steps = parameters["preprocessing"]
    if reference.preprocessor is None:
        assert steps == []
    else:
        scaler, pca = reference.preprocessor[0], reference.preprocessor[1]
        assert [s["step"] for s in steps] == ["standard_scaler", "pca"]
        assert_close(steps[0]["mean"], scaler.mean_)
        assert_close(steps[0]["scale"], scaler.scale_)
        assert_close(steps[1]["components"], pca.components_)
        assert_close(steps[1]["explained_variance_ratio"], pca.explained_variance_ratio_)
        assert steps[1]["n_components"] == pca.n_components_


def test_fit_model_does_not_change_the_callers_rows(blobs):
    X = blobs.X.copy()  # writable, unlike the fixture's
    fit_model(
        algorithm=ALGORITHMS["gaussian_mixture"],
        params={"n_components": 2, "random_state": 0},
        preprocessing=PREPROCESSING["scaler_pca099_whiten"][0],
        X=X,
        feature_names=None,
        contamination=CONTAMINATION,
    )
    np.testing.assert_array_equal(X, blobs.X)


@pytest.mark.parametrize("n_rows", [30_000, 30_001])
def test_a_large_kmeans_training_equals_scikit_learn_bit_for_bit(n_rows):
    """Above the silhouette's sample size, every number the service computes its own way (the
    separation metrics in one pass, the medians a column at a time, the threshold from the fast
    distances) equals scikit-learn's or numpy's on the same rows, float for float."""
    X, _ = make_blobs(n_samples=n_rows, n_features=16, centers=8, cluster_std=2.0, random_state=0)
    params = {"n_clusters": 8, "n_init": 1, "random_state": 0}
    # One thread: with more than two, KMeans adds its threads' partial sums in no fixed order.
    with threadpool_limits(limits=1):
        result = fit_model(
            algorithm=ALGORITHMS["kmeans"],
            params=params,
            preprocessing=[],
            X=X,
            feature_names=None,
            contamination=CONTAMINATION,
        )
        reference = KMeans(**params).fit(X)
        distances = reference.transform(X)
    model, metrics, labels = result.model, result.metrics, reference.labels_
    assert model.estimator.cluster_centers_.tobytes() == reference.cluster_centers_.tobytes()
    assert np.array_equal(model.estimator.labels_, labels)
    assert metrics["inertia"] == reference.inertia_
    assert metrics["n_iter"] == reference.n_iter_
    assert metrics["cluster_sizes"] == np.bincount(labels).tolist()
    assert metrics["silhouette"] == silhouette_score(X, labels, sample_size=2_000, random_state=0)
    assert metrics["silhouette_sample_size"] == 2_000
    assert metrics["davies_bouldin"] == davies_bouldin_score(X, labels)
    assert metrics["calinski_harabasz"] == calinski_harabasz_score(X, labels)
    expected = AnomalyThreshold.fit(distances.min(axis=1), CONTAMINATION)
    assert model.anomaly.threshold == expected.threshold
    assert model.anomaly.reference.tobytes() == expected.reference.tobytes()
    assert model.anomaly.summary == expected.summary
    new = np.linspace(0.0, 2.0 * expected.threshold, 101)
    assert model.anomaly.percentiles(new).tobytes() == expected.percentiles(new).tobytes()
    assert model.training_medians.tobytes() == np.median(X, axis=0).tobytes()
