"""The detectors through the HTTP API: training, score_samples and anomalies against scikit-learn
called directly, explanations, clean-data fits, and every bad input refused with nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from sklearn.covariance import EllipticEnvelope
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.svm import OneClassSVM

from tests.api.contract import (
    assert_error_at,
    assert_problem,
    call,
    stored_state,
    training_body,
)

RTOL = 1e-9
CONTAMINATION = 0.05
FEATURES = ["temperature", "pressure", "vibration"]
DETECTORS = [
    "elliptic_envelope",
    "isolation_forest",
    "local_outlier_factor",
    "one_class_svm",
    "pca_reconstruction",
]
PARAMS: dict[str, dict[str, Any]] = {
    "isolation_forest": {"n_estimators": 50, "random_state": 0},
    "local_outlier_factor": {"n_neighbors": 10},
    "elliptic_envelope": {"random_state": 0},
    "one_class_svm": {"gamma": "scale", "nu": 0.1},
    "pca_reconstruction": {"n_components": 2},
}
SKLEARN: dict[str, Callable[[dict[str, Any]], Any]] = {
    "isolation_forest": lambda p: IsolationForest(**p),
    "local_outlier_factor": lambda p: LocalOutlierFactor(novelty=True, **p),
    "elliptic_envelope": lambda p: EllipticEnvelope(**p),
    "one_class_svm": lambda p: OneClassSVM(**p),
    "pca_reconstruction": lambda p: PCA(**p),
}
OTHER_OPERATIONS = ["predict", "predict_proba", "transform", "score", "sample", "bic", "aic"]


def _parts() -> tuple[np.ndarray, np.ndarray]:
    """150 normal parts in 3 features (two blobs), and rows to score: 8 nudged normal parts and
    2 far away."""
    X, _ = make_blobs(n_samples=150, n_features=3, centers=2, cluster_std=1.0, random_state=3)
    new = np.vstack([X[:8] + 0.013, [[40.0, -40.0, 40.0], [-30.0, 30.0, 0.0]]])
    X.setflags(write=False)
    new.setflags(write=False)
    return X, new


PARTS, NEW = _parts()


@dataclass
class Reference:
    """The detector fitted by scikit-learn directly on the same rows."""

    algorithm: str
    estimator: Any
    X: np.ndarray

    @classmethod
    def fit(cls, algorithm: str, X: np.ndarray = PARTS) -> Reference:
        return cls(algorithm, SKLEARN[algorithm](PARAMS[algorithm]).fit(X), X)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        if self.algorithm == "pca_reconstruction":
            return -self.reconstruction_errors(X).sum(axis=1)
        return self.estimator.score_samples(X)

    def reconstruction_errors(self, X: np.ndarray) -> np.ndarray:
        pca = self.estimator
        return (X - pca.inverse_transform(pca.transform(X))) ** 2

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        return -self.score_samples(X)

    def terms(self, X: np.ndarray) -> np.ndarray:
        """Exact reconstruction errors, or median substitution done by hand."""
        if self.algorithm == "pca_reconstruction":
            return self.reconstruction_errors(X)
        medians = np.median(self.X, axis=0)
        base = self.anomaly_scores(X)
        out = np.empty_like(X)
        for j in range(X.shape[1]):
            substituted = X.copy()
            substituted[:, j] = medians[j]
            out[:, j] = base - self.anomaly_scores(substituted)
        return out


@pytest.fixture(scope="module")
def reference() -> Callable[[str], Reference]:
    references: dict[str, Reference] = {}

    def get(algorithm: str) -> Reference:
        if algorithm not in references:
            references[algorithm] = Reference.fit(algorithm)
        return references[algorithm]

    return get


def detector_body(algorithm: str, **overrides: Any) -> dict[str, Any]:
    return training_body(
        **{
            "name": algorithm.replace("_", "-"),
            "algorithm": algorithm,
            "params": PARAMS[algorithm],
            "data": {"instances": PARTS.tolist()},
            "feature_names": FEATURES,
            "anomaly": {"contamination": CONTAMINATION},
        }
        | overrides
    )


def train_detector(client, algorithm: str, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/models", json=detector_body(algorithm, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), expected, rtol=RTOL, atol=0)


def family_metrics(algorithm: str, estimator: Any) -> dict[str, Any]:
    return {
        "isolation_forest": {"n_estimators": 50},
        "local_outlier_factor": {"n_neighbors": 10, "n_samples_fit": 150},
        "elliptic_envelope": {},
        "one_class_svm": {"n_support_vectors": len(getattr(estimator, "support_vectors_", []))},
        "pca_reconstruction": {"n_components": 2},
    }[algorithm]


# -- 1. training and the catalog ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_detector_trains_and_documents_itself(client, reference, algorithm):
    ref = reference(algorithm)
    doc = train_detector(client, algorithm)
    assert doc["version"] == 1
    assert doc["algorithm"] == algorithm
    assert doc["operations"] == ["score_samples", "anomalies"]
    assert doc["n_samples"] == 150
    assert doc["n_features"] == 3
    assert doc["feature_names"] == FEATURES
    for name, value in PARAMS[algorithm].items():
        assert doc["params"][name] == value
    assert "contamination" not in doc["params"]
    if algorithm == "local_outlier_factor":
        assert doc["params"]["novelty"] is True

    training = ref.anomaly_scores(PARTS)
    metrics = doc["metrics"]
    assert set(metrics) == {
        "anomaly_score_mean",
        "anomaly_score_std",
        "anomaly_score_min",
        "anomaly_score_max",
        *family_metrics(algorithm, ref.estimator),
    }
    assert_close(metrics["anomaly_score_mean"], np.mean(training))
    assert_close(metrics["anomaly_score_std"], np.std(training))
    assert_close(metrics["anomaly_score_min"], np.min(training))
    assert_close(metrics["anomaly_score_max"], np.max(training))
    for key, value in family_metrics(algorithm, ref.estimator).items():
        assert metrics[key] == value

    anomaly = doc["anomaly"]
    threshold = np.quantile(training, 1 - CONTAMINATION)
    assert anomaly["contamination"] == CONTAMINATION
    assert_close(anomaly["threshold"], threshold)
    assert anomaly["score_direction"] == "higher is more anomalous"
    assert anomaly["training_flagged_ratio"] == np.mean(training > anomaly["threshold"])
    quantiles = anomaly["training_score_quantiles"]
    assert list(quantiles) == ["0.01", "0.05", "0.5", "0.95", "0.99"]
    for q, value in quantiles.items():
        assert_close(value, np.quantile(training, float(q)))

    assert client.get(f"/v1/models/{doc['name']}/versions/1").json() == doc
    parameters = client.get(f"/v1/models/{doc['name']}/versions/1/parameters").json()
    assert_close(parameters["parameters"]["anomaly"]["threshold"], threshold)


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_detector_is_in_the_catalog(client, algorithm):
    entry = client.get(f"/v1/algorithms/{algorithm}").json()
    assert entry["family"] == "anomaly"
    assert entry["operations"] == ["score_samples", "anomalies"]
    properties = entry["params_schema"]["properties"]
    assert "contamination" not in properties
    assert "novelty" not in properties
    assert set(PARAMS[algorithm]) <= set(properties)
    assert algorithm in [a["name"] for a in client.get("/v1/algorithms").json()]


# -- 2. score_samples and anomalies equal scikit-learn --------------------------------------------


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_score_samples_equals_sklearn(client, reference, algorithm):
    name = train_detector(client, algorithm)["name"]
    for rows in (NEW, PARTS[:20]):
        response = call(client, name, "score_samples", {"instances": rows.tolist()})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"] == name
        assert answer["version"] == 1
        assert_close(answer["scores"], reference(algorithm).score_samples(rows))


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_anomalies_with_every_threshold_source(client, reference, algorithm):
    ref = reference(algorithm)
    name = train_detector(client, algorithm)["name"]
    training = ref.anomaly_scores(PARTS)
    X = np.vstack([NEW, PARTS[10:14]])
    expected_scores = ref.anomaly_scores(X)
    stored = np.quantile(training, 1 - CONTAMINATION)
    cases = [
        ({}, stored, "stored", CONTAMINATION),
        ({"contamination": 0.0}, np.max(training), "contamination", 0.0),
        ({"contamination": 0.2}, np.quantile(training, 0.8), "contamination", 0.2),
        ({"contamination": 0.5}, np.quantile(training, 0.5), "contamination", 0.5),
        ({"threshold": float(np.median(training))}, np.median(training), "threshold", None),
    ]
    for overrides, threshold, source, contamination in cases:
        response = call(client, name, "anomalies", {"instances": X.tolist()} | overrides)
        assert response.status_code == 200, (overrides, response.text)
        answer = response.json()
        assert_close(answer["anomaly_scores"], expected_scores)
        assert_close(answer["threshold"], threshold)
        assert answer["threshold_source"] == source
        assert answer["contamination"] == contamination
        assert answer["score_direction"] == "higher is more anomalous"
        assert answer["is_anomaly"] == (expected_scores > answer["threshold"]).tolist()
        brute_force = [100.0 * np.mean(training < s) for s in expected_scores]
        np.testing.assert_allclose(answer["percentiles"], brute_force, rtol=RTOL, atol=0)
        assert "contributions" not in answer
        assert "explanation" not in answer
    far = call(client, name, "anomalies", {"instances": NEW[-2:].tolist()}).json()
    assert far["is_anomaly"] == [True, True]


# -- 3. explanations ------------------------------------------------------------------------------


def check_contributions(answer: dict[str, Any], ref: Reference, X: np.ndarray, top: int) -> None:
    method = "exact" if ref.algorithm == "pca_reconstruction" else "median_substitution"
    assert answer["explanation"]["method"] == method
    assert isinstance(answer["explanation"]["decomposes"], str)
    terms = ref.terms(X)
    scale = np.abs(ref.anomaly_scores(X)).max()
    assert len(answer["contributions"]) == len(X)
    for i, row in enumerate(answer["contributions"]):
        assert len(row) == top
        totals = terms[i].sum() if method == "exact" else np.abs(terms[i]).sum()
        for entry in row:
            assert set(entry) == {"feature", "value", "contribution", "share"}
            j = FEATURES.index(entry["feature"])
            assert entry["value"] == X[i, j]
            np.testing.assert_allclose(
                entry["contribution"], terms[i, j], rtol=RTOL, atol=1e-9 * scale
            )
            # A row no single substitution moves (far from everything) has shares of 0.
            share = terms[i, j] / totals if totals else 0.0
            np.testing.assert_allclose(entry["share"], share, rtol=1e-7, atol=1e-9)
        contributions = [entry["contribution"] for entry in row]
        assert contributions == sorted(contributions, reverse=True)
        # The listed features are the row's largest terms.
        listed = sorted(terms[i][[FEATURES.index(e["feature"]) for e in row]])
        assert_close(listed, np.sort(terms[i])[-top:])


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_explain_with_top_features(client, reference, algorithm):
    name = train_detector(client, algorithm)["name"]
    body = {"instances": NEW.tolist(), "explain": True, "top_features": 2}
    response = call(client, name, "anomalies", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    check_contributions(answer, reference(algorithm), NEW, top=2)
    # Explaining changes nothing else in the answer.
    plain = call(client, name, "anomalies", {"instances": NEW.tolist()}).json()
    assert {k: v for k, v in answer.items() if k not in ("explanation", "contributions")} == plain


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_explain_lists_five_features_by_default_clamped_to_the_model_width(
    client, reference, algorithm
):
    name = train_detector(client, algorithm)["name"]
    answer = call(client, name, "anomalies", {"instances": NEW.tolist(), "explain": True}).json()
    check_contributions(answer, reference(algorithm), NEW, top=3)
    if algorithm == "pca_reconstruction":
        for i, row in enumerate(answer["contributions"]):
            assert sum(entry["share"] for entry in row) == pytest.approx(1.0, rel=1e-9)
            assert_close(sum(entry["contribution"] for entry in row), answer["anomaly_scores"][i])


def test_explain_without_feature_names_lists_indices_top_five_of_seven(client):
    X, _ = make_blobs(n_samples=120, n_features=7, centers=2, random_state=5)
    body = detector_body(
        "isolation_forest", name="seven", data={"instances": X.tolist()}, feature_names=None
    )
    assert client.post("/v1/models", json=body).status_code == 201
    rows = X[:3] + 0.5
    answer = call(client, "seven", "anomalies", {"instances": rows.tolist(), "explain": True})
    contributions = answer.json()["contributions"]
    assert [len(row) for row in contributions] == [5, 5, 5]
    for i, row in enumerate(contributions):
        assert all(isinstance(entry["feature"], int) for entry in row)
        assert len({entry["feature"] for entry in row}) == 5
        for entry in row:
            assert entry["value"] == rows[i, entry["feature"]]
    more = {"instances": rows.tolist(), "explain": True, "top_features": 100}
    assert [len(r) for r in call(client, "seven", "anomalies", more).json()["contributions"]] == [
        7,
        7,
        7,
    ]


def test_explain_with_records_names_the_features_and_ranks_the_shifted_one_first(client):
    records = [dict(zip(FEATURES, row, strict=True)) for row in PARTS.tolist()]
    body = detector_body("isolation_forest", name="line", data={"records": records})
    del body["feature_names"]
    doc = client.post("/v1/models", json=body).json()
    assert doc["feature_names"] == FEATURES
    normal = dict(zip(FEATURES, np.median(PARTS, axis=0).tolist(), strict=True))
    std = PARTS.std(axis=0)
    shifted = [normal | {f: normal[f] + 10 * std[j]} for j, f in enumerate(FEATURES)]
    answer = call(
        client, "line", "anomalies", {"records": shifted, "explain": True, "top_features": 1}
    ).json()
    assert [row[0]["feature"] for row in answer["contributions"]] == FEATURES
    assert answer["is_anomaly"] == [True, True, True]


# -- 4. operations a detector does not support ----------------------------------------------------


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_unsupported_operations_are_422(client, settings, algorithm):
    name = train_detector(client, algorithm)["name"]
    before = stored_state(client, settings)
    for operation in OTHER_OPERATIONS:
        body = {"n_samples": 2} if operation == "sample" else {"instances": NEW[:2].tolist()}
        response = call(client, name, operation, body)
        problem = assert_problem(response, 422, "unsupported_operation")
        assert problem["supported"] == ["score_samples", "anomalies"]
        assert f"{algorithm} does not support {operation!r}" in problem["detail"]
    assert stored_state(client, settings) == before


def test_predict_on_isolation_forest_is_unsupported(client):
    train_detector(client, "isolation_forest")
    problem = assert_problem(
        call(client, "isolation-forest", "predict", {"instances": NEW.tolist()}),
        422,
        "unsupported_operation",
    )
    assert "isolation_forest does not support 'predict'" in problem["detail"]


# -- 5. clean-data fits ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_refit_without_outliers_reports_the_dropped_rows(client, reference, algorithm):
    anomaly = {"contamination": CONTAMINATION, "refit_without_outliers": True}
    doc = train_detector(client, algorithm, anomaly=anomaly)
    first = reference(algorithm).anomaly_scores(PARTS)
    keep = first <= np.quantile(first, 1 - CONTAMINATION)
    assert doc["metrics"]["refit_without_outliers"] == {
        "dropped_rows": int(np.sum(~keep)),
        "refit_rows": int(np.sum(keep)),
    }
    assert doc["metrics"]["refit_without_outliers"]["dropped_rows"] == 8
    refitted = Reference.fit(algorithm, PARTS[keep])
    assert_close(doc["anomaly"]["threshold"], np.quantile(refitted.anomaly_scores(PARTS), 0.95))
    assert doc["n_samples"] == 150
    answer = call(client, doc["name"], "score_samples", {"instances": NEW.tolist()}).json()
    assert_close(answer["scores"], refitted.score_samples(NEW))


def test_without_refit_the_metrics_say_nothing_of_it(client):
    doc = train_detector(client, "one_class_svm")
    assert "refit_without_outliers" not in doc["metrics"]


# -- 6. bad input: a problem, and nothing stored -------------------------------------------------


@pytest.fixture
def line(client) -> dict[str, Any]:
    """Version 1 of "line": a PCA reconstruction (the quickest detector to fit) on records with
    named features."""
    records = [dict(zip(FEATURES, row, strict=True)) for row in PARTS.tolist()]
    body = detector_body("pca_reconstruction", name="line", data={"records": records})
    response = client.post("/v1/models", json=body)
    assert response.status_code == 201, response.text
    return response.json()


RECORD = dict(zip(FEATURES, [1.0, 2.0, 3.0], strict=True))

TRAINING_CASES = [
    pytest.param(
        "isolation_forest",
        {"data": {"records": [RECORD, {"temperature": 1.0, "pressure": 2.0, "humidity": 3.0}]}},
        "invalid_input",
        ("body", "data", "records", 1, "vibration"),
        id="records-with-an-unknown-name",
    ),
    pytest.param(
        "isolation_forest",
        {"data": {"records": [RECORD, RECORD | {"humidity": 4.0}]}},
        "invalid_input",
        ("body", "data", "records", 1, "humidity"),
        id="records-with-an-extra-name",
    ),
    pytest.param(
        "isolation_forest",
        {"data": {"records": [RECORD, RECORD]}, "feature_names": ["temperature", "pressure", "x"]},
        "invalid_input",
        ("body", "data", "records", 0, "x"),
        id="records-not-matching-feature-names",
    ),
    *[
        pytest.param(
            "one_class_svm",
            {"anomaly": {"contamination": value}},
            "validation_error",
            ("body", "anomaly", "contamination"),
            id=f"contamination-{value}",
        )
        for value in (0.5000001, 0.6, 1.0, -0.01, True, "0.1")
    ],
    *[
        pytest.param(
            algorithm,
            {"params": PARAMS[algorithm] | {"contamination": 0.1}},
            "invalid_parameter",
            ("body", "params", "contamination"),
            id=f"{algorithm}-params.contamination",
        )
        for algorithm in DETECTORS
    ],
    *[
        pytest.param(
            "local_outlier_factor",
            {"params": {"novelty": value}},
            "invalid_parameter",
            ("body", "params", "novelty"),
            id=f"lof-novelty-{value}",
        )
        for value in (True, False)
    ],
    *[
        pytest.param(
            "isolation_forest",
            {"anomaly": {"contamination": 0.05, "refit_without_outliers": value}},
            "validation_error",
            ("body", "anomaly", "refit_without_outliers"),
            id=f"refit_without_outliers-{value!r}",
        )
        for value in ("yes", "true", 1, None, [True])
    ],
    pytest.param(
        "isolation_forest",
        {"anomaly": {"contamination": 0.05, "refit": True}},
        "validation_error",
        ("body", "anomaly", "refit"),
        id="anomaly-unknown-field",
    ),
    pytest.param(
        "isolation_forest",
        {"params": {"n_jobs": 2}},
        "invalid_parameter",
        ("body", "params", "n_jobs"),
        id="isolation_forest-n_jobs",
    ),
    pytest.param(
        "one_class_svm",
        {"params": {"kernel": "precomputed"}},
        "invalid_parameter",
        ("body", "params", "kernel"),
        id="one_class_svm-precomputed-kernel",
    ),
    pytest.param(
        "one_class_svm",
        {"params": {"cache_size": 4096}},
        "invalid_parameter",
        ("body", "params", "cache_size"),
        id="one_class_svm-cache_size",
    ),
    pytest.param(
        "local_outlier_factor",
        {"params": {"metric": "precomputed"}},
        "invalid_parameter",
        ("body", "params", "metric"),
        id="lof-precomputed-metric",
    ),
    *[
        pytest.param(
            "pca_reconstruction",
            {"params": {"n_components": value}},
            "invalid_parameter",
            ("body", "params", "n_components"),
            id=f"pca_reconstruction-n_components-{value!r}",
        )
        for value in (0, 1.0, 1.5, -2, True, "all")
    ],
    pytest.param(
        "pca_reconstruction",
        {"params": {"n_components": 4}},
        "training_failed",
        None,
        id="pca_reconstruction-more-components-than-features",
    ),
]


@pytest.mark.parametrize(("algorithm", "overrides", "code", "loc"), TRAINING_CASES)
def test_bad_detector_training_is_refused_and_stores_nothing(
    client, settings, line, algorithm, overrides, code, loc
):
    before = stored_state(client, settings)
    for name in ("line", "fresh"):
        response = client.post("/v1/models", json=detector_body(algorithm, name=name, **overrides))
        problem = assert_problem(response, 422, code)
        if loc is not None:
            assert_error_at(problem, *loc)
        assert stored_state(client, settings) == before
    assert_problem(client.get("/v1/models/fresh"), 404, "model_not_found")


INFERENCE_CASES = [
    pytest.param(
        "anomalies",
        {"records": [{"temperature": 1.0, "pressure": 2.0, "humidity": 3.0}]},
        "invalid_input",
        ("body", "records", 0, "vibration"),
        id="records-with-an-unknown-name",
    ),
    pytest.param(
        "score_samples",
        {"records": [RECORD, RECORD | {"humidity": 3.0}]},
        "invalid_input",
        ("body", "records", 1, "humidity"),
        id="records-with-an-extra-name",
    ),
    pytest.param(
        "anomalies",
        {"instances": [[1.0, 2.0]]},
        "invalid_input",
        ("body", "instances", 0),
        id="instances-too-narrow",
    ),
    *[
        pytest.param(
            "anomalies",
            {"instances": [[1.0, 2.0, 3.0]], "contamination": value},
            "validation_error",
            ("body", "contamination"),
            id=f"contamination-{value!r}",
        )
        for value in (0.51, -0.1, 1.0, True, "0.1")
    ],
    pytest.param(
        "anomalies",
        {"instances": [[1.0, 2.0, 3.0]], "contamination": 0.1, "threshold": 0.5},
        "validation_error",
        ("body",),
        id="contamination-and-threshold",
    ),
    pytest.param(
        "anomalies",
        {"instances": [[1.0, 2.0, 3.0]], "top_features": 2},
        "validation_error",
        ("body",),
        id="top_features-without-explain",
    ),
    pytest.param(
        "anomalies",
        {"instances": [[1.0, 2.0, 3.0]], "explain": False, "top_features": 2},
        "validation_error",
        ("body",),
        id="top_features-with-explain-false",
    ),
    *[
        pytest.param(
            "anomalies",
            {"instances": [[1.0, 2.0, 3.0]], "explain": True, "top_features": value},
            "validation_error",
            ("body", "top_features"),
            id=f"top_features-{value!r}",
        )
        for value in (0, -1, 10_001, 2.5, "3", True)
    ],
    *[
        pytest.param(
            "anomalies",
            {"instances": [[1.0, 2.0, 3.0]], "explain": value},
            "validation_error",
            ("body", "explain"),
            id=f"explain-{value!r}",
        )
        for value in ("yes", 1, None)
    ],
    *[
        pytest.param(
            operation,
            {"instances": [[1.0, 2.0, 3.0]], "explain": True},
            "validation_error",
            ("body", "explain"),
            id=f"explain-on-{operation}",
        )
        for operation in ("score_samples", "predict")
    ],
]


@pytest.mark.parametrize(("operation", "body", "code", "loc"), INFERENCE_CASES)
def test_bad_detector_inference_is_refused_and_changes_nothing(
    client, settings, line, operation, body, code, loc
):
    before = stored_state(client, settings)
    for version in (None, 1, "latest"):
        problem = assert_problem(call(client, "line", operation, body, version), 422, code)
        assert_error_at(problem, *loc)
    assert stored_state(client, settings) == before
