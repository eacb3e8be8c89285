"""The real server over real HTTP: train, predict, stop with SIGTERM, start again on the same
database and store (with uvicorn, then with ``python -m app``) and get the same answers."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sklearn.datasets import make_blobs

from tests.e2e.server import free_port, running_process, server_env, uvicorn_command

X, _ = make_blobs(n_samples=80, n_features=2, centers=3, cluster_std=0.5, random_state=11)
ROWS = X.tolist()
PROBE = [[0.0, 0.0], [5.0, -5.0], [-8.0, 8.0], *ROWS[:10]]


@contextmanager
def running_server(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Start ``command``, wait for /healthz, yield the base URL; SIGTERM it on the way out and
    check it stopped cleanly. The process is killed whatever happens."""
    start = log.stat().st_size if log.exists() else 0
    with running_process(command, env, port, log) as (process, base_url):
        yield base_url
        process.send_signal(signal.SIGTERM)
        # Uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
        assert "Application shutdown complete" in log.read_text()[start:], log.read_text()


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
