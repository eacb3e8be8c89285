"""Jobs: trainings and selections that answer 202 and are polled, listed, cancelled, timed out
and failed; the fits run in worker processes, which a cancel or a time limit kills."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from app.main import create_app
from tests.api.contract import BLOBS, assert_problem, store_files, stored_state, training_body
from tests.conftest import make_settings

# Fits run at a low priority: on a machine busy with other work they can take a while.
POLL_TIMEOUT_SECONDS = 120.0
JOB_FIELDS = {
    "id",
    "kind",
    "status",
    "model_name",
    "algorithm",
    "progress",
    "request",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "owner",
    "lease_expires_at",
    "attempts",
    "retryable",
    "cancel_requested",
}


def _slow_rows() -> list[list[float]]:
    X, _ = make_blobs(n_samples=10_000, n_features=2, centers=10, random_state=0)
    return X.tolist()


SLOW_ROWS = _slow_rows()


def slow_training(name: str = "slow", **overrides: Any) -> dict[str, Any]:
    """A fit that does not end by itself in any test's lifetime: 100 initialisations of 10
    components on 10,000 rows, each run to 10^6 EM iterations (tol=0 never converges)."""
    return training_body(
        name=name,
        algorithm="gaussian_mixture",
        params={
            "n_components": 10,
            "n_init": 100,
            "max_iter": 1_000_000,
            "tol": 0.0,
            "random_state": 0,
        },
        data={"instances": SLOW_ROWS},
        **overrides,
    )


def no_core_samples(name: str = "sparse", **overrides: Any) -> dict[str, Any]:
    """Passes every check made before the job; DBSCAN then finds no core sample in the worker."""
    return training_body(
        name=name,
        algorithm="dbscan",
        params={"eps": 1e-4, "min_samples": 50},
        **overrides,
    )


def job_id_of(response) -> str:
    """The job of a 202: its Location, and the job document it answered with."""
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert location == f"/v1/jobs/{job['id']}"
    return job["id"]


def poll(
    client: TestClient,
    job_id: str,
    statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """GET the job until its status is one of ``statuses``; every answer goes into ``seen``."""
    deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if seen is not None:
            seen.append(job)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.05)


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _parent_pid(int(entry)) == pid:
            found.append(int(entry))
    return found


def worker_pids() -> list[int]:
    """The fit processes of this test process: the children of its multiprocessing forkserver."""
    servers = [
        pid
        for pid in _children(os.getpid())
        if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return [worker for server in servers for worker in _children(server)]


def is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def running_worker(client: TestClient, job_id: str) -> int:
    """Wait until the job is running in a worker; that worker's pid."""
    job = poll(client, job_id, ("running", "succeeded", "failed", "cancelled"))
    assert job["status"] == "running", job
    assert job["started_at"] is not None
    [pid] = worker_pids()
    return pid


def assert_nothing_stored(client: TestClient, settings) -> None:
    assert stored_state(client, settings) == {"files": set(), "total": 0, "models": []}


@pytest.fixture
def app_with(tmp_path) -> Iterator:
    """``app_with(**settings)``: a client of an app with those settings (closed afterwards)."""
    clients = []

    def build(**overrides: Any) -> tuple[TestClient, Any]:
        settings = make_settings(tmp_path / f"app{len(clients)}", **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client, settings

    yield build
    for client in clients:
        client.__exit__(None, None, None)


# -- asynchronous training ---------------------------------------------------------------------
def test_async_training_answers_202_and_is_polled_to_its_version(client):
    response = client.post("/v1/models", json=training_body(name="line-7", wait=False))
    job_id = job_id_of(response)
    job = response.json()
    assert job["status"] in ("queued", "running")
    assert (job["kind"], job["model_name"], job["algorithm"]) == ("training", "line-7", "kmeans")
    assert job["progress"]["total"] == 1
    assert job["result"] is None and job["error"] is None and job["finished_at"] is None
    assert job["request"] == {
        "name": "line-7",
        "algorithm": "kmeans",
        "params": {"n_clusters": 3, "random_state": 0},
        "n_samples": len(BLOBS),
        "n_features": 2,
    }

    done = poll(client, job_id)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"model": "line-7", "version": 1}
    assert done["error"] is None
    assert done["progress"] == {"done": 1, "total": 1}
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]

    version = client.get("/v1/models/line-7/versions/1")
    assert version.status_code == 200
    reference = KMeans(n_clusters=3, random_state=0).fit(BLOBS)
    np.testing.assert_allclose(version.json()["metrics"]["inertia"], reference.inertia_, rtol=1e-9)
    labels = client.post("/v1/models/line-7/predict", json={"instances": BLOBS.tolist()}).json()
    assert labels["labels"] == reference.predict(BLOBS).tolist()


def test_a_sync_training_longer_than_the_sync_limit_answers_with_its_job(app_with):
    client, _ = app_with(sync_timeout_seconds=0)
    response = client.post("/v1/models", json=training_body(name="line-7"))
    job_id = job_id_of(response)
    assert response.json()["status"] in ("queued", "running")
    assert poll(client, job_id)["result"] == {"model": "line-7", "version": 1}

    selection = client.post(
        "/v1/model-selection",
        json={
            "algorithm": "kmeans",
            "params": {"random_state": 0},
            "grid": {"n_clusters": [2, 3]},
            "data": {"instances": BLOBS.tolist()},
        },
    )
    done = poll(client, job_id_of(selection))
    assert done["status"] == "succeeded"
    assert done["result"]["n_candidates"] == 2


def test_async_model_selection_reports_progress_up_to_its_total(client):
    response = client.post(
        "/v1/model-selection",
        json={
            "algorithm": "kmeans",
            "params": {"n_init": 3, "random_state": 0},
            "grid": {"n_clusters": {"min": 2, "max": 7}},
            "data": {"instances": BLOBS.tolist()},
            "register": {"name": "blobs", "criterion": "silhouette"},
            "wait": False,
        },
    )
    job_id = job_id_of(response)
    assert response.json()["kind"] == "model_selection"
    assert response.json()["model_name"] == "blobs"
    seen: list[dict[str, Any]] = []
    done = poll(client, job_id, seen=seen)
    assert done["status"] == "succeeded", done
    progress = [job["progress"]["done"] for job in seen]
    assert progress == sorted(progress)
    assert all(job["progress"]["total"] == 6 for job in seen)
    assert done["progress"] == {"done": 6, "total": 6}
    report = done["result"]
    assert [c["params"]["n_clusters"] for c in report["candidates"]] == [2, 3, 4, 5, 6, 7]
    assert report["best"]["silhouette"]["params"] == {"n_clusters": 3}
    assert report["registered"]["model"] == "blobs"
    assert client.get("/v1/models/blobs/versions/1").json()["params"]["n_clusters"] == 3


# -- listing ------------------------------------------------------------------------------------
def test_jobs_are_listed_newest_first_with_filters_and_pages(client):
    bodies = [
        ("/v1/models", training_body(name="alpha", wait=False)),
        ("/v1/models", training_body(name="alpha", params={"n_clusters": 2}, wait=False)),
        ("/v1/models", training_body(name="beta", wait=False)),
        ("/v1/models", no_core_samples(name="beta", wait=False)),
        (
            "/v1/model-selection",
            {
                "algorithm": "kmeans",
                "grid": {"n_clusters": [2, 3, 4]},
                "data": {"instances": BLOBS.tolist()},
                "register": {"name": "gamma", "criterion": "inertia"},
                "wait": False,
            },
        ),
        (
            "/v1/model-selection",
            {
                "algorithm": "gaussian_mixture",
                "grid": {"n_components": [1, 2]},
                "data": {"instances": BLOBS.tolist()},
                "wait": False,
            },
        ),
    ]
    ids = []
    for url, body in bodies:
        job_id = job_id_of(client.post(url, json=body))
        poll(client, job_id)  # one at a time, so that they are created in this order
        ids.append(job_id)

    def listed(**params: Any) -> tuple[list[str], int]:
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["offset"] == params.get("offset", 0)
        assert page["limit"] == params.get("limit", 50)
        return [job["id"] for job in page["items"]], page["total"]

    newest_first = ids[::-1]
    assert listed() == (newest_first, 6)
    assert listed(status="failed") == ([ids[3]], 1)
    assert listed(status="succeeded") == ([i for i in newest_first if i != ids[3]], 5)
    assert listed(status="running") == ([], 0)
    assert listed(kind="model_selection") == ([ids[5], ids[4]], 2)
    assert listed(kind="training") == (newest_first[2:], 4)
    assert listed(model="alpha") == ([ids[1], ids[0]], 2)
    assert listed(model="beta", status="succeeded") == ([ids[2]], 1)
    assert listed(model="gamma", kind="model_selection") == ([ids[4]], 1)
    assert listed(model="nobody") == ([], 0)

    pages = [listed(offset=offset, limit=4) for offset in (0, 4, 8)]
    assert pages == [(newest_first[:4], 6), (newest_first[4:], 6), ([], 6)]

    failed = client.get(f"/v1/jobs/{ids[3]}").json()
    assert failed["error"]["code"] == "training_failed"
    for params in ({"status": "done"}, {"kind": "fit"}, {"limit": 0}, {"offset": -1}):
        assert_problem(client.get("/v1/jobs", params=params), 422, "validation_error")


# -- cancelling ---------------------------------------------------------------------------------
def test_cancelling_a_running_job_kills_its_worker_and_leaves_no_version(client, settings):
    job_id = job_id_of(client.post("/v1/models", json=slow_training(wait=False)))
    pid = running_worker(client, job_id)

    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "cancelled"
    assert job["error"]["code"] == "job_cancelled"
    assert job["result"] is None
    assert job["finished_at"] is not None
    assert is_gone(pid)
    assert worker_pids() == []
    assert client.get(f"/v1/jobs/{job_id}").json() == job
    assert_problem(client.get("/v1/models/slow"), 404, "model_not_found")
    assert_nothing_stored(client, settings)
    assert store_files(settings) == set()

    again = assert_problem(client.delete(f"/v1/jobs/{job_id}"), 409, "job_finished")
    assert "cancelled" in again["detail"]


def test_a_queued_job_can_be_cancelled_before_it_starts(app_with):
    client, settings = app_with(max_concurrent_jobs=1)
    running = job_id_of(client.post("/v1/models", json=slow_training(wait=False)))
    running_worker(client, running)
    [first_worker] = worker_pids()
    queued = job_id_of(client.post("/v1/models", json=training_body(name="next", wait=False)))
    # The one worker slot is taken: the job waits for it (its supervisor polls for a slot),
    # and no second worker is started meanwhile.
    assert client.app.state.runner.handle(queued) is not None
    job = client.get(f"/v1/jobs/{queued}").json()
    assert (job["status"], job["started_at"]) == ("queued", None)
    assert worker_pids() == [first_worker]

    cancelled = client.delete(f"/v1/jobs/{queued}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["started_at"] is None
    assert client.get(f"/v1/jobs/{running}").json()["status"] == "running"
    assert client.delete(f"/v1/jobs/{running}").json()["status"] == "cancelled"
    assert worker_pids() == []
    assert_nothing_stored(client, settings)


def test_a_client_waiting_on_a_cancelled_training_gets_409(client, settings):
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(client.post, "/v1/models", json=slow_training())
        deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
        while not (jobs := client.get("/v1/jobs", params={"status": "running"}).json()["items"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.delete(f"/v1/jobs/{jobs[0]['id']}").status_code == 200
        assert_problem(waiting.result(timeout=60), 409, "job_cancelled")
    assert worker_pids() == []
    assert_nothing_stored(client, settings)


def test_cancelling_a_finished_job_is_409(client):
    job_id = job_id_of(client.post("/v1/models", json=training_body(wait=False)))
    assert poll(client, job_id)["status"] == "succeeded"
    problem = assert_problem(client.delete(f"/v1/jobs/{job_id}"), 409, "job_finished")
    assert "succeeded" in problem["detail"]
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert client.get("/v1/models/blobs/versions/1").status_code == 200


def test_an_unknown_job_is_404(client):
    missing = "3f0c2b1e-7a4d-4c55-9a51-0d6f2f1f4b2a"
    for response in (client.get(f"/v1/jobs/{missing}"), client.delete(f"/v1/jobs/{missing}")):
        problem = assert_problem(response, 404, "job_not_found")
        assert missing in problem["detail"]


# -- failures -----------------------------------------------------------------------------------
def test_a_job_past_its_time_limit_fails_with_that_reason(app_with):
    client, settings = app_with(job_timeout_seconds=1)
    response = client.post("/v1/models", json=slow_training())
    problem = assert_problem(response, 500, "job_timeout")
    assert "longer than 1 s" in problem["detail"]
    assert "LLOYD_JOB_TIMEOUT_SECONDS" in problem["detail"]

    [job] = client.get("/v1/jobs").json()["items"]
    assert job["status"] == "failed"
    assert job["error"]["code"] == "job_timeout"
    assert job["error"]["detail"] == problem["detail"]
    assert job["result"] is None
    assert worker_pids() == []
    assert_nothing_stored(client, settings)


def test_the_time_limit_counts_from_the_start_not_from_the_wait_for_a_worker(app_with):
    """One worker slot: the second job waits until the first is killed at its limit, then has a
    whole limit of its own (a job that never ran has not "run longer than" anything)."""
    limit = 1.0
    client, settings = app_with(max_concurrent_jobs=1, job_timeout_seconds=limit)
    first = job_id_of(client.post("/v1/models", json=slow_training("first", wait=False)))
    running_worker(client, first)
    second = job_id_of(client.post("/v1/models", json=slow_training("second", wait=False)))
    jobs = [poll(client, job_id) for job_id in (first, second)]
    for job in jobs:
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "job_timeout", job
        assert job["started_at"] is not None, job
        ran = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        assert ran.total_seconds() >= limit - 0.05, job
    assert jobs[1]["started_at"] >= jobs[0]["finished_at"]
    # Polled, not waited on: the job is recorded failed a moment before its worker is reaped.
    deadline = time.monotonic() + 10
    while worker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker_pids() == []
    assert_nothing_stored(client, settings)


def test_a_fit_that_fails_in_the_worker_is_a_422_and_a_failed_job(client, settings):
    problem = assert_problem(
        client.post("/v1/models", json=no_core_samples()), 422, "training_failed"
    )
    assert "no core samples" in problem["detail"]
    [job] = client.get("/v1/jobs").json()["items"]
    assert (job["status"], job["kind"], job["model_name"]) == ("failed", "training", "sparse")
    assert job["error"]["code"] == "training_failed"
    assert job["error"]["status"] == 422
    assert job["error"]["detail"] == problem["detail"]
    assert job["finished_at"] is not None
    assert_nothing_stored(client, settings)

    # The same, asked not to wait: 202, then the job fails with the same error.
    job_id = job_id_of(client.post("/v1/models", json=no_core_samples(wait=False)))
    failed = poll(client, job_id)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "training_failed"
    assert_nothing_stored(client, settings)


def test_trainings_of_two_names_run_in_parallel_and_both_succeed(client, settings):
    start = threading.Barrier(2)

    def post(name: str, k: int):
        body = training_body(name=name, params={"n_clusters": k, "random_state": 0})
        start.wait()
        return client.post("/v1/models", json=body)

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(post, ["left", "right"], [2, 4]))
    assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
    assert [(r.json()["name"], r.json()["version"]) for r in responses] == [
        ("left", 1),
        ("right", 1),
    ]
    assert [r.json()["params"]["n_clusters"] for r in responses] == [2, 4]
    jobs = client.get("/v1/jobs", params={"status": "succeeded", "kind": "training"}).json()
    assert sorted(job["result"]["model"] for job in jobs["items"]) == ["left", "right"]
    assert len(store_files(settings)) == 2
