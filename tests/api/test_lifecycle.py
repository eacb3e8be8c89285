"""Each algorithm, with and without preprocessing, from training through every operation at every
kind of address, against scikit-learn called directly on the same data and parameters."""

from __future__ import annotations

import hashlib
import re
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose

from tests.api.contract import (
    ALL_OPERATIONS,
    CASES,
    OPERATIONS,
    PLAIN_CASES,
    REFUSED_FOR,
    SERVER_REFUSED,
    Case,
    artifacts_folder,
    assert_problem,
    call,
    case_body,
    new_rows,
    store_files,
    train,
)
from tests.api.reference import RTOL, Reference, assert_same

CONTAMINATION = 0.1
VERSION_KEYS = {
    "name",
    "version",
    "aliases",
    "algorithm",
    "params",
    "preprocessing",
    "feature_names",
    "n_samples",
    "n_features",
    "metrics",
    "anomaly",
    "operations",
    "artifact",
    "library_versions",
    "serving_library_versions",
    "version_drift",
    "training_seconds",
    "created_at",
    "description",
    "tags",
}
# Every address of one version: the latest route, its number, an alias and `latest`.
ADDRESSES = [None, 1, "production", "latest"]


def body_for(case: Case) -> dict[str, Any]:
    return case_body(
        case,
        anomaly={"contamination": CONTAMINATION},
        feature_names=[f"f{i}" for i in range(case.X.shape[1])],
        description=f"{case.id} on {len(case.X)} rows",
        tags={"case": case.id, "suite": "api"},
    )


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture
def reference(case: Case, fitted) -> Reference:
    return fitted(case)


@pytest.fixture
def trained(client, case: Case) -> dict[str, Any]:
    """The 201 response of training ``case``: its headers and version document."""
    started = datetime.now(UTC)
    response = client.post("/v1/models", json=body_for(case))
    assert response.status_code == 201, response.text
    return {"response": response, "doc": response.json(), "started": started}


def operation_body(operation: str, X: np.ndarray) -> dict[str, Any]:
    if operation == "sample":
        return {"n_samples": 6, "random_state": 0}
    return {"instances": X.tolist()}


# -- the version document -----------------------------------------------------------------------
def test_training_answers_201_with_the_full_version_document(
    client, settings, case, reference, trained
):
    doc, response = trained["doc"], trained["response"]
    name = case.algorithm.replace("_", "-")
    assert set(doc) == VERSION_KEYS
    assert response.headers["location"] == f"/v1/models/{name}/versions/1"
    assert client.get(response.headers["location"]).json() == doc

    body = body_for(case)
    assert (doc["name"], doc["version"], doc["aliases"]) == (name, 1, [])
    assert doc["algorithm"] == case.algorithm
    assert doc["feature_names"] == body["feature_names"]
    assert (doc["n_samples"], doc["n_features"]) == case.X.shape
    assert doc["operations"] == OPERATIONS[case.algorithm]
    assert doc["description"] == body["description"]
    assert doc["tags"] == body["tags"]
    assert [step["step"] for step in doc["preprocessing"]] == [
        step["step"] for step in case.preprocessing
    ]
    for sent, stored in zip(case.preprocessing, doc["preprocessing"], strict=True):
        assert stored.items() >= sent.items()

    # Every resolved hyperparameter: scikit-learn's own get_params, less the server's.
    refused = SERVER_REFUSED | REFUSED_FOR.get(case.algorithm, set())
    expected_params = {
        k: v for k, v in reference.estimator.get_params(deep=False).items() if k not in refused
    }
    assert doc["params"] == expected_params

    assert doc["library_versions"]["scikit-learn"] == sklearn.__version__
    assert doc["library_versions"]["numpy"] == np.__version__
    assert isinstance(doc["training_seconds"], float)
    assert doc["training_seconds"] >= 0
    created = datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None
    assert trained["started"] - timedelta(seconds=5) <= created <= datetime.now(UTC)

    # The artifact: the one file in the store, with the recorded sha256 and size.
    assert re.fullmatch(r"[0-9a-f]{64}", doc["artifact"]["sha256"])
    (file_name,) = store_files(settings)
    data = (artifacts_folder(settings) / file_name).read_bytes()
    assert doc["artifact"] == {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


def test_training_metrics_equal_scikit_learn_by_family(case, reference, trained):
    metrics = dict(trained["doc"]["metrics"])
    metrics.pop("warnings", None)  # convergence warnings, when scikit-learn gave any
    expected = reference.metrics()
    assert set(metrics) == set(expected)
    assert_same(metrics, expected)


def test_training_metrics_of_dbscan_are_those_of_sklearn_dbscan(client, fitted):
    """DBSCANKNN's training labels are DBSCAN's own, and so are the reported counts."""
    (case,) = [c for c in PLAIN_CASES if c.algorithm == "dbscan"]
    reference = fitted(case)
    dbscan = reference.sklearn_dbscan()
    assert reference.estimator.labels_.tolist() == dbscan.labels_.tolist()
    assert reference.estimator.core_sample_indices_.tolist() == dbscan.core_sample_indices_.tolist()
    doc = train(client, **body_for(case))
    labels = dbscan.labels_
    assert doc["metrics"]["n_core_samples"] == len(dbscan.core_sample_indices_)
    assert doc["metrics"]["n_clusters"] == len(set(labels.tolist()) - {-1})
    assert doc["metrics"]["noise_ratio"] == pytest.approx(np.mean(labels == -1), rel=RTOL)
    assert doc["metrics"]["cluster_sizes"] == np.bincount(labels[labels >= 0]).tolist()
    # The core samples keep their DBSCAN cluster when predicted.
    core = case.X[dbscan.core_sample_indices_]
    predicted = client.post("/v1/models/dbscan/predict", json={"instances": core.tolist()})
    assert predicted.json()["labels"] == labels[dbscan.core_sample_indices_].tolist()


def test_stored_anomaly_threshold_is_the_training_quantile(case, reference, trained):
    """... or, for the inductive clusterers, their noise boundary (max_distance), the
    contamination then the share of training rows beyond it."""
    anomaly = trained["doc"]["anomaly"]
    scores = reference.training_scores
    assert anomaly["contamination"] == pytest.approx(
        reference.stored_contamination(CONTAMINATION), rel=RTOL, abs=0
    )
    assert anomaly["score_direction"] == "higher is more anomalous"
    assert anomaly["threshold"] == pytest.approx(
        reference.stored_threshold(CONTAMINATION), rel=RTOL, abs=0
    )
    assert ("threshold_rule" in anomaly) == reference.inductive
    quantiles = anomaly["training_score_quantiles"]
    assert set(quantiles) == {"0.01", "0.05", "0.5", "0.95", "0.99"}
    for level, value in quantiles.items():
        assert value == pytest.approx(np.quantile(scores, float(level)), rel=RTOL, abs=0)


# -- listing and inspection ---------------------------------------------------------------------
def test_list_and_inspect_show_the_version(client, case, trained):
    doc = trained["doc"]
    name = doc["name"]
    page = client.get("/v1/models").json()
    assert page["total"] == 1
    assert (page["offset"], page["limit"]) == (0, 50)
    (model,) = page["items"]
    assert model["name"] == name
    assert (model["latest_version"], model["n_versions"]) == (1, 1)
    assert model["algorithm"] == case.algorithm
    assert model["aliases"] == {}
    assert client.get(f"/v1/models/{name}").json() == model

    versions = client.get(f"/v1/models/{name}/versions").json()
    assert versions["total"] == 1
    assert versions["items"] == [doc]
    for ref in (1, "latest"):
        assert client.get(f"/v1/models/{name}/versions/{ref}").json() == doc


# -- operations ---------------------------------------------------------------------------------
def test_every_operation_equals_scikit_learn_at_every_address(client, case, reference, trained):
    name = trained["doc"]["name"]
    aliased = client.put(f"/v1/models/{name}/aliases/production", json={"version": 1})
    assert aliased.status_code == 200, aliased.text
    assert aliased.json()["aliases"] == ["production"]
    X = new_rows(case.X)
    for operation in case.operations:
        body = operation_body(operation, X)
        expected = reference.answer(operation, body, stored_contamination=CONTAMINATION)
        for version in ADDRESSES:
            response = call(client, name, operation, body, version)
            assert response.status_code == 200, (operation, version, response.text)
            answer = response.json()
            assert (answer["model"], answer["version"]) == (name, 1)
            assert_same(answer, expected)


@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_criteria_on_the_training_set_and_on_posted_rows(client, fitted, criterion):
    (case,) = [c for c in CASES if c.algorithm == "gaussian_mixture" and c.preprocessing]
    reference = fitted(case)
    name = train(client, **body_for(case))["name"]
    training_value = getattr(reference.estimator, criterion)(reference.training_model_space)

    no_body = call(client, name, criterion, None)
    assert no_body.status_code == 200, no_body.text
    assert no_body.json()[criterion] == pytest.approx(training_value, rel=RTOL, abs=0)
    assert no_body.json()["n_samples"] == len(case.X)

    X = new_rows(case.X)
    posted = call(client, name, criterion, {"instances": X.tolist()}).json()
    expected = getattr(reference.estimator, criterion)(reference.model_space(X))
    assert posted[criterion] == pytest.approx(expected, rel=RTOL, abs=0)
    assert posted["n_samples"] == len(X)


@pytest.mark.parametrize("algorithm", ["gaussian_mixture", "bayesian_gaussian_mixture"])
def test_sample_is_drawn_in_the_original_feature_space(client, fitted, algorithm):
    (case,) = [c for c in CASES if c.algorithm == algorithm and c.preprocessing]
    reference = fitted(case)
    name = train(client, **body_for(case))["name"]
    drawn = deepcopy(reference.estimator).set_params(random_state=7).sample(25)
    answer = call(client, name, "sample", {"n_samples": 25, "random_state": 7}).json()
    assert np.asarray(answer["instances"]).shape == (25, case.X.shape[1])
    assert answer["components"] == drawn[1].tolist()
    assert_allclose(
        answer["instances"], reference.preprocessor.inverse_transform(drawn[0]), rtol=RTOL, atol=0
    )
    # The same seed draws the same rows; no body draws one row.
    again = call(client, name, "sample", {"n_samples": 25, "random_state": 7}).json()
    assert again["instances"] == answer["instances"]
    one = call(client, name, "sample", None)
    assert one.status_code == 200, one.text
    assert np.asarray(one.json()["instances"]).shape == (1, case.X.shape[1])


def unsupported_pairs() -> list[tuple[str, str]]:
    return [
        (algorithm, operation)
        for algorithm, supported in OPERATIONS.items()
        for operation in ALL_OPERATIONS
        if operation not in supported
    ]


@pytest.mark.parametrize(("algorithm", "operation"), unsupported_pairs())
def test_unsupported_operation_is_422_with_the_supported_list(client, algorithm, operation):
    case = next(c for c in PLAIN_CASES if c.algorithm == algorithm)
    train(client, **case_body(case, name="m"))
    body = {"n_samples": 2} if operation == "sample" else {"instances": case.X[:3].tolist()}
    for version in (None, 1):
        problem = assert_problem(
            call(client, "m", operation, body, version), 422, "unsupported_operation"
        )
        assert problem["supported"] == OPERATIONS[algorithm]
        assert operation in problem["detail"]


# -- fitted parameters --------------------------------------------------------------------------
def test_parameters_are_the_fitted_attributes(client, case, reference, trained):
    name = trained["doc"]["name"]
    response = client.get(f"/v1/models/{name}/versions/latest/parameters")
    assert response.status_code == 200, response.text
    out = response.json()
    assert (out["model"], out["version"], out["algorithm"]) == (name, 1, case.algorithm)
    params, est = out["parameters"], reference.estimator
    if case.algorithm in ("kmeans", "minibatch_kmeans"):
        assert params["n_clusters"] == len(est.cluster_centers_)
        assert_allclose(params["cluster_centers"], est.cluster_centers_, rtol=RTOL, atol=0)
        if case.preprocessing:
            assert_allclose(
                params["cluster_centers_input_space"],
                reference.preprocessor.inverse_transform(est.cluster_centers_),
                rtol=RTOL,
                atol=0,
            )
    elif case.algorithm in ("mean_shift", "affinity_propagation"):
        assert params["n_clusters"] == len(est.cluster_centers_)
        assert_allclose(params["cluster_centers"], est.cluster_centers_, rtol=RTOL, atol=0)
    elif case.algorithm == "birch":
        assert params["n_subclusters"] == len(est.subcluster_centers_)
        assert_allclose(params["subcluster_centers"], est.subcluster_centers_, rtol=RTOL, atol=0)
        assert params["subcluster_labels"] == est.subcluster_labels_.tolist()
    elif reference.inductive:
        labels = reference.sklearn_clusterer().labels_
        clusters = np.unique(labels[labels != -1]).tolist()
        assert params["classes"] == [-1, *clusters]
        assert params["n_clusters"] == len(clusters)
        assert params["n_anchors"] == len(reference.anchor_rows)
        assert params["max_distance"] == pytest.approx(reference.max_distance, rel=RTOL, abs=0)
        if case.algorithm == "dbscan":
            assert params["n_core_samples"] == len(reference.sklearn_dbscan().core_sample_indices_)
            assert params["eps"] == case.params["eps"]
    else:
        assert params["n_components"] == len(est.weights_)
        assert params["covariance_type"] == est.covariance_type
        assert_allclose(params["weights"], est.weights_, rtol=RTOL, atol=0)
        assert_allclose(params["means"], est.means_, rtol=RTOL, atol=0)
        assert_allclose(params["covariances"], est.covariances_, rtol=RTOL, atol=0)
    assert params["anomaly"]["contamination"] == trained["doc"]["anomaly"]["contamination"]
    assert params["anomaly"]["threshold"] == trained["doc"]["anomaly"]["threshold"]
    assert len(params["preprocessing"]) == len(case.preprocessing)
