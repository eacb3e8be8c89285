"""The operations endpoints (health, readiness, Prometheus metrics) and the OpenAPI document:
every operation described, every request body and path parameter with an example (that each
works as is: tests/api/test_openapi_examples.py)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.api.contract import (
    BLOBS,
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
            examples = parameter.get("examples") or parameter["schema"].get("examples")
            if parameter["in"] == "path" and not examples:
                without.append(f"{method} {path} {parameter['name']}")
    assert without == []
