"""The one path of an inference request: each operation of the table (app.api.operations) is one
route type that serves and documents it, behind one edge layer; an error is raised once and
answered once; bodies arrive whole however they are framed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans

from app.api.edge import Edge
from app.api.operation_routes import OperationRoute
from app.api.operations import OPERATIONS
from app.api_keys import hash_key, new_key
from app.main import create_app
from app.ml.catalog import Operation
from app.services.inference import InferenceService
from tests.api.contract import BLOBS, assert_problem, new_rows, training_body
from tests.conftest import make_settings

READER, WRITER = new_key(), new_key()
ROWS = new_rows(BLOBS)[:3]
BODY = orjson.dumps({"instances": ROWS}, option=orjson.OPT_SERIALIZE_NUMPY)
PARAMS = {"n_clusters": 3, "random_state": 0, "n_init": 1}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TestClient]:
    keys = f"{hash_key(READER)}:read,{hash_key(WRITER)}:write"
    settings = make_settings(tmp_path, api_keys=keys, max_body_bytes=100_000)
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/models", json=training_body(params=PARAMS), headers=bearer(WRITER)
        )
        assert response.status_code == 201, response.text
        yield client


@pytest.fixture
def performed(monkeypatch: pytest.MonkeyPatch) -> list[Operation]:
    """The operations the inference service ran since."""
    calls: list[Operation] = []
    original = InferenceService.perform

    async def spy(self, version, operation, *args):
        calls.append(operation)
        return await original(self, version, operation, *args)

    monkeypatch.setattr(InferenceService, "perform", spy)
    return calls


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(client: TestClient, path: str, content: object = BODY, **headers: str):
    return client.post(
        path,
        content=content,
        headers={"Content-Type": "application/json", **bearer(READER), **headers},
    )


def expected_labels() -> list[int]:
    return KMeans(**PARAMS).fit(np.asarray(BLOBS)).predict(np.asarray(ROWS)).tolist()


def test_every_operation_of_the_table_is_two_routes_of_one_type(served):
    app = served.app
    routes = [route for route in app.router.routes if isinstance(route, OperationRoute)]
    assert [(r.entry.operation, r.versioned) for r in routes] == [
        (entry.operation, versioned) for entry in OPERATIONS for versioned in (False, True)
    ]
    # Served ahead of every other route, and no other route answers their paths.
    assert app.router.routes[: len(routes)] == routes
    paths = {route.path for route in routes}
    others = [r for r in app.routes if getattr(r, "path", None) in paths and r not in routes]
    assert others == []
    assert {entry.operation for entry in OPERATIONS} == set(Operation)


def test_the_table_documents_what_it_serves(served):
    document = served.get("/openapi.json").json()
    for entry in OPERATIONS:
        for path in (
            f"/v1/models/{{name}}/{entry.operation}",
            f"/v1/models/{{name}}/versions/{{version}}/{entry.operation}",
        ):
            operation = document["paths"][path]["post"]
            assert operation["tags"] == [entry.tag]
            assert operation["description"] == entry.description
            body = operation["requestBody"]
            assert body["required"] is not entry.body_optional
            ref = body["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith(f"/{entry.body.__name__}")
            assert entry.body.__name__ in document["components"]["schemas"]
            assert ("application/x-npy" in body["content"]) is entry.takes_rows
            answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert answer["$ref"].endswith(f"/{entry.answer.__name__}")
            assert operation["security"] == [{"HTTPBearer": []}]
            names = [p["name"] for p in operation["parameters"] if p["in"] == "path"]
            assert names == (["name", "version"] if "versions" in path else ["name"])


def test_one_layer_ahead_of_the_router(served):
    # Edge, then FastAPI's exit stack for the files its own handlers open, then the router:
    # no second layer of errors, limits, ids or metrics.
    stack = served.app.middleware_stack
    assert type(stack) is Edge
    assert type(stack.app) is AsyncExitStackMiddleware
    assert stack.app.app is served.app.router
    assert served.app.user_middleware == []
    # Every error class the handlers answer is answered there.
    assert set(stack.handlers) == {
        key for key in served.app.exception_handlers if isinstance(key, type)
    }


def test_an_unexpected_error_is_one_500_with_the_request_id(served, monkeypatch, caplog):
    async def broken(self, version, operation, *args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(InferenceService, "perform", broken)
    caplog.set_level(logging.INFO, logger="app.errors")
    response = post(served, "/v1/models/blobs/predict", **{"X-Request-ID": "bug-1"})
    assert_problem(response, 500, "internal_error")
    assert response.headers["x-request-id"] == "bug-1"
    logged = [r for r in caplog.records if r.name == "app.errors"]
    assert len(logged) == 1 and logged[0].exc_info is not None


@pytest.mark.parametrize(
    ("path", "content", "status", "code"),
    [
        ("/v1/models/blobs/predict", b'{"instances": [[1.0, 2.0, 3.0]]}', 422, "invalid_input"),
        ("/v1/models/blobs/predict_proba", BODY, 422, "unsupported_operation"),
        ("/v1/models/blobs/anomalies", b'{"instances": [[1e308, 1e308]]}', 422, "invalid_input"),
    ],
)
def test_an_error_is_raised_once_and_answered_once(
    served, performed, caplog, path, content, status, code
):
    caplog.set_level(logging.INFO, logger="app.errors")
    response = post(served, path, content=content)
    assert_problem(response, status, code)
    assert len(performed) == 1  # the operation ran once, never again to write the error
    problems = [r for r in caplog.records if r.name == "app.errors"]
    assert len(problems) == 1 and problems[0].getMessage().startswith(f"{status} {code}")
    assert response.headers["x-request-id"]


def test_a_success_runs_the_operation_once_and_counts_once(served, performed):
    before = _count(served, "/v1/models/{name}/predict")
    for _ in range(3):
        response = post(served, "/v1/models/blobs/predict")
        assert response.json()["labels"] == expected_labels()
    assert performed == [Operation.PREDICT] * 3
    assert _count(served, "/v1/models/{name}/predict") == before + 3


def test_a_body_in_several_messages_arrives_whole(served):
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"authorization", f"Bearer {READER}".encode()),
    ]
    path = "/v1/models/blobs/predict"
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers}
    scope |= {"query_string": b"", "http_version": "1.1", "scheme": "http"}

    async def call() -> tuple[int, bytes]:
        chunks = [BODY[start : start + 7] for start in range(0, len(BODY), 7)]
        sent: list[dict] = []

        async def receive() -> dict:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message: dict) -> None:
            sent.append(message)

        await served.app(dict(scope), receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = served.portal.call(call)
    assert (status, orjson.loads(body)["labels"]) == (200, expected_labels())


def test_unsized_and_large_bodies(served):
    path = "/v1/models/blobs/predict"

    def chunks() -> Iterator[bytes]:  # sent without a Content-Length
        for start in range(0, len(BODY), 7):
            yield BODY[start : start + 7]

    assert post(served, path, content=chunks()).json()["labels"] == expected_labels()
    rows = np.repeat(ROWS, 1000, axis=0)  # over 64 KiB (the buffer parser), within the limit
    large = orjson.dumps({"instances": rows[:2500]}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert 64 * 1024 < len(large) <= 100_000
    labels = np.repeat(expected_labels(), 1000)[:2500].tolist()
    assert post(served, path, content=large).json()["labels"] == labels
    bad = b'{"instances": [[1.0, 2.0], [3.0]]}'
    response = post(served, path, content=iter([bad[:10], bad[10:]]))
    assert assert_problem(response, 422, "invalid_input")["errors"][0]["pointer"] == "/instances/1"
    too_large = orjson.dumps(
        {"instances": np.repeat(ROWS, 2000, axis=0)}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    assert_problem(post(served, path, content=iter([too_large])), 413, "payload_too_large")
    assert_problem(post(served, path, content=too_large), 413, "payload_too_large")


def _count(client: TestClient, route: str) -> float:
    text = client.get("/metrics").text
    prefix = f'lloyd_http_requests_total{{method="POST",route="{route}",status="200"}}'
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0
