"""Observability of failure: every response carries an X-Request-ID; every error is logged
exactly once with that id; logs can be JSON lines."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.logging_config import RequestIdFilter, configure_logging, request_id
from app.main import create_app
from tests.conftest import make_settings
from tests.e2e.server import REPO_ROOT, free_port, server_env

BLOBS = [[0.0, 0.1], [0.2, 0.0], [0.1, 0.2], [5.0, 5.1], [5.2, 5.0], [5.1, 5.2]]


def records_with(caplog: pytest.LogCaptureFixture, rid: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "request_id", None) == rid]


@pytest.fixture
def logged_client(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    # caplog's handler sits on the root logger; the filter puts request ids on its records.
    caplog.handler.addFilter(RequestIdFilter())
    settings = make_settings(tmp_path, max_body_bytes=4096)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_every_response_has_a_request_id(logged_client: TestClient) -> None:
    first = logged_client.get("/healthz").headers["x-request-id"]
    second = logged_client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second
    echoed = logged_client.get("/healthz", headers={"X-Request-ID": "line-7.scan:42"})
    assert echoed.headers["x-request-id"] == "line-7.scan:42"
    # An id that could forge a log line or a header is replaced, not echoed.
    for hostile in ("a b", "x" * 200, "id\u00e9", "a\tb"):
        answer = logged_client.get("/healthz", headers={"X-Request-ID": hostile.encode()})
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/v1/models/absent", {}, 404, "model_not_found"),
        ("POST", "/v1/models/absent/predict", {"json": {"instances": [[1.0]]}}, 404, None),
        ("POST", "/v1/models", {"json": {"name": "bad name"}}, 422, "validation_error"),
        (
            "POST",
            "/v1/models",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
        ),
        ("POST", "/v1/models", {"content": b"[" * 5000}, 413, "payload_too_large"),
        ("GET", "/no/such/endpoint", {}, 404, "not_found"),
        ("DELETE", "/healthz", {}, 405, "method_not_allowed"),
    ],
)
def test_every_error_is_logged_once_with_its_request_id(
    logged_client: TestClient, caplog, method, path, kwargs, status, code
) -> None:
    caplog.clear()
    response = logged_client.request(method, path, **kwargs)
    assert response.status_code == status
    if code:
        assert response.json()["code"] == code
    rid = response.headers["x-request-id"]
    errors = [r for r in records_with(caplog, rid) if r.name == "app.errors"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert str(status) in errors[0].getMessage()


def test_an_unexpected_error_is_one_500_logged_once_with_traceback(
    logged_client: TestClient, caplog, monkeypatch
) -> None:
    registry = logged_client.app.state.registry

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(registry, "list_models", broken)
    caplog.clear()
    response = logged_client.get("/v1/models")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "disk on fire" not in response.text  # no internals leak to the client
    rid = response.headers["x-request-id"]
    errors = [r for r in records_with(caplog, rid) if r.name == "app.errors"]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR and errors[0].exc_info is not None


def test_successful_requests_log_no_error(logged_client: TestClient, caplog) -> None:
    trained = logged_client.post(
        "/v1/models",
        json={"name": "m", "algorithm": "kmeans", "params": {"n_clusters": 2, "n_init": 1}}
        | {"data": {"instances": BLOBS}},
    )
    assert trained.status_code == 201
    caplog.clear()
    predicted = logged_client.post("/v1/models/m/predict", json={"instances": BLOBS})
    assert predicted.status_code == 200
    assert not [r for r in caplog.records if r.name == "app.errors"]


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info", "json")
        token = request_id.set("req-123")
        try:
            logging.getLogger("app.test").warning("hello %s", "world")
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("app.test").exception("failed")
        finally:
            request_id.reset(token)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert lines[0] | {"time": None} == {
        "time": None,
        "level": "warning",
        "logger": "app.test",
        "message": "hello world",
        "request_id": "req-123",
    }
    assert "ValueError: boom" in lines[1]["exception"]


def test_real_server_json_logs_carry_the_request_id(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(
        f"sqlite:///{tmp_path / 'lloyd.db'}",
        tmp_path / "store",
        LLOYD_PORT=str(port),
        LLOYD_LOG_FORMAT="json",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "app"], env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        missing = httpx.get(f"{url}/v1/models/ghost", headers={"X-Request-ID": "trace-77"})
        assert missing.status_code == 404 and missing.headers["x-request-id"] == "trace-77"
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, err
    errors = [x for x in lines if x["request_id"] == "trace-77" and x["logger"] == "app.errors"]
    assert len(errors) == 1 and "404 model_not_found" in errors[0]["message"]
    assert any(x["logger"] == "uvicorn.access" and x["request_id"] == "trace-77" for x in lines)
