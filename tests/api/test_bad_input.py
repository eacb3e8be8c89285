"""Bad input from DESIGN.md section 4: a clear 4xx problem with a stable code, and nothing stored
(no artifact file, no model, no version) by a request that failed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.contract import (
    BLOBS,
    CASE_BY_ALGORITHM,
    assert_error_at,
    assert_problem,
    call,
    case_body,
    post_raw,
    stored_state,
    train,
    training_body,
)
from tests.conftest import make_settings

FIVE_ROWS = BLOBS[:5].tolist()


def raw_training(instances: str) -> bytes:
    """A training body whose ``instances`` are the literal JSON text given (NaN, Infinity...)."""
    body = json.dumps(training_body(params={"n_clusters": 1}, data={"instances": "@"}))
    return body.replace('"@"', instances).encode()


TRAINING_CASES = [
    # rows
    pytest.param(
        {"data": {"instances": [[0.0, 1.0], [2.0]]}},
        422,
        "invalid_input",
        ("body", "data", "instances", 1),
        id="ragged-rows",
    ),
    pytest.param(
        {"data": {"instances": [[0.0, "1.5"], [2.0, 3.0]]}},
        422,
        "validation_error",
        ("body", "data", "instances", 0, 1),
        id="string-in-row",
    ),
    pytest.param(
        {"data": {"instances": [[True, 1.0], [2.0, 3.0]]}},
        422,
        "validation_error",
        ("body", "data", "instances", 0, 0),
        id="boolean-in-row",
    ),
    pytest.param(
        {"data": {"instances": [[None, 1.0], [2.0, 3.0]]}},
        422,
        "validation_error",
        ("body", "data", "instances", 0, 0),
        id="null-in-row",
    ),
    pytest.param(
        raw_training("[[NaN, 1], [2, 3]]"),
        422,
        "validation_error",
        ("body", "data", "instances", 0, 0),
        id="nan",
    ),
    pytest.param(
        raw_training("[[1, 2], [Infinity, 3]]"),
        422,
        "validation_error",
        ("body", "data", "instances", 1, 0),
        id="infinity",
    ),
    pytest.param(
        raw_training("[[1, -Infinity], [2, 3]]"),
        422,
        "validation_error",
        ("body", "data", "instances", 0, 1),
        id="minus-infinity",
    ),
    pytest.param(
        raw_training("[[1, 1e999], [2, 3]]"),
        422,
        "validation_error",
        ("body", "data", "instances", 0, 1),
        id="overflowing-literal",
    ),
    pytest.param(
        {"data": {"instances": []}},
        422,
        "invalid_input",
        ("body", "data", "instances"),
        id="zero-rows",
    ),
    pytest.param(
        {"data": {"instances": [[], []]}},
        422,
        "invalid_input",
        ("body", "data", "instances", 0),
        id="zero-width-rows",
    ),
    pytest.param(
        {"data": {"records": []}},
        422,
        "invalid_input",
        ("body", "data", "records"),
        id="zero-records",
    ),
    pytest.param(
        {"data": {"records": [{}, {}]}},
        422,
        "invalid_input",
        ("body", "data", "records", 0),
        id="zero-width-records",
    ),
    pytest.param(
        {"data": {"records": [{"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0}]}},
        422,
        "invalid_input",
        ("body", "data", "records", 1, "b"),
        id="records-with-other-keys",
    ),
    pytest.param(
        {"data": {"records": [{"a": "x"}]}},
        422,
        "validation_error",
        ("body", "data", "records", 0, "a"),
        id="string-in-record",
    ),
    pytest.param(
        {"feature_names": ["a", "b", "c"]},
        422,
        "invalid_input",
        ("body", "feature_names"),
        id="feature-names-wrong-count",
    ),
    pytest.param(
        {"feature_names": ["a", "a"]},
        422,
        "invalid_input",
        ("body", "feature_names"),
        id="feature-names-repeated",
    ),
    pytest.param(
        {"data": {"instances": FIVE_ROWS, "records": [{"a": 1.0}]}},
        422,
        "validation_error",
        ("body", "data"),
        id="instances-and-records",
    ),
    pytest.param({"data": {}}, 422, "validation_error", ("body", "data"), id="no-rows-at-all"),
    pytest.param(
        {"data": {"instances": [[1e308, 1e308], [-1e308, -1e308], [0.0, 0.0]]}},
        422,
        "training_failed",
        None,
        id="values-that-overflow",
        marks=pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning"),
    ),
    # clusters, algorithms and hyperparameters
    pytest.param(
        {"params": {"n_clusters": 6}, "data": {"instances": FIVE_ROWS}},
        422,
        "training_failed",
        None,
        id="kmeans-more-clusters-than-rows",
    ),
    pytest.param(
        {
            "algorithm": "minibatch_kmeans",
            "params": {"n_clusters": 6},
            "data": {"instances": FIVE_ROWS},
        },
        422,
        "training_failed",
        None,
        id="minibatch-more-clusters-than-rows",
    ),
    pytest.param(
        {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 6},
            "data": {"instances": FIVE_ROWS},
        },
        422,
        "training_failed",
        None,
        id="gmm-more-components-than-rows",
    ),
    pytest.param(
        {
            "algorithm": "bayesian_gaussian_mixture",
            "params": {"n_components": 6},
            "data": {"instances": FIVE_ROWS},
        },
        422,
        "training_failed",
        None,
        id="bgmm-more-components-than-rows",
    ),
    pytest.param(
        {"algorithm": "dbscan", "params": {"eps": 1e-6, "min_samples": 5}},
        422,
        "training_failed",
        None,
        id="dbscan-no-core-samples",
    ),
    pytest.param(
        {"algorithm": "kmedoids", "params": {}},
        422,
        "unknown_algorithm",
        ("body", "algorithm"),
        id="unknown-algorithm",
    ),
    pytest.param(
        {"params": {"n_clusterz": 3}},
        422,
        "invalid_parameter",
        ("body", "params", "n_clusterz"),
        id="unknown-parameter",
    ),
    pytest.param(
        {"params": {"n_clusters": 3, "n_jobs": 4}},
        422,
        "invalid_parameter",
        ("body", "params", "n_jobs"),
        id="refused-n_jobs",
    ),
    pytest.param(
        {"algorithm": "gaussian_mixture", "params": {"verbose": 2}},
        422,
        "invalid_parameter",
        ("body", "params", "verbose"),
        id="refused-verbose",
    ),
    pytest.param(
        {"params": {"n_clusters": 0}},
        422,
        "invalid_parameter",
        ("body", "params", "n_clusters"),
        id="n_clusters-zero",
    ),
    pytest.param(
        {"params": {"n_clusters": 2.5}},
        422,
        "invalid_parameter",
        ("body", "params", "n_clusters"),
        id="n_clusters-float",
    ),
    pytest.param(
        {"params": {"n_clusters": "3"}},
        422,
        "invalid_parameter",
        ("body", "params", "n_clusters"),
        id="n_clusters-string",
    ),
    pytest.param(
        {"params": {"n_clusters": True}},
        422,
        "invalid_parameter",
        ("body", "params", "n_clusters"),
        id="n_clusters-boolean",
    ),
    pytest.param(
        {"algorithm": "gaussian_mixture", "params": {"n_components": True}},
        422,
        "invalid_parameter",
        ("body", "params", "n_components"),
        id="n_components-boolean",
    ),
    pytest.param(
        {"params": {"init": "bad"}},
        422,
        "invalid_parameter",
        ("body", "params", "init"),
        id="init-unknown-option",
    ),
    pytest.param(
        {"params": {"n_clusters": 3, "init": {"a": 1}}},
        422,
        "training_failed",
        None,
        id="array-like-as-object",
    ),
    pytest.param(
        {"algorithm": "gaussian_mixture", "params": {"covariance_type": "round"}},
        422,
        "invalid_parameter",
        ("body", "params", "covariance_type"),
        id="covariance_type-unknown",
    ),
    pytest.param(
        {"algorithm": "dbscan", "params": {"eps": -1.0}},
        422,
        "invalid_parameter",
        ("body", "params", "eps"),
        id="dbscan-negative-eps",
    ),
    pytest.param(
        {"algorithm": "dbscan", "params": {"metric": "precomputed"}},
        422,
        "invalid_parameter",
        ("body", "params", "metric"),
        id="dbscan-precomputed-metric",
    ),
    pytest.param(
        {"preprocessing": [{"step": "pca", "n_components": 5}]},
        422,
        "training_failed",
        None,
        id="pca-more-components-than-features",
    ),
    pytest.param(
        {"preprocessing": [{"step": "robust_scaler"}]},
        422,
        "validation_error",
        ("body", "preprocessing", 0),
        id="unknown-preprocessing-step",
    ),
    # anomaly settings, names and the body itself
    pytest.param(
        {"anomaly": {"contamination": 0.7}},
        422,
        "validation_error",
        ("body", "anomaly", "contamination"),
        id="contamination-0.7",
    ),
    pytest.param(
        {"anomaly": {"contamination": -0.1}},
        422,
        "validation_error",
        ("body", "anomaly", "contamination"),
        id="contamination-negative",
    ),
    pytest.param({"name": "../etc"}, 422, "validation_error", ("body", "name"), id="name-dotdot"),
    pytest.param({"name": "a/b"}, 422, "validation_error", ("body", "name"), id="name-slash"),
    pytest.param({"name": ""}, 422, "validation_error", ("body", "name"), id="name-empty"),
    pytest.param({"name": "x" * 129}, 422, "validation_error", ("body", "name"), id="name-long"),
    pytest.param({"wait2": True}, 422, "validation_error", ("body", "wait2"), id="unknown-field"),
    pytest.param(b'{"name": "blobs", "algorithm": ', 400, "malformed_json", None, id="bad-json"),
]


@pytest.fixture
def existing(client) -> dict[str, Any]:
    """Version 1 of "blobs": a failed training of that name must not add a version 2."""
    return train(client, data={"instances": BLOBS[:40].tolist()})


@pytest.mark.parametrize(("request_body", "status", "code", "loc"), TRAINING_CASES)
def test_bad_training_is_refused_and_stores_nothing(
    client, settings, existing, request_body, status, code, loc
):
    before = stored_state(client, settings)
    if isinstance(request_body, bytes):
        response = post_raw(client, "/v1/models", request_body)
    else:
        response = client.post("/v1/models", json=training_body(**request_body))
    problem = assert_problem(response, status, code)
    if loc is not None:
        assert_error_at(problem, *loc)
    assert stored_state(client, settings) == before


def test_failed_first_training_creates_no_model(client, settings):
    body = training_body(name="fresh", params={"n_clusters": 6}, data={"instances": FIVE_ROWS})
    response = client.post("/v1/models", json=body)
    assert_problem(response, 422, "training_failed")
    assert_problem(client.get("/v1/models/fresh"), 404, "model_not_found")
    assert stored_state(client, settings) == {"files": set(), "total": 0, "models": []}


def raw_rows(rows: str) -> bytes:
    return f'{{"instances": {rows}}}'.encode()


INFERENCE_CASES = [
    pytest.param(
        "/v1/models/blobs/predict",
        {"instances": [[0.0, 1.0], [2.0]]},
        422,
        "invalid_input",
        id="ragged-rows",
    ),
    pytest.param(
        "/v1/models/blobs/predict",
        {"instances": [[0.0, "a"]]},
        422,
        "validation_error",
        id="string-in-row",
    ),
    pytest.param(
        "/v1/models/blobs/predict",
        {"instances": [[False, 1.0]]},
        422,
        "validation_error",
        id="boolean-in-row",
    ),
    pytest.param(
        "/v1/models/blobs/predict",
        {"instances": [[None, 1.0]]},
        422,
        "validation_error",
        id="null-in-row",
    ),
    pytest.param(
        "/v1/models/blobs/predict", raw_rows("[[NaN, 1]]"), 422, "validation_error", id="nan"
    ),
    pytest.param(
        "/v1/models/blobs/anomalies",
        raw_rows("[[1, Infinity]]"),
        422,
        "validation_error",
        id="infinity",
    ),
    pytest.param(
        "/v1/models/blobs/predict", {"instances": []}, 422, "invalid_input", id="zero-rows"
    ),
    pytest.param(
        "/v1/models/blobs/predict", {"instances": [[]]}, 422, "invalid_input", id="zero-width"
    ),
    pytest.param(
        "/v1/models/blobs/predict",
        {"instances": [[1.0, 2.0, 3.0]]},
        422,
        "invalid_input",
        id="wider-than-model",
    ),
    pytest.param(
        "/v1/models/blobs/versions/1/transform",
        {"instances": [[1.0]]},
        422,
        "invalid_input",
        id="narrower-than-model",
    ),
    pytest.param(
        "/v1/models/blobs/predict",
        {"instances": [[1.0, 2.0]], "records": [{"a": 1.0}]},
        422,
        "validation_error",
        id="instances-and-records",
    ),
    pytest.param("/v1/models/blobs/predict", {}, 422, "validation_error", id="neither"),
    pytest.param("/v1/models/blobs/predict", None, 422, "validation_error", id="no-body"),
    pytest.param(
        "/v1/models/blobs/predict",
        {"instances": [[1.0, 2.0]], "extra": 1},
        422,
        "validation_error",
        id="unknown-field",
    ),
    pytest.param(
        "/v1/models/blobs/predict", b'{"instances": [[1, 2]', 400, "malformed_json", id="bad-json"
    ),
    pytest.param(
        "/v1/models/nope/predict", {"instances": [[1.0, 2.0]]}, 404, "model_not_found", id="model"
    ),
    pytest.param(
        "/v1/models/nope/versions/1/predict",
        {"instances": [[1.0, 2.0]]},
        404,
        "model_not_found",
        id="model-version",
    ),
    pytest.param(
        "/v1/models/blobs/versions/2/predict",
        {"instances": [[1.0, 2.0]]},
        404,
        "version_not_found",
        id="version",
    ),
    pytest.param(
        "/v1/models/blobs/versions/production/predict",
        {"instances": [[1.0, 2.0]]},
        404,
        "version_not_found",
        id="alias",
    ),
    pytest.param(
        "/v1/models/blobs/cluster", {"instances": [[1.0, 2.0]]}, 404, "not_found", id="route"
    ),
    pytest.param("/v3/models", {"instances": [[1.0, 2.0]]}, 404, "not_found", id="prefix"),
    pytest.param(
        "/v1/models/blobs/transform",
        {"instances": [[1e308, -1e308]]},
        422,
        "invalid_input",
        id="overflowing-rows",
    ),
]


@pytest.mark.parametrize(("url", "request_body", "status", "code"), INFERENCE_CASES)
def test_bad_inference_is_refused_and_changes_nothing(
    client, settings, existing, url, request_body, status, code
):
    before = stored_state(client, settings)
    if isinstance(request_body, bytes):
        response = post_raw(client, url, request_body)
    elif request_body is None:
        response = client.post(url)
    else:
        response = client.post(url, json=request_body)
    assert_problem(response, status, code)
    assert stored_state(client, settings) == before


@pytest.mark.parametrize(
    ("method", "url", "status", "code"),
    [
        ("GET", "/v1/models/nope", 404, "model_not_found"),
        ("GET", "/v1/models/nope/versions", 404, "model_not_found"),
        ("GET", "/v1/models/blobs/versions/7", 404, "version_not_found"),
        ("GET", "/v1/models/blobs/versions/7/parameters", 404, "version_not_found"),
        ("DELETE", "/v1/models/nope", 404, "model_not_found"),
        ("DELETE", "/v1/models/blobs/versions/7", 404, "version_not_found"),
        ("DELETE", "/v1/models/blobs/aliases/production", 404, "alias_not_found"),
        ("GET", "/v1/algorithms/kmedoids", 404, "algorithm_not_found"),
        ("GET", "/v1/models/blobs/predict", 405, "method_not_allowed"),
    ],
)
def test_missing_resources_are_404_and_change_nothing(
    client, settings, existing, method, url, status, code
):
    before = stored_state(client, settings)
    assert_problem(client.request(method, url), status, code)
    assert stored_state(client, settings) == before


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"n_samples": 0}, "validation_error"), ({"random_state": -1}, "validation_error")],
)
def test_bad_sample_requests_are_422(client, overrides, code):
    train(client, **case_body(CASE_BY_ALGORITHM["gaussian_mixture"], name="g"))
    body = {"n_samples": 3} | overrides
    problem = assert_problem(call(client, "g", "sample", body), 422, code)
    assert_error_at(problem, "body", next(iter(overrides)))


def test_sample_over_the_configured_maximum_is_422(client, settings):
    train(client, **case_body(CASE_BY_ALGORITHM["gaussian_mixture"], name="g"))
    body = {"n_samples": settings.max_sample_rows + 1}
    problem = assert_problem(call(client, "g", "sample", body), 422, "invalid_input")
    assert_error_at(problem, "body", "n_samples")
    assert call(client, "g", "sample", {"n_samples": 3}).status_code == 200


# -- size limits ----------------------------------------------------------------------------------
@pytest.fixture
def limited(tmp_path):
    """An app with small limits: 2 KiB bodies, 100 training cells, 5 rows per inference."""
    settings = make_settings(
        tmp_path, max_body_bytes=2048, max_training_cells=100, max_inference_rows=5
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client, settings


def chunks(data: bytes, size: int = 512):
    """The body as a generator: httpx then sends it chunked, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_bodies_over_the_limit_are_413_with_or_without_content_length(limited):
    client, settings = limited
    small = training_body(params={"n_clusters": 2}, data={"instances": BLOBS[:20].tolist()})
    assert len(json.dumps(small)) < 2048
    assert client.post("/v1/models", json=small).status_code == 201
    before = stored_state(client, settings)

    big = json.dumps(training_body(name="big", data={"instances": BLOBS[:60].tolist()})).encode()
    assert len(big) > 2048
    declared = post_raw(client, "/v1/models", big)
    assert declared.request.headers["content-length"] == str(len(big))
    assert_problem(declared, 413, "payload_too_large")

    streamed = client.post(
        "/v1/models", content=chunks(big), headers={"content-type": "application/json"}
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert_problem(streamed, 413, "payload_too_large")

    predict = json.dumps({"instances": [[1.0, 2.0]] * 200}).encode()
    assert_problem(post_raw(client, "/v1/models/blobs/predict", predict), 413, "payload_too_large")
    assert_problem(
        client.post(
            "/v1/models/blobs/predict",
            content=chunks(predict),
            headers={"content-type": "application/json"},
        ),
        413,
        "payload_too_large",
    )
    assert stored_state(client, settings) == before


def test_training_cells_and_inference_rows_over_the_limits_are_413(limited):
    client, settings = limited
    train(client, params={"n_clusters": 2}, data={"instances": BLOBS[:20].tolist()})
    before = stored_state(client, settings)
    too_many_cells = training_body(name="cells", data={"instances": BLOBS[:51].tolist()})
    assert_problem(client.post("/v1/models", json=too_many_cells), 413, "payload_too_large")
    rows = {"instances": BLOBS[:6].tolist()}
    assert_problem(call(client, "blobs", "predict", rows), 413, "payload_too_large")
    assert call(client, "blobs", "predict", {"instances": BLOBS[:5].tolist()}).status_code == 200
    assert stored_state(client, settings) == before
