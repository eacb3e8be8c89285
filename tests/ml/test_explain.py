"""Explanations: exact decompositions against the quantity they decompose, median substitution
against the same substitution done by hand on scikit-learn's own fit, and top_contributions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import DBSCAN, KMeans, MiniBatchKMeans
from sklearn.covariance import EllipticEnvelope
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from app.ml.catalog import ALGORITHMS
from app.ml.explain import (
    DEFAULT_TOP_FEATURES,
    Explanation,
    exact_terms,
    explain,
    median_substitution_terms,
    top_contributions,
)
from app.ml.fitting import fit_model
from app.ml.model import FittedModel

CONTAMINATION = 0.05
FEATURES = ["a", "b", "c", "d"]

PARAMS: dict[str, dict[str, Any]] = {
    "kmeans": {"n_clusters": 3, "random_state": 0},
    "minibatch_kmeans": {"n_clusters": 3, "batch_size": 64, "random_state": 0},
    "dbscan": {"eps": 1.2, "min_samples": 5},
    "gaussian_mixture": {"n_components": 3, "random_state": 0},
    "bayesian_gaussian_mixture": {"n_components": 3, "random_state": 0},
    "isolation_forest": {"n_estimators": 50, "random_state": 0},
    "local_outlier_factor": {"n_neighbors": 15},
    "elliptic_envelope": {"random_state": 0},
    "one_class_svm": {"gamma": "scale", "nu": 0.1},
    # One component of four: every feature keeps most of its own residual (see the shift test).
    "pca_reconstruction": {"n_components": 1},
    "birch": {"n_clusters": 3},
    "mean_shift": {"bin_seeding": True},
    "affinity_propagation": {"random_state": 0},
    "agglomerative": {"n_clusters": 3},
    "spectral": {"n_clusters": 3, "random_state": 0},
    "hdbscan": {"min_cluster_size": 10},
}
# DBSCAN's eps depends on the scale of the space it runs in.
DBSCAN_EPS = {"none": 1.2, "scaler": 0.35, "scaler_pca": 0.6}

PREPROCESSING: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "scaler": [{"step": "standard_scaler"}],
    "scaler_pca": [
        {"step": "standard_scaler"},
        {"step": "pca", "n_components": 0.99, "whiten": True},
    ],
}
SKLEARN_STEPS: dict[str, Callable[[], list[Any]]] = {
    "none": list,
    "scaler": lambda: [StandardScaler()],
    "scaler_pca": lambda: [StandardScaler(), PCA(n_components=0.99, whiten=True)],
}

DETECTORS_WITHOUT_DECOMPOSITION = [
    "elliptic_envelope",
    "isolation_forest",
    "local_outlier_factor",
    "one_class_svm",
]
EXACT = ["kmeans", "minibatch_kmeans", "dbscan", "gaussian_mixture", "bayesian_gaussian_mixture"]
CENTROIDS = ["birch", "mean_shift", "affinity_propagation"]
INDUCTIVE = ["agglomerative", "spectral", "hdbscan"]


def params_for(algorithm: str, preprocessing: str, **overrides: Any) -> dict[str, Any]:
    params = dict(PARAMS[algorithm])
    if algorithm == "dbscan":
        params["eps"] = DBSCAN_EPS[preprocessing]
    return params | overrides


def fit(
    algorithm: str, X: np.ndarray, preprocessing: str = "none", **overrides: Any
) -> FittedModel:
    return fit_model(
        algorithm=ALGORITHMS[algorithm],
        params=params_for(algorithm, preprocessing, **overrides),
        preprocessing=PREPROCESSING[preprocessing],
        X=X,
        feature_names=FEATURES,
        contamination=CONTAMINATION,
    ).model


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=0)


def sklearn_scaled(X_train: np.ndarray, X: np.ndarray, preprocessing: str) -> np.ndarray:
    """``X`` through the preprocessing fitted by scikit-learn directly on ``X_train``."""
    steps = SKLEARN_STEPS[preprocessing]()
    return make_pipeline(*steps).fit(X_train).transform(X) if steps else X


@pytest.fixture(scope="module")
def fitted(blobs) -> Callable[..., FittedModel]:
    """fit_model on the blobs, once per (algorithm, preprocessing, overrides)."""
    models: dict[tuple, FittedModel] = {}

    def get(algorithm: str, preprocessing: str = "none", **overrides: Any) -> FittedModel:
        key = (algorithm, preprocessing, tuple(sorted(overrides.items())))
        if key not in models:
            models[key] = fit(algorithm, blobs.X, preprocessing, **overrides)
        return models[key]

    return get


# -- 1. exact decompositions sum to what they decompose -------------------------------------------


@pytest.mark.parametrize("preprocessing", ["none", "scaler"])
@pytest.mark.parametrize(
    ("algorithm", "cls"), [("kmeans", KMeans), ("minibatch_kmeans", MiniBatchKMeans)]
)
def test_kmeans_terms_sum_to_the_squared_distance_to_the_nearest_centroid(
    fitted, blobs, algorithm, cls, preprocessing
):
    model = fitted(algorithm, preprocessing)
    X = blobs.X_new
    explanation = explain(model, X)
    assert explanation.method == "exact"
    assert explanation.decomposes == "squared distance to the nearest centroid"
    assert explanation.terms.shape == X.shape
    assert np.all(explanation.terms >= 0)
    assert_close(explanation.terms.sum(axis=1), model.anomaly_scores(X) ** 2)
    # By hand: scikit-learn's own fit (the same centroids), in the scaled space.
    Xt = sklearn_scaled(blobs.X, X, preprocessing)
    est = cls(**PARAMS[algorithm]).fit(sklearn_scaled(blobs.X, blobs.X, preprocessing))
    centers = est.cluster_centers_
    squared = ((Xt[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    nearest = squared.argmin(axis=1)
    assert_close(explanation.terms, (Xt - centers[nearest]) ** 2)
    assert_close(explanation.terms.sum(axis=1), squared.min(axis=1))


def full_covariances(est: Any) -> np.ndarray:
    """Every component's covariance as a full matrix, from ``covariances_`` alone."""
    k, d = est.means_.shape
    cov = est.covariances_
    if est.covariance_type == "full":
        return cov
    if est.covariance_type == "tied":
        return np.repeat(cov[None], k, axis=0)
    if est.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([c * np.eye(d) for c in cov])  # spherical


MIXTURE_CASES = [
    ("gaussian_mixture", GaussianMixture, "full"),
    ("gaussian_mixture", GaussianMixture, "tied"),
    ("gaussian_mixture", GaussianMixture, "diag"),
    ("gaussian_mixture", GaussianMixture, "spherical"),
    ("bayesian_gaussian_mixture", BayesianGaussianMixture, "full"),
    ("bayesian_gaussian_mixture", BayesianGaussianMixture, "diag"),
]


@pytest.mark.parametrize("preprocessing", ["none", "scaler"])
@pytest.mark.parametrize(("algorithm", "cls", "covariance_type"), MIXTURE_CASES)
def test_mixture_terms_sum_to_the_squared_mahalanobis_distance(
    fitted, blobs, algorithm, cls, covariance_type, preprocessing
):
    model = fitted(algorithm, preprocessing, covariance_type=covariance_type)
    X = np.vstack([blobs.X_new, blobs.X[:30]])
    explanation = explain(model, X)
    assert explanation.method == "exact"
    assert (
        explanation.decomposes == "squared Mahalanobis distance to the most responsible component"
    )
    assert explanation.terms.shape == X.shape

    # By hand, from scikit-learn's own fit: the most responsible component and its covariance.
    Xt_train = sklearn_scaled(blobs.X, blobs.X, preprocessing)
    est = cls(**PARAMS[algorithm], covariance_type=covariance_type).fit(Xt_train)
    Xt = sklearn_scaled(blobs.X, X, preprocessing)
    component = est.predict_proba(Xt).argmax(axis=1)
    diff = Xt - est.means_[component]
    covariances = full_covariances(est)[component]
    solved = np.linalg.solve(covariances, diff[:, :, None])[:, :, 0]
    mahalanobis = np.sum(diff * solved, axis=1)
    assert np.all(mahalanobis > 0)
    assert_close(explanation.terms.sum(axis=1), mahalanobis)
    np.testing.assert_allclose(
        explanation.terms, diff * solved, rtol=1e-7, atol=1e-9 * mahalanobis.max()
    )
    if covariance_type in ("diag", "spherical"):
        assert np.all(explanation.terms >= 0)


@pytest.mark.parametrize("preprocessing", ["none", "scaler"])
@pytest.mark.parametrize("n_components", [1, 2, 0.9])
def test_pca_reconstruction_terms_sum_to_the_anomaly_score(
    fitted, blobs, preprocessing, n_components
):
    model = fitted("pca_reconstruction", preprocessing, n_components=n_components)
    X = blobs.X_new
    explanation = explain(model, X)
    assert explanation.method == "exact"
    assert explanation.decomposes == "squared reconstruction error"
    assert_close(explanation.terms.sum(axis=1), model.anomaly_scores(X))
    # By hand, with scikit-learn's PCA in the scaled space.
    Xt = sklearn_scaled(blobs.X, X, preprocessing)
    pca = PCA(n_components=n_components).fit(sklearn_scaled(blobs.X, blobs.X, preprocessing))
    assert_close(explanation.terms, (Xt - pca.inverse_transform(pca.transform(Xt))) ** 2)


@pytest.mark.parametrize("preprocessing", ["none", "scaler"])
@pytest.mark.parametrize(
    "metric", [{}, {"metric": "euclidean"}, {"metric": "l2"}, {"metric": "minkowski", "p": 2}]
)
def test_dbscan_euclidean_terms_sum_to_the_squared_core_distance(
    fitted, blobs, preprocessing, metric
):
    model = fitted("dbscan", preprocessing, **metric)
    X = blobs.X_new
    explanation = explain(model, X)
    assert explanation.method == "exact"
    assert explanation.decomposes == "squared distance to the nearest core sample"
    assert_close(explanation.terms.sum(axis=1), model.anomaly_scores(X) ** 2)
    # By hand: DBSCAN's core samples, the nearest by brute force.
    Xt_train = sklearn_scaled(blobs.X, blobs.X, preprocessing)
    core = DBSCAN(eps=DBSCAN_EPS[preprocessing], min_samples=5).fit(Xt_train).components_
    Xt = sklearn_scaled(blobs.X, X, preprocessing)
    squared = ((Xt[:, None, :] - core[None, :, :]) ** 2).sum(axis=2)
    assert_close(explanation.terms, (Xt - core[squared.argmin(axis=1)]) ** 2)
    assert_close(explanation.terms.sum(axis=1), squared.min(axis=1))


@pytest.mark.parametrize("metric", [{"metric": "manhattan"}, {"metric": "minkowski", "p": 3}])
def test_dbscan_with_another_metric_falls_back_to_median_substitution(fitted, blobs, metric):
    model = fitted("dbscan", **metric)
    assert exact_terms(model, blobs.X_new) is None
    assert explain(model, blobs.X_new).method == "median_substitution"


@pytest.mark.parametrize("algorithm", [*EXACT, "pca_reconstruction"])
def test_with_a_scaler_the_terms_are_one_per_original_feature(fitted, blobs, algorithm):
    model = fitted(algorithm, "scaler")
    explanation = explain(model, blobs.X_new)
    assert explanation.method == "exact"
    assert explanation.terms.shape == blobs.X_new.shape
    # In the scaled space: the same terms as the model's estimator gives on scaled rows.
    unscaled = dataclasses.replace(model, preprocessor=None)
    scaled_rows = StandardScaler().fit(blobs.X).transform(blobs.X_new)
    assert_close(exact_terms(unscaled, scaled_rows).terms, explanation.terms)


# -- 2. median substitution ----------------------------------------------------------------------

SKLEARN_DETECTORS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "isolation_forest": lambda p: IsolationForest(**p),
    "local_outlier_factor": lambda p: LocalOutlierFactor(novelty=True, **p),
    "elliptic_envelope": lambda p: EllipticEnvelope(**p),
    "one_class_svm": lambda p: OneClassSVM(**p),
}


def sklearn_anomaly_scores(
    algorithm: str, preprocessing: str, X_train: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """The anomaly score function of ``algorithm`` fitted by scikit-learn directly."""
    steps = SKLEARN_STEPS[preprocessing]()
    pre = make_pipeline(*steps).fit(X_train) if steps else None
    Xt = pre.transform(X_train) if pre is not None else X_train
    params = params_for(algorithm, preprocessing)

    def space(X: np.ndarray) -> np.ndarray:
        return pre.transform(X) if pre is not None else X

    if algorithm in SKLEARN_DETECTORS:
        est = SKLEARN_DETECTORS[algorithm](params).fit(Xt)
        return lambda X: -est.score_samples(space(X))
    if algorithm == "kmeans":
        est = KMeans(**params).fit(Xt)
        return lambda X: est.transform(space(X)).min(axis=1)
    if algorithm == "gaussian_mixture":
        est = GaussianMixture(**params).fit(Xt)
        return lambda X: -est.score_samples(space(X))
    if algorithm == "dbscan":
        core = DBSCAN(**params).fit(Xt).components_

        def core_distance(X: np.ndarray) -> np.ndarray:
            Z = space(X)
            return np.sqrt(((Z[:, None, :] - core[None, :, :]) ** 2).sum(axis=2).min(axis=1))

        return core_distance
    if algorithm == "pca_reconstruction":
        pca = PCA(**params).fit(Xt)

        def error(X: np.ndarray) -> np.ndarray:
            Z = space(X)
            return np.sum((Z - pca.inverse_transform(pca.transform(Z))) ** 2, axis=1)

        return error
    raise AssertionError(algorithm)


MEDIAN_CASES = [
    *[(d, p) for d in DETECTORS_WITHOUT_DECOMPOSITION for p in PREPROCESSING],
    *[(a, "scaler_pca") for a in ("kmeans", "gaussian_mixture", "dbscan", "pca_reconstruction")],
]


@pytest.mark.parametrize(("algorithm", "preprocessing"), MEDIAN_CASES)
def test_median_substitution_equals_the_substitution_by_hand(
    fitted, blobs, algorithm, preprocessing
):
    model = fitted(algorithm, preprocessing)
    X = blobs.X_new
    explanation = explain(model, X)
    assert explanation.method == "median_substitution"
    assert explanation.decomposes == "drop in anomaly score at the median"
    assert explanation.terms.shape == X.shape
    assert exact_terms(model, X) is None

    score = sklearn_anomaly_scores(algorithm, preprocessing, blobs.X)
    medians = np.median(blobs.X, axis=0)
    assert_close(model.training_medians, medians)
    base = score(X)
    expected = np.empty_like(X)
    for j in range(X.shape[1]):
        substituted = X.copy()
        substituted[:, j] = medians[j]
        expected[:, j] = base - score(substituted)
    # Differences of nearly equal scores: a tolerance on the scale of the scores themselves.
    np.testing.assert_allclose(
        explanation.terms, expected, rtol=1e-9, atol=1e-9 * np.abs(base).max()
    )
    assert np.any(explanation.terms != 0)


def test_median_substitution_needs_the_training_medians(fitted, blobs):
    model = dataclasses.replace(fitted("isolation_forest"), training_medians=None)
    with pytest.raises(ValueError, match="training medians"):
        explain(model, blobs.X_new)
    with pytest.raises(ValueError, match="training medians"):
        median_substitution_terms(model, blobs.X_new)
    # An exact decomposition does not need them.
    kmeans = dataclasses.replace(fitted("kmeans"), training_medians=None)
    assert explain(kmeans, blobs.X_new).method == "exact"


def test_a_row_at_the_training_medians_has_no_contributions(fitted, blobs):
    model = fitted("one_class_svm")
    at_median = np.median(blobs.X, axis=0)[None, :]
    np.testing.assert_array_equal(explain(model, at_median).terms, 0.0)


# -- 3. top_contributions ------------------------------------------------------------------------

TERMS = np.array([[1.0, 3.0, 2.0, 0.0], [0.5, -1.0, 4.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
VALUES = np.array([[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0], [0.0, 1.0, 2.0, 3.0]])


def test_top_contributions_orders_by_contribution_with_names():
    explanation = Explanation("exact", "something", TERMS)
    rows = top_contributions(explanation, VALUES, feature_names=FEATURES, top=4)
    assert [[c["feature"] for c in row] for row in rows] == [
        ["b", "c", "a", "d"],
        ["c", "a", "d", "b"],  # a tie keeps the column order; a negative term comes last
        ["a", "b", "c", "d"],
    ]
    assert rows[0][0] == {"feature": "b", "value": 11.0, "contribution": 3.0, "share": 0.5}
    assert rows[1][3] == {"feature": "b", "value": 21.0, "contribution": -1.0, "share": -0.25}
    for row in rows[:2]:
        contributions = [c["contribution"] for c in row]
        assert contributions == sorted(contributions, reverse=True)
        assert sum(c["share"] for c in row) == pytest.approx(1.0, rel=1e-12)
    # A row whose terms are all zero has shares of zero, not NaN.
    assert [c["share"] for c in rows[2]] == [0.0] * 4


@pytest.mark.parametrize("top", [1, 2, 3])
def test_top_contributions_respects_top_and_uses_indices_without_names(top):
    explanation = Explanation("exact", "something", TERMS)
    rows = top_contributions(explanation, VALUES, feature_names=None, top=top)
    assert [len(row) for row in rows] == [top] * 3
    assert [c["feature"] for c in rows[0]] == [1, 2, 0][:top]
    assert all(type(c["feature"]) is int for row in rows for c in row)
    assert rows[0][0]["value"] == 11.0


def test_top_larger_than_the_number_of_features_lists_every_feature():
    explanation = Explanation("exact", "something", TERMS)
    rows = top_contributions(explanation, VALUES, feature_names=None, top=DEFAULT_TOP_FEATURES)
    assert DEFAULT_TOP_FEATURES == 5
    assert [len(row) for row in rows] == [4, 4, 4]


def test_median_substitution_shares_are_over_the_absolute_total():
    explanation = Explanation("median_substitution", "something", TERMS)
    rows = top_contributions(explanation, VALUES, feature_names=FEATURES, top=4)
    assert [c["share"] for c in rows[1]] == [4.0 / 6.0, 0.5 / 6.0, 0.5 / 6.0, -1.0 / 6.0]
    assert sum(abs(c["share"]) for c in rows[1]) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("algorithm", [*EXACT, "pca_reconstruction"])
def test_exact_shares_of_a_real_model_sum_to_one(fitted, blobs, algorithm):
    model = fitted(algorithm)
    X = blobs.X_new
    explanation = explain(model, X)
    rows = top_contributions(explanation, X, feature_names=FEATURES, top=4)
    for i, row in enumerate(rows):
        assert sorted(c["feature"] for c in row) == FEATURES
        assert_close(sum(c["share"] for c in row), 1.0)
        assert_close(sum(c["contribution"] for c in row), explanation.terms[i].sum())
        for c in row:
            assert c["value"] == X[i, FEATURES.index(c["feature"])]
    top2 = top_contributions(explanation, X, feature_names=FEATURES, top=2)
    assert [row[:2] for row in rows] == top2


# -- 4. a feature made anomalous on purpose is ranked first --------------------------------------


def shifted_rows(model: FittedModel, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A typical training row (median anomaly score), and that row once per feature with the
    feature moved up by 10 standard deviations."""
    scores = model.anomaly_scores(X)
    normal = X[np.argsort(scores)[len(scores) // 2]]
    rows = np.repeat(normal[None, :], X.shape[1], axis=0)
    rows[np.arange(X.shape[1]), np.arange(X.shape[1])] += 10.0 * X.std(axis=0)
    return normal[None, :], rows


@pytest.mark.parametrize("preprocessing", PREPROCESSING)
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_the_shifted_feature_is_ranked_first(fitted, blobs, algorithm, preprocessing):
    model = fitted(algorithm, preprocessing)
    normal, rows = shifted_rows(model, blobs.X)
    assert np.all(model.anomaly_scores(rows) > model.anomaly_scores(normal))
    explanation = explain(model, rows)
    top = top_contributions(explanation, rows, feature_names=FEATURES, top=1)
    assert [row[0]["feature"] for row in top] == FEATURES, (explanation.method, top)


def test_pca_reconstruction_keeping_one_component_leaves_each_feature_its_residual(fitted):
    # Why the shift test keeps one component: a shift of feature j puts (I - V'V)_jj ** 2 of
    # its squared size on feature j and (I - V'V)_ij ** 2 on feature i, and feature j comes
    # first whenever (I - V'V)_jj > 1/2.
    for preprocessing in ("none", "scaler"):
        V = fitted("pca_reconstruction", preprocessing).estimator.pca_.components_
        assert np.all(np.diag(np.eye(4) - V.T @ V) > 0.5)


def test_pca_reconstruction_blames_where_the_rebuild_fails(fitted, blobs):
    # With two components kept, feature b is mostly captured by them: a shift of b moves the
    # reconstruction, which then misses feature d (a mix of a and b). The exact terms still sum
    # to the score, but the largest is d's, not b's.
    model = fitted("pca_reconstruction", n_components=2)
    V = model.estimator.pca_.components_
    assert (np.eye(4) - V.T @ V)[1, 1] < 0.5
    row = shifted_rows(model, blobs.X)[1][1:2]
    explanation = explain(model, row)
    assert_close(explanation.terms.sum(axis=1), model.anomaly_scores(row))
    assert explanation.terms[0].argmax() == 3


@pytest.mark.parametrize("preprocessing", ["none", "scaler"])
@pytest.mark.parametrize("algorithm", CENTROIDS + INDUCTIVE)
def test_the_new_clusterers_terms_sum_to_the_squared_anomaly_score(
    fitted, blobs, algorithm, preprocessing
):
    model = fitted(algorithm, preprocessing)
    X = blobs.X_new
    explanation = explain(model, X)
    assert explanation.method == "exact"
    what = "centroid" if algorithm in CENTROIDS else "clustered training row"
    assert explanation.decomposes == f"squared distance to the nearest {what}"
    assert np.all(explanation.terms >= 0)
    assert_close(explanation.terms.sum(axis=1), model.anomaly_scores(X) ** 2)


def test_an_inductive_clusterer_of_another_metric_is_explained_by_median_substitution(fitted):
    model = fitted("agglomerative", metric="manhattan", linkage="average")
    assert exact_terms(model, np.zeros((1, 4))) is None
