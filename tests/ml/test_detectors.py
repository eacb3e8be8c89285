"""The detectors, clean-data refits and every algorithm's anomaly summary, against scikit-learn
called directly on the same data."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.cluster import KMeans
from sklearn.covariance import EllipticEnvelope
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM
from sklearn.utils.estimator_checks import check_estimator

from app.ml.anomaly import SUMMARY_QUANTILES
from app.ml.catalog import ALGORITHMS
from app.ml.exceptions import HyperparameterError
from app.ml.fitting import FitResult, fit_model
from app.ml.pca_reconstruction import PCAReconstruction

CONTAMINATION = 0.05
FEATURES = ["a", "b", "c", "d"]
DETECTORS = sorted(a for a in ALGORITHMS if ALGORITHMS[a].family == "anomaly")

# Every algorithm of the catalog, with hyperparameters that fit the blobs quickly.
PARAMS: dict[str, dict[str, Any]] = {
    "kmeans": {"n_clusters": 3, "random_state": 0},
    "minibatch_kmeans": {"n_clusters": 3, "batch_size": 64, "random_state": 0},
    "dbscan": {"eps": 1.2, "min_samples": 5},
    "gaussian_mixture": {"n_components": 3, "random_state": 0},
    "bayesian_gaussian_mixture": {"n_components": 5, "max_iter": 500, "random_state": 0},
    "isolation_forest": {"n_estimators": 50, "random_state": 0},
    "local_outlier_factor": {"n_neighbors": 15},
    "elliptic_envelope": {"random_state": 0},
    "one_class_svm": {"gamma": "scale", "nu": 0.1},
    "pca_reconstruction": {"n_components": 2},
    "birch": {"n_clusters": 3},
    "mean_shift": {},
    "affinity_propagation": {"random_state": 0},
    "agglomerative": {"n_clusters": 3},
    "spectral": {"n_clusters": 3, "random_state": 0},
    "hdbscan": {"min_cluster_size": 10},
}
# Their stored threshold is their noise boundary, not a quantile (tests/ml/test_noise_agreement).
INDUCTIVE = {"dbscan", "agglomerative", "spectral", "hdbscan"}

# The preprocessing a client posts, and the same steps built by hand with scikit-learn.
PREPROCESSING: dict[str, tuple[list[dict[str, Any]], Callable[[], list[BaseEstimator]]]] = {
    "none": ([], list),
    "scaler": ([{"step": "standard_scaler"}], lambda: [StandardScaler()]),
    "scaler_pca": (
        [{"step": "standard_scaler"}, {"step": "pca", "n_components": 0.99, "whiten": True}],
        lambda: [StandardScaler(), PCA(n_components=0.99, whiten=True)],
    ),
}

# The scikit-learn estimator each entry stands for; pca_reconstruction is checked against a plain
# PCA, its reconstruction error computed here by hand.
SKLEARN: dict[str, Callable[[dict[str, Any]], BaseEstimator]] = {
    "isolation_forest": lambda p: IsolationForest(**p),
    "local_outlier_factor": lambda p: LocalOutlierFactor(novelty=True, **p),
    "elliptic_envelope": lambda p: EllipticEnvelope(**p),
    "one_class_svm": lambda p: OneClassSVM(**p),
    "pca_reconstruction": lambda p: PCA(**p),
    "kmeans": lambda p: KMeans(**p),
    "gaussian_mixture": lambda p: GaussianMixture(**p),
}


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=0)


@dataclass
class Reference:
    """One training done with scikit-learn directly: the preprocessing steps fitted on the rows,
    then the estimator fitted on what they output."""

    algorithm: str
    preprocessor: Pipeline | None
    estimator: BaseEstimator

    @classmethod
    def fit(cls, algorithm: str, preprocessing: str, X: np.ndarray) -> Reference:
        steps = PREPROCESSING[preprocessing][1]()
        preprocessor = make_pipeline(*steps) if steps else None
        Xt = preprocessor.fit_transform(X) if preprocessor is not None else X
        estimator = SKLEARN[algorithm](PARAMS[algorithm]).fit(Xt)
        return cls(algorithm, preprocessor, estimator)

    def model_space(self, X: np.ndarray) -> np.ndarray:
        return self.preprocessor.transform(X) if self.preprocessor is not None else X

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's sign: lower is more abnormal."""
        Xt = self.model_space(X)
        if self.algorithm == "pca_reconstruction":
            pca = self.estimator
            return -np.sum((Xt - pca.inverse_transform(pca.transform(Xt))) ** 2, axis=1)
        return self.estimator.score_samples(Xt)

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        """The service's sign: higher is more anomalous."""
        if self.algorithm == "kmeans":
            return self.estimator.transform(self.model_space(X)).min(axis=1)
        return -self.score_samples(X)


def fit(
    algorithm: str,
    X: np.ndarray,
    preprocessing: str = "none",
    *,
    contamination: float = CONTAMINATION,
    refit_without_outliers: bool = False,
) -> FitResult:
    return fit_model(
        algorithm=ALGORITHMS[algorithm],
        params=PARAMS[algorithm],
        preprocessing=PREPROCESSING[preprocessing][0],
        X=X,
        feature_names=FEATURES,
        contamination=contamination,
        refit_without_outliers=refit_without_outliers,
    )


@dataclass
class Case:
    result: FitResult
    reference: Reference | None  # None for the algorithms only their summary is tested for


@pytest.fixture(scope="module")
def fitted(blobs) -> Callable[[str, str], Case]:
    """fit_model and its scikit-learn reference, fitted once per (algorithm, preprocessing)."""
    cases: dict[tuple[str, str], Case] = {}

    def get(algorithm: str, preprocessing: str = "none") -> Case:
        if (algorithm, preprocessing) not in cases:
            cases[algorithm, preprocessing] = Case(
                fit(algorithm, blobs.X, preprocessing),
                Reference.fit(algorithm, preprocessing, blobs.X) if algorithm in SKLEARN else None,
            )
        return cases[algorithm, preprocessing]

    return get


DETECTOR_CASES = [(d, p) for d in DETECTORS for p in PREPROCESSING]


def test_the_catalog_has_the_five_detectors():
    assert DETECTORS == [
        "elliptic_envelope",
        "isolation_forest",
        "local_outlier_factor",
        "one_class_svm",
        "pca_reconstruction",
    ]
    for name in DETECTORS:
        assert ALGORITHMS[name].operations == ("score_samples", "anomalies")


# -- 1. scores, thresholds and percentiles equal scikit-learn's ----------------------------------


@pytest.mark.parametrize(("algorithm", "preprocessing"), DETECTOR_CASES)
def test_score_samples_equal_sklearn(fitted, blobs, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    model, reference = case.result.model, case.reference
    for X in (blobs.X_new, blobs.X):
        assert_close(model.score_samples(X), reference.score_samples(X))
    if reference.preprocessor is not None:
        assert_close(model.model_space(blobs.X_new), reference.model_space(blobs.X_new))


@pytest.mark.parametrize(("algorithm", "preprocessing"), DETECTOR_CASES)
def test_anomaly_scores_are_minus_score_samples(fitted, blobs, algorithm, preprocessing):
    model = fitted(algorithm, preprocessing).result.model
    for X in (blobs.X_new, blobs.X):
        np.testing.assert_array_equal(model.anomaly_scores(X), -model.score_samples(X))


@pytest.mark.parametrize(("algorithm", "preprocessing"), DETECTOR_CASES)
def test_threshold_and_percentiles_equal_the_training_distribution(
    fitted, blobs, algorithm, preprocessing
):
    case = fitted(algorithm, preprocessing)
    model, reference = case.result.model, case.reference
    training = reference.anomaly_scores(blobs.X)
    assert_close(model.anomaly.threshold, np.quantile(training, 1.0 - CONTAMINATION))
    assert model.anomaly.contamination == CONTAMINATION
    assert model.anomaly.n_training == len(blobs.X)

    # New rows, and training rows themselves (a training row is not below itself).
    X = np.vstack([blobs.X_new, blobs.X[:20]])
    scores = model.anomaly_scores(X)
    expected = reference.anomaly_scores(X)
    brute_force = np.array([100.0 * np.mean(training < s) for s in expected])
    np.testing.assert_allclose(model.anomaly.percentiles(scores), brute_force, rtol=1e-9, atol=0)
    # The three far-away rows at the end of X_new are anomalies.
    far = scores[len(blobs.X_new) - 3 : len(blobs.X_new)]
    assert np.all(far > model.anomaly.threshold), far


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_contamination_override_threshold_is_the_quantile(fitted, blobs, algorithm):
    model, reference = fitted(algorithm).result.model, fitted(algorithm).reference
    training = reference.anomaly_scores(blobs.X)
    for contamination in (0.0, 0.01, 0.1, 0.5):
        assert_close(
            model.anomaly.threshold_for(contamination),
            np.quantile(training, 1.0 - contamination),
        )


@pytest.mark.parametrize(("algorithm", "preprocessing"), DETECTOR_CASES)
def test_detector_metrics_describe_the_training_scores(fitted, blobs, algorithm, preprocessing):
    case = fitted(algorithm, preprocessing)
    metrics, reference = case.result.metrics, case.reference
    training = reference.anomaly_scores(blobs.X)
    assert_close(metrics["anomaly_score_mean"], np.mean(training))
    assert_close(metrics["anomaly_score_std"], np.std(training))
    assert_close(metrics["anomaly_score_min"], np.min(training))
    assert_close(metrics["anomaly_score_max"], np.max(training))
    estimator = reference.estimator
    expected = {
        "isolation_forest": {"n_estimators": 50},
        "local_outlier_factor": {"n_neighbors": 15, "n_samples_fit": 300},
        "elliptic_envelope": {},
        "one_class_svm": {"n_support_vectors": len(getattr(estimator, "support_vectors_", []))},
        "pca_reconstruction": {"n_components": 2},
    }[algorithm]
    assert {k: v for k, v in metrics.items() if k.startswith("n_")} == expected
    json.dumps(metrics, allow_nan=False)


# -- 2. hyperparameters -----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_contamination_param_is_refused(blobs, algorithm):
    with pytest.raises(HyperparameterError, match=r"anomaly\.contamination") as caught:
        fit_model(
            algorithm=ALGORITHMS[algorithm],
            params={"contamination": 0.1},
            preprocessing=[],
            X=blobs.X,
            feature_names=None,
            contamination=CONTAMINATION,
        )
    assert caught.value.parameter == "contamination"


@pytest.mark.parametrize("novelty", [True, False])
def test_novelty_param_is_refused_for_lof(blobs, novelty):
    with pytest.raises(HyperparameterError, match="novelty mode") as caught:
        fit_model(
            algorithm=ALGORITHMS["local_outlier_factor"],
            params={"n_neighbors": 5, "novelty": novelty},
            preprocessing=[],
            X=blobs.X,
            feature_names=None,
            contamination=CONTAMINATION,
        )
    assert caught.value.parameter == "novelty"


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_resolved_params_are_every_hyperparameter_but_contamination(fitted, algorithm):
    result = fitted(algorithm).result
    spec = ALGORITHMS[algorithm]
    assert "contamination" not in result.params
    estimator = result.model.estimator
    expected = {k: v for k, v in estimator.get_params(deep=False).items() if k not in spec.refused}
    assert result.params == json.loads(json.dumps(expected))
    for name, value in PARAMS[algorithm].items():
        assert result.params[name] == value
    if algorithm == "local_outlier_factor":
        assert result.params["novelty"] is True
        assert estimator.novelty is True


# -- 3. PCAReconstruction is a scikit-learn estimator ----------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_pca_reconstruction_passes_sklearn_estimator_checks():
    results = check_estimator(PCAReconstruction(), on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert failed == []
    assert sum(r["status"] == "passed" for r in results) >= 30


def test_pca_reconstruction_clone_and_params():
    est = PCAReconstruction(n_components=3, svd_solver="full", random_state=7)
    twin = clone(est)
    assert twin is not est
    assert twin.get_params() == {"n_components": 3, "svd_solver": "full", "random_state": 7}
    assert PCAReconstruction().get_params() == {
        "n_components": 0.95,
        "svd_solver": "auto",
        "random_state": None,
    }


def test_pca_reconstruction_clone_of_a_fitted_one_is_unfitted(blobs):
    est = PCAReconstruction(n_components=2).fit(blobs.X)
    twin = clone(est)
    assert not hasattr(twin, "pca_")
    with pytest.raises(NotFittedError):
        twin.score_samples(blobs.X_new)


def test_pca_reconstruction_pickles(blobs):
    est = PCAReconstruction(n_components=2).fit(blobs.X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.score_samples(blobs.X_new), est.score_samples(blobs.X_new))
    assert again.n_components_ == 2


@pytest.mark.parametrize("method", ["score_samples", "reconstruction_errors"])
def test_pca_reconstruction_refuses_to_score_before_fit(blobs, method):
    with pytest.raises(NotFittedError):
        getattr(PCAReconstruction(), method)(blobs.X_new)


@pytest.mark.parametrize("method", ["score_samples", "reconstruction_errors"])
@pytest.mark.parametrize("width", [3, 5])
def test_pca_reconstruction_refuses_a_wrong_width(blobs, method, width):
    est = PCAReconstruction(n_components=2).fit(blobs.X)
    with pytest.raises(ValueError, match="features"):
        getattr(est, method)(np.ones((2, width)))


@pytest.mark.parametrize("n_components", [1, 2, 3, 0.5, 0.9, 0.999])
def test_pca_reconstruction_equals_pca_for_int_and_float_n_components(blobs, n_components):
    est = PCAReconstruction(n_components=n_components)
    assert est.fit(blobs.X) is est
    pca = PCA(n_components=n_components).fit(blobs.X)
    assert est.n_components_ == pca.n_components_
    assert isinstance(est.n_components_, int)
    if isinstance(n_components, int):
        assert est.n_components_ == n_components
    else:
        assert 1 <= est.n_components_ <= 4
        assert np.sum(pca.explained_variance_ratio_) >= n_components
    assert est.n_features_in_ == 4
    X = blobs.X_new
    rebuilt = pca.inverse_transform(pca.transform(X))
    assert_close(est.score_samples(X), -np.sum((X - rebuilt) ** 2, axis=1))
    errors = est.reconstruction_errors(X)
    assert errors.shape == X.shape
    assert np.all(errors >= 0)
    assert_close(errors, (X - rebuilt) ** 2)
    assert_close(errors.sum(axis=1), -est.score_samples(X))


def test_pca_reconstruction_float_n_components_keeps_fewer_components(blobs):
    # The 4th feature is nearly a mix of the first two: 0.99 of the variance needs 3 components.
    assert PCAReconstruction(n_components=0.99).fit(blobs.X).n_components_ == 3
    assert PCAReconstruction(n_components=0.5).fit(blobs.X).n_components_ == 1


def test_pca_reconstruction_keeping_every_component_rebuilds_exactly(blobs):
    est = PCAReconstruction(n_components=4).fit(blobs.X)
    np.testing.assert_allclose(est.score_samples(blobs.X_new), 0.0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_components", [0, -1, 1.0, 1.5, 0.0, "two", None])
def test_pca_reconstruction_refuses_bad_n_components(blobs, n_components):
    with pytest.raises(ValueError, match="n_components"):
        PCAReconstruction(n_components=n_components).fit(blobs.X)


def test_pca_reconstruction_with_more_components_than_features_fails_to_fit(blobs):
    with pytest.raises(ValueError, match="n_components=5"):
        PCAReconstruction(n_components=5).fit(blobs.X)


# -- 4. clean-data fits ---------------------------------------------------------------------------

REFIT_ALGORITHMS = [*DETECTORS, "kmeans", "gaussian_mixture"]


@pytest.mark.parametrize("preprocessing", ["none", "scaler_pca"])
@pytest.mark.parametrize("algorithm", REFIT_ALGORITHMS)
def test_refit_without_outliers_equals_sklearn_on_the_kept_rows(blobs, algorithm, preprocessing):
    X = blobs.X
    result = fit(algorithm, X, preprocessing, refit_without_outliers=True)
    model = result.model

    first = Reference.fit(algorithm, preprocessing, X)
    first_scores = first.anomaly_scores(X)
    first_threshold = np.quantile(first_scores, 1.0 - CONTAMINATION)
    keep = first_scores <= first_threshold
    assert 0 < np.sum(~keep) < len(X)
    refitted = Reference.fit(algorithm, preprocessing, X[keep])

    for rows in (blobs.X_new, X):
        assert_close(model.anomaly_scores(rows), refitted.anomaly_scores(rows))
        if algorithm in DETECTORS or algorithm == "gaussian_mixture":
            assert_close(model.score_samples(rows), refitted.score_samples(rows))
    assert result.metrics["refit_without_outliers"] == {
        "dropped_rows": int(np.sum(~keep)),
        "refit_rows": int(np.sum(keep)),
    }
    # The training medians are those of the rows refitted on, bit for bit.
    assert model.training_medians.tobytes() == np.median(X[keep], axis=0).tobytes()
    # The threshold is drawn from the refitted model's scores on every posted row.
    all_rows = refitted.anomaly_scores(X)
    assert_close(model.anomaly.threshold, np.quantile(all_rows, 1.0 - CONTAMINATION))
    assert model.anomaly.n_training == len(X)
    assert_close(
        model.anomaly.summary["training_flagged_ratio"],
        np.mean(all_rows > model.anomaly.threshold),
    )
    # ... and not from the scores of the rows it was refitted on.
    assert model.anomaly.threshold != pytest.approx(
        np.quantile(refitted.anomaly_scores(X[keep]), 1.0 - CONTAMINATION), rel=1e-9
    )


@pytest.mark.parametrize("algorithm", ["isolation_forest", "kmeans"])
def test_refit_with_nothing_to_drop_is_the_plain_fit(fitted, blobs, algorithm):
    result = fit(algorithm, blobs.X, contamination=0.0, refit_without_outliers=True)
    assert result.metrics["refit_without_outliers"] == {"dropped_rows": 0, "refit_rows": 300}
    reference = fitted(algorithm).reference
    assert_close(result.model.anomaly_scores(blobs.X_new), reference.anomaly_scores(blobs.X_new))
    assert result.model.anomaly.threshold == np.max(reference.anomaly_scores(blobs.X))


@pytest.mark.parametrize("algorithm", ["one_class_svm", "kmeans"])
def test_no_refit_reports_no_refit(fitted, algorithm):
    assert "refit_without_outliers" not in fitted(algorithm).result.metrics


# -- 5. the anomaly summary of every algorithm ----------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_anomaly_summary_of_every_algorithm(fitted, blobs, algorithm):
    model = fitted(algorithm).result.model
    summary = model.anomaly.summary
    scores = model.training_anomaly_scores(model.model_space(blobs.X))
    if algorithm in INDUCTIVE:
        threshold = model.estimator.max_distance_
        assert summary["contamination"] == np.mean(scores > threshold)
        assert summary["threshold_rule"].startswith("max_distance")
    else:
        np.testing.assert_array_equal(scores, model.anomaly_scores(blobs.X))
        threshold = np.quantile(scores, 1.0 - CONTAMINATION)
        assert summary["contamination"] == CONTAMINATION
        assert 0.0 < summary["training_flagged_ratio"] <= CONTAMINATION
        assert "threshold_rule" not in summary
    assert_close(summary["threshold"], threshold)
    assert summary["threshold"] == model.anomaly.threshold
    assert summary["training_flagged_ratio"] == np.mean(scores > summary["threshold"])
    assert summary["score_direction"] == "higher is more anomalous"
    quantiles = summary["training_score_quantiles"]
    assert list(quantiles) == ["0.01", "0.05", "0.5", "0.95", "0.99"]
    assert SUMMARY_QUANTILES == (0.01, 0.05, 0.5, 0.95, 0.99)
    for q in SUMMARY_QUANTILES:
        assert_close(quantiles[f"{q:g}"], np.quantile(scores, q))
    values = list(quantiles.values())
    assert values == sorted(values)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
