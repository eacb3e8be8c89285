"""``python -m app`` with LLOYD_WORKERS=2: both uvicorn worker processes log their access lines
and errors with request ids (logging is configured by the app factory, in every process), and
they share the registry: a model trained through one is served by the other."""

from __future__ import annotations

import json
import sys

import httpx
from sklearn.datasets import make_blobs

from tests.e2e.server import free_port, running_process, server_env

X, _ = make_blobs(n_samples=60, n_features=2, centers=2, random_state=1)


def test_two_worker_processes_both_log_and_share_the_registry(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    env = server_env(
        f"sqlite:///{tmp_path / 'lloyd.db'}",
        tmp_path / "store",
        LLOYD_WORKERS="2",
        LLOYD_PORT=str(port),
        LLOYD_LOG_FORMAT="json",
    )
    with running_process([sys.executable, "-m", "app"], env, port, log) as (_, url):
        trained = httpx.post(
            f"{url}/v1/models",
            json={
                "name": "w",
                "algorithm": "kmeans",
                "params": {"n_clusters": 2, "random_state": 0},
                "data": {"instances": X.tolist()},
            },
            timeout=60,
        )
        assert trained.status_code == 201, trained.text
        ids = []
        for index in range(40):  # new connections: the kernel spreads them over both workers
            response = httpx.post(
                f"{url}/v1/models/w/predict",
                json={"instances": X[:1].tolist()},
                headers={"X-Request-ID": f"probe-{index}"},
            )
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
        missing = httpx.get(f"{url}/v1/models/nobody", headers={"X-Request-ID": "probe-missing"})
        assert missing.status_code == 404
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

    # Each worker process logs, through the app's own JSON lines, that it started and served.
    workers = {line["message"] for line in lines if "Started server process" in line["message"]}
    assert len(workers) == 2, workers
    assert sum("Application startup complete" in line["message"] for line in lines) == 2
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert {line["request_id"] for line in access} >= set(ids)
    error = [line for line in lines if line["request_id"] == "probe-missing"]
    assert any("model_not_found" in line["message"] for line in error), error
