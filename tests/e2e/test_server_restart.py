"""The real server over real HTTP: train, predict, stop with SIGTERM, start again on the same
database and store (with uvicorn, then with ``python -m app``) and get the same answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import make_blobs

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 30.0

X, _ = make_blobs(n_samples=80, n_features=2, centers=3, cluster_std=0.5, random_state=11)
ROWS = X.tolist()
PROBE = [[0.0, 0.0], [5.0, -5.0], [-8.0, 8.0], *ROWS[:10]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(database_url: str, store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLOYD_")}
    return env | {
        "LLOYD_DATABASE_URL": database_url,
        "LLOYD_MODELS_STORE": str(store),
        "LLOYD_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@contextmanager
def running_server(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Start ``command``, wait for /healthz, yield the base URL; SIGTERM it on the way out and
    check it stopped cleanly. The process is killed whatever happens."""
    base_url = f"http://127.0.0.1:{port}"
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"server not healthy after {STARTUP_TIMEOUT_SECONDS} s:\n{log.read_text()}"
                )
            time.sleep(0.1)
        try:
            yield base_url
        except BaseException:
            print(f"server log:\n{log.read_text()}")  # shown by pytest with the failure
            raise
        process.send_signal(signal.SIGTERM)
        # Uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
        assert "Application shutdown complete" in log.read_text()[start:], log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def uvicorn_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def snapshot(http: httpx.Client) -> dict[str, object]:
    """Everything a restart must keep: models, versions, aliases and answers."""
    out: dict[str, object] = {"models": http.get("/v1/models").json()}
    for name in ("line-7", "line-8"):
        out[f"{name} versions"] = http.get(f"/v1/models/{name}/versions").json()
        predicted = http.post(f"/v1/models/{name}/predict", json={"instances": PROBE})
        assert predicted.status_code == 200, predicted.text
        out[f"{name} labels"] = predicted.json()
    out["production"] = http.post(
        "/v1/models/line-7/versions/production/predict", json={"instances": PROBE}
    ).json()
    out["scores"] = http.post("/v1/models/line-8/score_samples", json={"instances": PROBE}).json()
    return out


def train(http: httpx.Client, name: str, algorithm: str, params: dict) -> dict:
    response = http.post(
        "/v1/models",
        json={"name": name, "algorithm": algorithm, "params": params, "data": {"instances": ROWS}},
    )
    assert response.status_code == 201, response.text
    return response.json()


def check_restart(database_url: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    log = tmp_path / "server.log"

    port = free_port()
    with (
        running_server(uvicorn_command(port), server_env(database_url, store), port, log) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        assert http.get("/readyz").json() == {"status": "ready", "database": True, "store": True}
        train(http, "line-7", "kmeans", {"n_clusters": 3, "random_state": 0})
        train(http, "line-7", "kmeans", {"n_clusters": 4, "random_state": 0})
        mixture = train(http, "line-8", "gaussian_mixture", {"n_components": 3, "random_state": 0})
        assert mixture["version"] == 1
        assert (
            http.put("/v1/models/line-7/aliases/production", json={"version": 1}).status_code == 200
        )
        before = snapshot(http)
    assert [v["version"] for v in before["line-7 versions"]["items"]] == [1, 2]
    assert before["line-7 labels"]["version"] == 2
    assert before["production"]["version"] == 1
    assert len(set(before["line-8 labels"]["labels"])) == 3

    port = free_port()
    env = server_env(database_url, store, LLOYD_PORT=str(port), LLOYD_HOST="127.0.0.1")
    command = [sys.executable, "-m", "app"]
    with (
        running_server(command, env, port, log) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        assert snapshot(http) == before
        # The restarted server keeps counting versions where the first one stopped.
        assert train(http, "line-7", "kmeans", {"n_clusters": 2, "random_state": 0})["version"] == 3


def test_restart_on_sqlite(tmp_path):
    check_restart(f"sqlite:///{tmp_path / 'lloyd.db'}", tmp_path)


def test_restart_on_postgresql(tmp_path, postgres_url):
    check_restart(postgres_url, tmp_path)
