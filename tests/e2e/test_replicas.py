"""Two (or four) real Lloyd processes on one PostgreSQL database and one S3 store: they start at
once, share every version and alias, number 40 concurrent trainings 1..40, survive each other's
restarts, take over a killed replica's job, and cancel each other's jobs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from app.registry.database import alembic_config
from tests.e2e.replicas import (
    Replica,
    dask_cluster,
    poll_job,
    postgres_database,
    replica_env,
    replicas,
)
from tests.s3 import s3_client

X, _ = make_blobs(n_samples=150, n_features=2, centers=3, cluster_std=0.5, random_state=3)
ROWS = X.tolist()
# Served within this of a write on another replica (LISTEN/NOTIFY; README states the bound).
STALENESS_BOUND_SECONDS = 1.0
SLOW_X, _ = make_blobs(n_samples=10_000, n_features=2, centers=10, random_state=0)
# A few seconds of EM that end (tol=0 runs every one of max_iter iterations).
SLOW_TRAINING = {
    "name": "slow",
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 10, "max_iter": 80, "tol": 0.0, "random_state": 0},
    "data": {"instances": SLOW_X.tolist()},
    "wait": False,
}


def kmeans_body(name: str, k: int = 3) -> dict:
    return {
        "name": name,
        "algorithm": "kmeans",
        "params": {"n_clusters": k, "random_state": 0, "n_init": 1},
        "data": {"instances": ROWS},
    }


@pytest.fixture
def database(postgres_available):
    if postgres_available:
        pytest.skip(postgres_available)
    with postgres_database() as url:
        yield url


def served_version(http: httpx.Client, name: str, ref: str) -> int | None:
    response = http.post(f"/v1/models/{name}/versions/{ref}/predict", json={"instances": ROWS[:2]})
    return response.json()["version"] if response.status_code == 200 else None


def wait_until(predicate, timeout: float) -> float:
    """Seconds until ``predicate()`` is true (polled), failing past ``timeout``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout
        time.sleep(0.01)
    return time.monotonic() - started


def test_replicas_share_versions_aliases_and_number_concurrent_trainings(
    database, s3_store_url, s3_endpoint, tmp_path
):
    env = replica_env(database, s3_store_url, s3_endpoint)
    with replicas(env, tmp_path, ["a", "b"]) as (a, b), a.client() as on_a, b.client() as on_b:
        # A model trained on A is served by B, with scikit-learn's labels.
        assert on_a.post("/v1/models", json=kmeans_body("line-7")).status_code == 201
        labels = on_b.post("/v1/models/line-7/predict", json={"instances": ROWS}).json()
        reference = KMeans(n_clusters=3, random_state=0, n_init=1).fit(X)
        assert labels["labels"] == reference.predict(X).tolist()
        assert labels["version"] == 1

        # An alias moved on A is served by B within the bound (B has it cached meanwhile).
        assert on_a.post("/v1/models", json=kmeans_body("line-7", k=2)).status_code == 201
        assert (
            on_a.put("/v1/models/line-7/aliases/production", json={"version": 1}).status_code == 200
        )
        wait_until(lambda: served_version(on_b, "line-7", "production") == 1, 5)
        for _ in range(5):  # warm: B serves it from its resolution cache
            assert served_version(on_b, "line-7", "production") == 1
        moved = on_a.put("/v1/models/line-7/aliases/production", json={"version": 2})
        assert moved.status_code == 200
        took = wait_until(lambda: served_version(on_b, "line-7", "production") == 2, 5)
        assert took < STALENESS_BOUND_SECONDS, took
        # A version deleted on A is gone from B within the bound.
        assert served_version(on_b, "line-7", "2") == 2
        assert on_a.delete("/v1/models/line-7/versions/2").status_code == 200
        took = wait_until(lambda: served_version(on_b, "line-7", "2") is None, 5)
        assert took < STALENESS_BOUND_SECONDS, took
        assert (
            on_b.post("/v1/models/line-7/versions/2/predict", json={"instances": ROWS}).status_code
            == 404
        )

        # 40 trainings of one name, spread over both replicas at once: versions 1..40.
        start = threading.Barrier(8)

        def train(index: int) -> httpx.Response:
            http = (on_a, on_b)[index % 2]
            if index < 8:
                start.wait()
            return http.post("/v1/models", json=kmeans_body("busy", k=2 + index % 3))

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(train, range(40)))
        assert [r.status_code for r in responses] == [201] * 40, [
            r.text for r in responses if r.status_code != 201
        ]
        assert sorted(r.json()["version"] for r in responses) == list(range(1, 41))
        listed = on_b.get("/v1/models/busy/versions", params={"limit": 100}).json()
        assert [v["version"] for v in listed["items"]] == list(range(1, 41))
        jobs = on_a.get("/v1/jobs", params={"model": "busy", "limit": 100}).json()
        assert jobs["total"] == 40
        assert {j["status"] for j in jobs["items"]} == {"succeeded"}
        # Each ran on the replica it was posted to, and holds no lease once it ended.
        owners = {j["owner"]["pid"] for j in jobs["items"]}
        assert owners == {a.process.pid, b.process.pid}
        assert {j["lease_expires_at"] for j in jobs["items"]} == {None}
        # No job's saved rows are left in the store once the jobs have ended.
        store = s3_client(s3_endpoint)
        assert not store.exists(f"{s3_store_url}/jobs") or store.ls(f"{s3_store_url}/jobs") == []


def test_a_job_survives_the_restart_of_the_other_replica(
    database, s3_store_url, s3_endpoint, tmp_path
):
    env = replica_env(database, s3_store_url, s3_endpoint)
    with replicas(env, tmp_path, ["a", "b"]) as (a, b), a.client() as on_a, b.client() as on_b:
        response = on_a.post("/v1/models", json=SLOW_TRAINING)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        running = poll_job(on_b, job_id, ("running", "succeeded", "failed"))
        assert running["status"] == "running", running
        assert running["owner"]["pid"] == a.process.pid
        assert running["attempts"] == 1
        assert running["lease_expires_at"] is not None

        b.stop()  # B restarts meanwhile: A's job is none of its business
        b2 = Replica("b2", env, tmp_path / "b2.log").start()
        try:
            b2.wait_healthy()
            with b2.client() as on_b2:
                done = poll_job(on_b2, job_id, ("succeeded", "failed", "cancelled"))
                assert done["status"] == "succeeded", done
                assert done["attempts"] == 1
                assert done["result"] == {"model": "slow", "version": 1}
                version = on_b2.get("/v1/models/slow/versions/1").json()
                assert version["n_samples"] == len(SLOW_X)
        finally:
            b2.kill_group()
        assert "interrupted" not in on_a.get(f"/v1/jobs/{job_id}").text


def test_a_killed_replica_leaves_no_fitter_and_its_job_is_run_again_elsewhere(
    database, s3_store_url, s3_endpoint, tmp_path
):
    env = replica_env(database, s3_store_url, s3_endpoint)
    with replicas(env, tmp_path, ["a", "b"]) as (a, b), b.client() as on_b:
        with a.client() as on_a:
            retried = on_a.post("/v1/models", json=SLOW_TRAINING).json()["id"]
            once = on_a.post(
                "/v1/models", json=SLOW_TRAINING | {"name": "once", "retryable": False}
            ).json()["id"]
            for job_id in (retried, once):
                assert poll_job(on_b, job_id, ("running", "succeeded"))["status"] == "running"
        a.kill_api_process()
        # Its forkserver and fitting workers die with it (they would keep the cores busy).
        wait_until(lambda: not a.group_alive(), 10)

        # After A's lease lapses, B runs the retryable job again to success...
        done = poll_job(on_b, retried, ("succeeded", "failed", "cancelled"))
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["result"] == {"model": "slow", "version": 1}
        # ...and fails the other with the reason, leaving it no version.
        failed = poll_job(on_b, once, ("succeeded", "failed", "cancelled"))
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "interrupted"
        assert "not retryable" in failed["error"]["detail"]
        assert on_b.get("/v1/models/once").status_code == 404
        versions = on_b.get("/v1/models/slow/versions").json()
        assert [v["version"] for v in versions["items"]] == [1]
        assert "queued again" in b.text()


def test_a_job_is_cancelled_from_the_replica_that_does_not_run_it(
    database, s3_store_url, s3_endpoint, tmp_path
):
    env = replica_env(database, s3_store_url, s3_endpoint)
    with replicas(env, tmp_path, ["a", "b"]) as (a, b), a.client() as on_a, b.client() as on_b:
        never = SLOW_TRAINING | {"params": SLOW_TRAINING["params"] | {"max_iter": 1_000_000}}
        job_id = on_a.post("/v1/models", json=never).json()["id"]
        assert poll_job(on_b, job_id, ("running", "failed"))["status"] == "running"
        response = on_b.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "cancelled"
        assert job["error"]["code"] == "job_cancelled"
        assert on_a.get("/v1/models/slow").status_code == 404
        assert on_a.delete(f"/v1/jobs/{job_id}").status_code == 409


def test_four_replicas_starting_at_once_on_an_older_database_all_come_up(
    database, s3_store_url, s3_endpoint, tmp_path
):
    """On a database one migration behind (and then a new one), every replica comes up: the
    migrations run under an advisory lock, the others wait and find the schema current."""
    engine = sa.create_engine(database)
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0947acfb5492")
    engine.dispose()
    env = replica_env(database, s3_store_url, s3_endpoint)
    with replicas(env, tmp_path, ["a", "b", "c", "d"]) as started:
        for replica in started:
            with replica.client() as http:
                assert http.get("/readyz").json()["status"] == "ready"
        with started[0].client() as http:
            assert http.post("/v1/models", json=kmeans_body("after")).status_code == 201
        with started[3].client() as http:
            assert served_version(http, "after", "latest") == 1
        logs = "".join(r.text() for r in started)
        assert logs.count("Running upgrade 0947acfb5492 -> ") == 1
        assert "duplicate key" not in logs


def test_a_replica_whose_store_is_not_the_databases_refuses_to_start(
    database, s3_store_url, s3_endpoint, tmp_path
):
    env = replica_env(database, s3_store_url, s3_endpoint)
    with replicas(env, tmp_path, ["a"]):
        pass
    own = Replica(
        "own", replica_env(database, f"{s3_store_url}-other", s3_endpoint), tmp_path / "own.log"
    )
    own.start()
    assert own.process.wait(timeout=60) != 0
    assert "is not the store this database's versions live in" in own.text()
    folder = Replica(
        "folder", replica_env(database, str(tmp_path / "store"), s3_endpoint), tmp_path / "f.log"
    )
    folder.start()
    assert folder.process.wait(timeout=60) != 0
    assert "holds no store id" in folder.text()


def test_the_compose_topology_two_replicas_fitting_on_one_dask_cluster(
    database, s3_store_url, s3_endpoint, tmp_path
):
    """docker-compose.yml's shape as plain processes: two replicas on one PostgreSQL database
    and one S3 store, their fits on a Dask scheduler with two workers. A grid selected through
    A on Dask is the grid selected in-process; its registered best is served by B."""
    grid = {
        "algorithm": "gaussian_mixture",
        "params": {"random_state": 0},
        "grid": {"n_components": [1, 2, 3, 4], "covariance_type": ["full", "diag"]},
        "data": {"instances": ROWS},
        "register": {"name": "gmm", "criterion": "bic"},
    }
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    with dask_cluster(tmp_path) as scheduler:
        env = replica_env(database, s3_store_url, s3_endpoint, LLOYD_DASK_SCHEDULER=scheduler)
        with replicas(env, tmp_path, ["a", "b"]) as (a, b), a.client() as on_a, b.client() as on_b:
            report = on_a.post("/v1/model-selection", json=grid)
            assert report.status_code == 200, report.text
            assert "jobs on dask" in a.text()
            served = on_b.post("/v1/models/gmm/predict", json={"instances": ROWS})
            assert served.status_code == 200, served.text
            assert served.json()["version"] == 1
        # The same grid on local worker processes (a server of its own, SQLite and a folder).
        local_env = replica_env(local_url, str(tmp_path / "local-store"), s3_endpoint)
        with replicas(local_env, tmp_path, ["local"]) as (local,), local.client() as on_local:
            expected = on_local.post("/v1/model-selection", json=grid)
            assert expected.status_code == 200, expected.text
    assert report.json() == expected.json()
