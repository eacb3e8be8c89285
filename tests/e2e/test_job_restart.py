"""The real server killed with SIGKILL while a job runs: started again on the same database and
store, it marks the interrupted job failed ("interrupted by restart") and keeps the finished ones
with their results."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from tests.e2e.server import (
    free_port,
    group_alive,
    kill_group,
    running_process,
    server_env,
    uvicorn_command,
)

POLL_TIMEOUT_SECONDS = 120.0

X, _ = make_blobs(n_samples=120, n_features=2, centers=3, cluster_std=0.5, random_state=5)
ROWS = X.tolist()
QUICK_TRAINING = {
    "name": "quick",
    "algorithm": "kmeans",
    "params": {"n_clusters": 3, "random_state": 0},
    "data": {"instances": ROWS},
    "wait": False,
}
SLOW_X, _ = make_blobs(n_samples=10_000, n_features=2, centers=10, random_state=0)
# Never ends by itself: tol=0 runs every one of 100 initialisations to 10^6 EM iterations.
SLOW_TRAINING = {
    "name": "slow",
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 10, "n_init": 100, "max_iter": 1_000_000, "tol": 0.0},
    "data": {"instances": SLOW_X.tolist()},
    "wait": False,
}


@contextmanager
def server(tmp_path: Path, log: Path) -> Iterator[tuple[httpx.Client, subprocess.Popen]]:
    """The server and a client of it once /healthz answers; the server's whole process group
    (it, its forkserver and its workers) is SIGKILLed on the way out."""
    port = free_port()
    env = server_env(f"sqlite:///{tmp_path / 'lloyd.db'}", tmp_path / "store")
    with (
        running_process(uvicorn_command(port), env, port, log) as (process, base_url),
        httpx.Client(base_url=base_url, timeout=60) as http,
    ):
        yield http, process


def poll(http: httpx.Client, job_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def start_job(http: httpx.Client, url: str, body: dict[str, Any]) -> str:
    response = http.post(url, json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_job_running_when_the_server_is_killed_is_failed_at_restart(tmp_path):
    log = tmp_path / "server.log"
    with server(tmp_path, log) as (http, process):
        quick = start_job(http, "/v1/models", QUICK_TRAINING)
        selection = start_job(
            http,
            "/v1/model-selection",
            {
                "algorithm": "kmeans",
                "params": {"random_state": 0},
                "grid": {"n_clusters": [2, 3, 4]},
                "data": {"instances": ROWS},
                "wait": False,
            },
        )
        finished = {
            job_id: poll(http, job_id, ("succeeded", "failed")) for job_id in (quick, selection)
        }
        assert [job["status"] for job in finished.values()] == ["succeeded", "succeeded"]
        assert finished[quick]["result"] == {"model": "quick", "version": 1}

        slow = start_job(http, "/v1/models", SLOW_TRAINING)
        running = poll(http, slow, ("running", "succeeded", "failed", "cancelled"))
        assert running["status"] == "running", running
        models_before = http.get("/v1/models").json()

        kill_group(process)
        assert process.returncode == -signal.SIGKILL
        assert not group_alive(process.pid), "a worker outlived its server"
    files_before = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())

    with server(tmp_path, log) as (http, _):
        job = http.get(f"/v1/jobs/{slow}").json()
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "interrupted"
        assert job["error"]["detail"] == "interrupted by restart"
        assert job["result"] is None
        assert job["started_at"] == running["started_at"]
        assert job["finished_at"] is not None
        assert "marked 1 interrupted job(s) failed" in log.read_text()

        # The finished jobs, their results and the version the first one made are still there.
        for job_id, before in finished.items():
            assert http.get(f"/v1/jobs/{job_id}").json() == before
        assert http.get("/v1/models").json() == models_before
        assert_slow_left_nothing(http, tmp_path, files_before)
        predicted = http.post("/v1/models/quick/predict", json={"instances": ROWS}).json()
        reference = KMeans(n_clusters=3, random_state=0).fit(X)
        assert predicted["labels"] == reference.predict(X).tolist()
        listed = http.get("/v1/jobs", params={"status": "failed"}).json()
        assert [j["id"] for j in listed["items"]] == [slow]

        # And the restarted server runs new jobs.
        again = start_job(http, "/v1/models", QUICK_TRAINING | {"params": {"n_clusters": 2}})
        done = poll(http, again, ("succeeded", "failed"))
        assert done["result"] == {"model": "quick", "version": 2}


def assert_slow_left_nothing(http: httpx.Client, tmp_path: Path, files_before: list[str]) -> None:
    assert http.get("/v1/models/slow").status_code == 404
    files = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert files == files_before
    assert len([f for f in files if f.endswith(".joblib")]) == 1, files  # quick's artifact only
