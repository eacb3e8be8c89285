"""The real server killed with SIGKILL while jobs run: started again on the same database and
store, it takes the interrupted jobs over once their lease has lapsed (the dead process cannot
renew it), runs the retryable one again from its saved rows, fails the other with the reason,
and keeps the finished jobs with their results."""

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
    env = server_env(
        f"sqlite:///{tmp_path / 'lloyd.db'}",
        tmp_path / "store",
        LLOYD_JOB_LEASE_SECONDS="2",
        LLOYD_JOB_HEARTBEAT_SECONDS="0.5",
    )
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


def test_jobs_running_when_the_server_is_killed_are_taken_over_at_restart(tmp_path):
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
        once = start_job(http, "/v1/models", SLOW_TRAINING | {"name": "once", "retryable": False})
        running = poll(http, slow, ("running", "succeeded", "failed", "cancelled"))
        assert running["status"] == "running", running
        assert running["attempts"] == 1
        assert poll(http, once, ("running", "failed"))["status"] == "running"
        models_before = http.get("/v1/models").json()

        kill_group(process)
        assert process.returncode == -signal.SIGKILL
        assert not group_alive(process.pid), "a worker outlived its server"
    files_before = sorted(p.name for p in (tmp_path / "store" / "artifacts").glob("*"))

    with server(tmp_path, log) as (http, _):
        # The retryable job runs again here, from its saved rows...
        again = poll(http, slow, ("running", "succeeded", "failed", "cancelled"))
        deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
        while again["attempts"] < 2:
            assert time.monotonic() < deadline, again
            time.sleep(0.05)
            again = http.get(f"/v1/jobs/{slow}").json()
        assert again["status"] == "running", again
        assert again["owner"]["pid"] != running["owner"]["pid"]
        assert "queued again" in log.read_text()
        # ...and the other, which may not run twice, fails with the reason.
        failed = poll(http, once, ("succeeded", "failed", "cancelled"))
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "interrupted"
        assert "not retryable" in failed["error"]["detail"]
        assert failed["result"] is None

        # The finished jobs, their results and the version the first one made are still there.
        for job_id, before in finished.items():
            assert http.get(f"/v1/jobs/{job_id}").json() == before
        assert http.get("/v1/models").json() == models_before
        predicted = http.post("/v1/models/quick/predict", json={"instances": ROWS}).json()
        reference = KMeans(n_clusters=3, random_state=0).fit(X)
        assert predicted["labels"] == reference.predict(X).tolist()

        # Cancelled, the retried job leaves nothing either; the server runs new jobs.
        cancelled = http.delete(f"/v1/jobs/{slow}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert_slow_left_nothing(http, tmp_path, files_before)
        listed = http.get("/v1/jobs", params={"status": "failed"}).json()
        assert [j["id"] for j in listed["items"]] == [once]
        again = start_job(http, "/v1/models", QUICK_TRAINING | {"params": {"n_clusters": 2}})
        done = poll(http, again, ("succeeded", "failed"))
        assert done["result"] == {"model": "quick", "version": 2}


def assert_slow_left_nothing(http: httpx.Client, tmp_path: Path, files_before: list[str]) -> None:
    assert http.get("/v1/models/slow").status_code == 404
    assert http.get("/v1/models/once").status_code == 404
    files = sorted(p.name for p in (tmp_path / "store" / "artifacts").glob("*"))
    assert files == files_before
    assert len([f for f in files if f.endswith(".joblib")]) == 1, files  # quick's artifact only
    # Once both jobs ended, neither's saved rows are kept.
    assert list((tmp_path / "store" / "jobs").glob("*")) == []
