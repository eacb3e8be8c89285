"""Trainings and selection grids through the real app on a Dask cluster (LLOYD_DASK_SCHEDULER at
a LocalCluster of worker processes): the same report and the same model, bit for bit, as local
worker processes give; a worker killed mid-grid does not stop it; a cancelled grid leaves no
version."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from distributed import Client, LocalCluster
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs

from app.main import create_app
from tests.api.contract import assert_problem, store_files
from tests.conftest import make_settings

X, _ = make_blobs(n_samples=1250, n_features=2, centers=4, cluster_std=0.8, random_state=7)
GRID = {
    "algorithm": "gaussian_mixture",
    "params": {"random_state": 0},
    "grid": {"n_components": {"min": 1, "max": 5}, "covariance_type": ["full", "diag"]},
    "data": {"instances": X.tolist()},
    "register": {"name": "grid-best", "criterion": "bic"},
}
SLOW_X, _ = make_blobs(n_samples=10_000, n_features=2, centers=10, random_state=0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        yield client


def app_client(tmp_path, name: str, **overrides: Any) -> TestClient:
    settings = make_settings(tmp_path / name, **overrides)
    return TestClient(create_app(settings))


def poll(client: TestClient, job_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_a_grid_and_a_training_on_dask_equal_local_workers_bit_for_bit(cluster, tmp_path):
    address = cluster.scheduler.address
    with (
        app_client(tmp_path, "local") as local,
        app_client(tmp_path, "dask", dask_scheduler=address) as dask,
    ):
        reports = [c.post("/v1/model-selection", json=GRID) for c in (local, dask)]
        assert [r.status_code for r in reports] == [200, 200], [r.text for r in reports]
        assert reports[0].json() == reports[1].json()
        assert reports[1].json()["n_candidates"] == 10
        assert reports[1].json()["registered"]["model"] == "grid-best"

        training = {
            "name": "one",
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 4, "random_state": 0},
            "data": {"instances": X.tolist()},
        }
        versions = [c.post("/v1/models", json=training) for c in (local, dask)]
        assert [v.status_code for v in versions] == [201, 201], [v.text for v in versions]
        assert versions[0].json()["metrics"] == versions[1].json()["metrics"]
        assert versions[0].json()["anomaly"] == versions[1].json()["anomaly"]
        parameters = [c.get("/v1/models/one/versions/1/parameters").json() for c in (local, dask)]
        assert parameters[0]["parameters"] == parameters[1]["parameters"]
        probe = {"instances": X[:50].tolist()}
        scores = [c.post("/v1/models/one/score_samples", json=probe).json() for c in (local, dask)]
        np.testing.assert_array_equal(scores[0]["scores"], scores[1]["scores"])
        # The selection's progress counted finished tasks, one per candidate.
        job = dask.get("/v1/jobs", params={"kind": "model_selection"}).json()["items"][0]
        assert job["progress"] == {"done": 10, "total": 10}


def test_a_dask_worker_killed_mid_grid_does_not_stop_the_grid(cluster, tmp_path):
    address = cluster.scheduler.address
    slow_grid = GRID | {
        "params": {"random_state": 0, "max_iter": 60, "tol": 0.0},
        "grid": {"n_components": [8, 9, 10, 11], "covariance_type": ["full"]},
        "data": {"instances": SLOW_X.tolist()},
        "register": None,
        "wait": False,
    }
    with app_client(tmp_path, "dask", dask_scheduler=address) as dask:
        job_id = dask.post("/v1/model-selection", json=slow_grid).json()["id"]
        deadline = time.monotonic() + 60
        while not any(cluster.processing().values()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        busy = next(worker for worker, tasks in cluster.processing().items() if tasks)
        pid = cluster.run(os.getpid, workers=[busy])[busy]
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; the task runs again
        done = poll(dask, job_id, ("succeeded", "failed", "cancelled"))
        assert done["status"] == "succeeded", done
        assert done["progress"] == {"done": 4, "total": 4}
        assert [c["params"]["n_components"] for c in done["result"]["candidates"]] == [8, 9, 10, 11]


def test_a_cancelled_grid_on_dask_leaves_no_version(cluster, tmp_path):
    address = cluster.scheduler.address
    # Long enough to cancel while it runs; finite, since Dask lets a running task run out.
    never = GRID | {
        "params": {"random_state": 0, "max_iter": 150, "tol": 0.0},
        "grid": {"n_components": [10, 11]},
        "data": {"instances": SLOW_X.tolist()},
        "wait": False,
    }
    with app_client(tmp_path, "dask", dask_scheduler=address) as dask:
        job_id = dask.post("/v1/model-selection", json=never).json()["id"]
        assert poll(dask, job_id, ("running", "failed"))["status"] == "running"
        cancelled = dask.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert_problem(dask.get("/v1/models/grid-best"), 404, "model_not_found")
        assert store_files(dask.app.state.settings) == set()
        # The futures are cancelled: nothing of the job is left waiting on the cluster (a task
        # already running on a worker thread runs to its end there, its result dropped).
        deadline = time.monotonic() + 30
        while any(key for keys in cluster.has_what().values() for key in keys if "lloyd" in key):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_concurrent_grids_on_dask_each_get_their_own_results(cluster, tmp_path):
    address = cluster.scheduler.address
    start = threading.Barrier(2)
    with app_client(tmp_path, "dask", dask_scheduler=address) as dask:

        def select(k: int) -> dict[str, Any]:
            body = GRID | {"grid": {"n_components": [k, k + 1]}, "register": None}
            start.wait()
            response = dask.post("/v1/model-selection", json=body)
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(max_workers=2) as pool:
            first, second = pool.map(select, [1, 3])
        assert [c["params"]["n_components"] for c in first["candidates"]] == [1, 2]
        assert [c["params"]["n_components"] for c in second["candidates"]] == [3, 4]
