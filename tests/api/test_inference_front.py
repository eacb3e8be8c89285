"""app.api.inference_front: the common inference request is answered by the front exactly as the
stack answers it (same status, body and headers), and every other request reaches the stack
untouched, body included, for the stack's own answer."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from app.api import inference_front
from app.api.binary import NPY_MEDIA_TYPE
from app.api_keys import hash_key, new_key
from app.main import create_app
from tests.api.contract import BLOBS, assert_problem, new_rows, training_body
from tests.conftest import make_settings

READER, WRITER = new_key(), new_key()
ROWS = new_rows(BLOBS)[:3]
BODY = orjson.dumps({"instances": ROWS}, option=orjson.OPT_SERIALIZE_NUMPY)
OPERATIONS = [
    ("blobs", "predict"),
    ("blobs", "transform"),
    ("blobs", "score"),
    ("blobs", "anomalies"),
    ("mixture", "predict_proba"),
    ("mixture", "score_samples"),
    ("mixture", "score"),
    ("mixture", "anomalies"),
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TestClient]:
    keys = f"{hash_key(READER)}:read,{hash_key(WRITER)}:write"
    settings = make_settings(tmp_path, api_keys=keys, max_body_bytes=100_000)
    with TestClient(create_app(settings)) as client:
        for body in (
            training_body(params={"n_clusters": 3, "random_state": 0, "n_init": 1}),
            training_body(name="mixture", algorithm="gaussian_mixture", params={"n_components": 2}),
        ):
            response = client.post("/v1/models", json=body, headers=bearer(WRITER))
            assert response.status_code == 201, response.text
        yield client


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the front answered each request since (True) or handed it to the stack."""
    outcomes: list[bool] = []
    original = inference_front.InferenceFront._answer

    async def spy(self, *args, **kwargs):
        answer = await original(self, *args, **kwargs)
        outcomes.append(answer is not None)
        return answer

    monkeypatch.setattr(inference_front.InferenceFront, "_answer", spy)
    return outcomes


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(client: TestClient, path: str, content: bytes = BODY, **headers: str):
    return client.post(
        path,
        content=content,
        headers={"Content-Type": "application/json", **bearer(READER), **headers},
    )


def comparable(response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    return response.status_code, response.content, headers


@pytest.mark.parametrize(("name", "operation"), OPERATIONS)
@pytest.mark.parametrize("version", [None, "1", "latest"])
def test_the_front_answers_as_the_stack_does(served, answered, name, operation, version):
    path = (
        f"/v1/models/{name}/{operation}"
        if version is None
        else f"/v1/models/{name}/versions/{version}/{operation}"
    )
    # The first request finds no resolved version: the stack answers it and resolves it.
    by_stack, by_front = post(served, path), post(served, path)
    assert answered == [False, True]
    assert by_stack.status_code == 200, by_stack.text
    assert comparable(by_front) == comparable(by_stack)
    assert by_front.headers["x-request-id"] != by_stack.headers["x-request-id"]


def test_npy_answers_and_request_ids_match_the_stacks(served, answered):
    npy = {"Accept": NPY_MEDIA_TYPE, "X-Request-ID": "client-id-7"}
    by_stack = post(served, "/v1/models/mixture/predict_proba", **npy)
    by_front = post(served, "/v1/models/mixture/predict_proba", **npy)
    assert answered == [False, True]
    assert by_front.headers["content-type"] == NPY_MEDIA_TYPE
    assert comparable(by_front) == comparable(by_stack)
    assert by_front.headers["x-request-id"] == by_stack.headers["x-request-id"] == "client-id-7"


def test_what_the_front_declines_gets_the_stacks_answer(served, answered):
    path = "/v1/models/blobs/predict"
    assert post(served, path).status_code == 200  # resolves the version
    answered.clear()
    assert_problem(served.post(path, content=BODY), 401, "unauthorized")
    assert_problem(post(served, path, Authorization=f"Bearer {WRITER}"), 403, "forbidden")
    assert_problem(post(served, path, Authorization="Bearer nope"), 401, "unauthorized")
    # A header sent twice counts by its first value, here as in the stack.
    twice = [("Authorization", "Bearer nope"), ("Authorization", f"Bearer {READER}")]
    twice.append(("Content-Type", "application/json"))
    assert_problem(served.post(path, content=BODY, headers=twice), 401, "unauthorized")
    twice = [("Authorization", f"Bearer {READER}"), ("Authorization", "Bearer nope")]
    assert served.post(path, content=BODY, headers=twice).status_code == 200
    big = orjson.dumps({"instances": np.ones((20_000, 2))}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert_problem(post(served, path, content=big), 413, "payload_too_large")
    assert_problem(
        post(served, path, **{"Content-Type": "text/plain"}), 415, "unsupported_media_type"
    )
    assert answered == [True]  # only the last: no key, no JSON, too big never reach it
    answered.clear()

    wrong_width = orjson.dumps({"instances": [[1.0, 2.0, 3.0]]})
    assert_problem(post(served, path, content=wrong_width), 422, "invalid_input")
    strings = post(served, path, content=b'{"instances": [[1, "a"]]}')
    assert assert_problem(strings, 422, "validation_error")["errors"][0]["pointer"] == (
        "/instances/0/1"
    )
    assert post(served, path, content=b"{not json").status_code == 400
    assert_problem(post(served, "/v1/models/nope/predict"), 404, "model_not_found")
    assert_problem(post(served, "/v1/models/blobs/predict_proba"), 422, "unsupported_operation")
    assert answered == [False, False, False, False, False]

    npy = post(served, path, content=_npy(ROWS), **{"Content-Type": NPY_MEDIA_TYPE})
    assert npy.status_code == 200
    assert npy.json()["labels"] == post(served, path).json()["labels"]


def test_a_body_in_several_messages_reaches_the_front_whole(served, answered):
    path = "/v1/models/blobs/predict"
    expected = post(served, path).json()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"authorization", f"Bearer {READER}".encode()),
    ]
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

    answered.clear()
    status, body = served.portal.call(call)
    assert (status, orjson.loads(body)) == (200, expected)
    assert answered == [True]


def test_large_or_unsized_bodies_go_to_the_stack(served, answered):
    path = "/v1/models/blobs/predict"
    expected = post(served, path).json()
    answered.clear()

    def chunks() -> Iterator[bytes]:  # sent without a Content-Length
        for start in range(0, len(BODY), 7):
            yield BODY[start : start + 7]

    assert post(served, path, content=chunks()).json() == expected
    rows = np.repeat(ROWS, 1000, axis=0)  # a body over 64 KiB, within the body limit
    large = orjson.dumps({"instances": rows[:2500]}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert 64 * 1024 < len(large) <= 100_000
    assert len(post(served, path, content=large).json()["labels"]) == 2500
    assert answered == []
    bad = b'{"instances": [[1.0, 2.0], [3.0]]}'
    response = post(served, path, content=iter([bad[:10], bad[10:]]))
    assert assert_problem(response, 422, "invalid_input")["errors"][0]["pointer"] == "/instances/1"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    return buffer.getvalue()
