"""The operations endpoints (health, readiness, Prometheus metrics) and the OpenAPI document:
every operation described, every request body with an example, and every example working."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.api.contract import (
    ALL_OPERATIONS,
    BLOBS,
    OPERATIONS,
    assert_problem,
    call,
    train,
    training_body,
)

ROWS = {"instances": BLOBS[:3].tolist()}


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": True, "store": True}


# -- metrics ------------------------------------------------------------------------------------
def samples(client) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, keyed by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_by_route_template_trainings_and_cache(client):
    train(client)
    for _ in range(2):
        assert call(client, "blobs", "predict", ROWS).status_code == 200
    assert_problem(call(client, "nope", "predict", ROWS), 404, "model_not_found")
    bad = client.post("/v1/models", json=training_body(params={"n_jobs": 2}))
    assert_problem(bad, 422, "invalid_parameter")
    assert_problem(client.get("/no/such/route"), 404, "not_found")

    metrics = samples(client)
    predict = "/v1/models/{name}/predict"
    requests = "lloyd_http_requests_total"
    assert value(metrics, requests, route=predict, method="POST", status="200") == 2
    assert value(metrics, requests, route=predict, method="POST", status="404") == 1
    assert value(metrics, requests, route="/v1/models", method="POST", status="201") == 1
    assert value(metrics, requests, route="/v1/models", method="POST", status="422") == 1
    assert value(metrics, requests, route="unmatched", method="GET", status="404") == 1
    routes = {dict(labels).get("route") for name, labels in metrics if name == requests}
    assert not any("blobs" in route or "nope" in route for route in routes), routes
    assert (
        value(metrics, "lloyd_http_request_duration_seconds_count", route=predict, method="POST")
        == 3
    )

    outcome = "lloyd_trainings_total"
    assert value(metrics, outcome, algorithm="kmeans", outcome="succeeded") == 1
    assert value(metrics, outcome, algorithm="kmeans", outcome="failed") == 1
    assert value(metrics, "lloyd_training_duration_seconds_count", algorithm="kmeans") == 1
    assert value(metrics, "lloyd_model_cache_size") == 1
    assert value(metrics, "lloyd_model_cache_hits") == 2


def test_cache_metrics_after_a_restart_count_the_load_then_the_hit(client, settings):
    train(client)
    with TestClient(create_app(settings)) as restarted:
        before = samples(restarted)
        assert [
            value(before, f"lloyd_model_cache_{kind}") for kind in ("size", "hits", "misses")
        ] == [0, 0, 0]
        first = call(restarted, "blobs", "predict", ROWS)
        second = call(restarted, "blobs", "predict", ROWS)
        assert first.json() == second.json() == call(client, "blobs", "predict", ROWS).json()
        after = samples(restarted)
        assert [
            value(after, f"lloyd_model_cache_{kind}") for kind in ("size", "hits", "misses")
        ] == [1, 1, 1]


# -- OpenAPI ------------------------------------------------------------------------------------
@pytest.fixture
def spec(client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations_of(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def body_schema(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    """The component schema of an operation's JSON body (through an optional body's anyOf)."""
    if "requestBody" not in operation:
        return None
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    refs = [schema] if "$ref" in schema else [s for s in schema.get("anyOf", []) if "$ref" in s]
    assert len(refs) == 1, schema
    return spec["components"]["schemas"][refs[0]["$ref"].rsplit("/", 1)[1]]


def test_every_operation_has_a_description(spec):
    missing = [
        f"{method} {path}"
        for method, path, operation in operations_of(spec)
        if not operation.get("description", "").strip()
    ]
    assert missing == []


def test_every_request_body_and_path_parameter_has_an_example(spec):
    without = []
    for method, path, operation in operations_of(spec):
        schema = body_schema(spec, operation)
        if schema is not None and not schema.get("examples"):
            without.append(f"{method} {path} body")
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and not parameter["schema"].get("examples"):
                without.append(f"{method} {path} {parameter['name']}")
    assert without == []


def url_of(path: str, operation: dict[str, Any], job_id: str) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            # A job id cannot be known in advance: the one of the example's training stands in.
            example = (
                job_id if parameter["name"] == "job_id" else parameter["schema"]["examples"][0]
            )
            path = path.replace("{" + parameter["name"] + "}", str(example))
    return path


def expected_status(method: str, path: str, algorithm: str) -> int:
    last = path.rsplit("/", 1)[1]
    if method == "POST" and last in ALL_OPERATIONS and last not in OPERATIONS[algorithm]:
        return 422
    if method == "DELETE" and "/aliases/" in path:
        return 204
    if method == "DELETE" and path.startswith("/v1/jobs/"):
        return 409  # the training's job has finished: too late to cancel
    return 200


def example_bodies(schema: dict[str, Any] | None, required: bool) -> list[Any]:
    """The body's examples, a body of the ``records`` field's example, and no body when the body
    is optional."""
    if schema is None:
        return [None]
    bodies = list(schema["examples"])
    records = schema["properties"].get("records", {}).get("examples", [])
    bodies += [{"records": example} for example in records]
    return bodies if required else [*bodies, None]


# The alias goes before the version it points at, the version before its model.
DELETE_ORDER = [
    "/v1/models/{name}/aliases/{alias}",
    "/v1/models/{name}/versions/{version}",
    "/v1/models/{name}",
]


def delete_rank(path: str) -> int:
    return 1 + (DELETE_ORDER.index(path) if path in DELETE_ORDER else len(DELETE_ORDER))


def test_every_example_works_as_is(client, spec):
    """The TrainRequest example trains; then every endpoint, called with its parameters' and
    body's examples, answers as documented (deletions last, the alias before the model)."""
    train_example = spec["components"]["schemas"]["TrainRequest"]["examples"][0]
    trained = client.post("/v1/models", json=train_example)
    assert trained.status_code == 201, trained.text
    algorithm = train_example["algorithm"]
    job_id = client.get("/v1/jobs").json()["items"][0]["id"]

    calls = [(m, p, o) for m, p, o in operations_of(spec) if (m, p) != ("POST", "/v1/models")]
    calls.sort(key=lambda c: delete_rank(c[1]) if c[0] == "DELETE" else 0)
    exercised = set()
    for method, path, operation in calls:
        url = url_of(path, operation, job_id)
        required = operation.get("requestBody", {}).get("required", False)
        for body in example_bodies(body_schema(spec, operation), required):
            response = client.request(method, url, json=body)
            want = expected_status(method, path, algorithm)
            assert response.status_code == want, (method, url, body, response.text)
            if want == 422:
                assert_problem(response, 422, "unsupported_operation")
            if want == 409:
                assert_problem(response, 409, "job_finished")
            exercised.add((method, path))
    assert len(exercised) == len(calls)
    assert_problem(client.get("/v1/models/line-7"), 404, "model_not_found")
