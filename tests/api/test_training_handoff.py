"""A training through the API, fitted in a worker process that gets its rows through shared
memory, equals the same training done in-process with scikit-learn: the fitted estimator to
the last bit, every metric equal to scikit-learn's function on the same rows, the threshold,
percentiles and training medians equal to those computed directly."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_info, threadpool_limits

from app.jobs import shared_arrays
from app.jobs.execution import Task
from app.jobs.local_executor import LocalExecutor
from app.jobs.runner import JobPlan, JobRunner
from app.lifecycle import TASK_MODULES
from app.main import create_app
from app.ml.anomaly import AnomalyThreshold
from app.ml.cluster_separation import SILHOUETTE_SAMPLE_SIZE
from app.registry.job_store import JobClaim, JobStore, NewJob
from tests.api.test_jobs import is_gone, poll, worker_pids
from tests.conftest import make_settings

CORES = os.cpu_count() or 1
# Large enough to be handed over in shared memory, and above the silhouette's sample size.
ROWS, FEATURES = 20_000, 16
KMEANS_PARAMS = {"n_clusters": 8, "n_init": 1, "random_state": 0}
GMM_PARAMS = {"n_components": 4, "covariance_type": "full", "max_iter": 20, "random_state": 0}
CONTAMINATION = 0.03


def blobs() -> np.ndarray:
    X, _ = make_blobs(
        n_samples=ROWS, n_features=FEATURES, centers=8, cluster_std=2.0, random_state=0
    )
    assert X.nbytes >= shared_arrays.MIN_SHARED_BYTES
    return X


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # One job per core: each worker fits with one BLAS/OpenMP thread, as the references below.
    settings = make_settings(tmp_path_factory.mktemp("handoff"), max_concurrent_jobs=CORES)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def train(client: TestClient, X: np.ndarray, name: str, algorithm: str, params: dict) -> dict:
    fields = {
        "name": name,
        "algorithm": algorithm,
        "params": params,
        "anomaly": {"contamination": CONTAMINATION},
    }
    response = client.post(
        "/v1/models",
        content=npy(X),
        headers={"Content-Type": "application/x-npy", "Lloyd-Request": orjson.dumps(fields)},
    )
    assert response.status_code == 201, response.text
    return response.json()


def stored_model(client: TestClient, name: str) -> Any:
    registry = client.app.state.registry
    return registry.load(registry.get_version(name, 1))


def assert_threshold_equal(actual: AnomalyThreshold, expected: AnomalyThreshold) -> None:
    assert actual.threshold == expected.threshold
    assert same_bits(actual.reference, expected.reference)
    assert actual.summary == expected.summary
    new = np.linspace(expected.reference[0], expected.reference[-1] * 1.5, 257)
    assert same_bits(actual.percentiles(new), expected.percentiles(new))


@pytest.mark.parametrize("layout", ["C", "F"])
def test_a_kmeans_training_equals_scikit_learn_in_process(client: TestClient, layout: str):
    X = np.asarray(blobs(), order=layout)
    version = train(client, X, f"kmeans-{layout}", "kmeans", KMEANS_PARAMS)
    with threadpool_limits(limits=1):
        reference = KMeans(**KMEANS_PARAMS).fit(X)
        distances = reference.transform(X)
    model = stored_model(client, f"kmeans-{layout}")
    assert same_bits(model.estimator.cluster_centers_, reference.cluster_centers_)
    assert np.array_equal(model.estimator.labels_, reference.labels_)
    metrics, labels = version["metrics"], reference.labels_
    assert metrics["inertia"] == reference.inertia_
    assert metrics["n_iter"] == reference.n_iter_
    assert metrics["cluster_sizes"] == np.bincount(labels).tolist()
    assert metrics["silhouette"] == silhouette_score(
        X, labels, sample_size=SILHOUETTE_SAMPLE_SIZE, random_state=0
    )
    assert metrics["silhouette_sample_size"] == SILHOUETTE_SAMPLE_SIZE
    assert metrics["davies_bouldin"] == davies_bouldin_score(X, labels)
    assert metrics["calinski_harabasz"] == calinski_harabasz_score(X, labels)
    expected = AnomalyThreshold.fit(distances.min(axis=1), CONTAMINATION)
    assert_threshold_equal(model.anomaly, expected)
    assert version["anomaly"] == orjson.loads(orjson.dumps(expected.summary))
    assert same_bits(model.training_medians, np.median(X, axis=0))


def test_a_mixture_training_equals_scikit_learn_in_process(client: TestClient):
    X = blobs()
    version = train(client, X, "mixture", "gaussian_mixture", GMM_PARAMS)
    with threadpool_limits(limits=1):
        reference = GaussianMixture(**GMM_PARAMS).fit(X)
    model = stored_model(client, "mixture")
    for attribute in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert same_bits(getattr(model.estimator, attribute), getattr(reference, attribute))
    metrics = version["metrics"]
    assert metrics["n_iter"] == reference.n_iter_
    assert metrics["converged"] == reference.converged_
    assert metrics["lower_bound"] == reference.lower_bound_
    assert metrics["cluster_sizes"] == np.bincount(reference.predict(X), minlength=4).tolist()
    assert metrics["bic"] == pytest.approx(reference.bic(X), rel=1e-12)
    assert metrics["aic"] == pytest.approx(reference.aic(X), rel=1e-12)
    # The threshold is drawn from the scores the served model gives its own training rows.
    expected = AnomalyThreshold.fit(model.anomaly_scores(X), CONTAMINATION)
    assert_threshold_equal(model.anomaly, expected)
    assert same_bits(model.training_medians, np.median(X, axis=0))


# -- the hand-over itself ----------------------------------------------------------------------
def describe(*, X: np.ndarray, same: np.ndarray, small: np.ndarray) -> dict[str, Any]:
    """Run in a worker: what arrived, and the BLAS/OpenMP threads the worker fits with."""
    X[0, 0] = -1.0  # writable, like an unpickled array; the parent's copy stays as it was
    return {
        "X": X.copy(),
        "c_contiguous": X.flags.c_contiguous,
        "f_contiguous": X.flags.f_contiguous,
        "same_memory": np.shares_memory(X, same),
        "small": small,
        "threads": {info["user_api"]: info["num_threads"] for info in threadpool_info()},
    }


def open_shared_files() -> int:
    """This process's descriptors of shared arrays (memfds named lloyd-array)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            count += "lloyd-array" in os.readlink(f"/proc/self/fd/{fd}")
    return count


@pytest.mark.parametrize("layout", ["C", "F"])
def test_arrays_reach_the_worker_equal_writable_and_in_their_layout(
    client: TestClient, layout: str
):
    jobs: JobStore = client.app.state.jobs
    # One job at a time: its worker gets every core's thread.
    owner = "handoff|1|t"
    runner = JobRunner(
        jobs=jobs,
        executor=LocalExecutor(max_workers=1, preload=TASK_MODULES),
        owner=owner,
        timeout_seconds=60,
        max_jobs=1,
    )
    X = np.asarray(np.random.default_rng(0).normal(size=(40_000, 7)), order=layout)
    small = np.arange(10.0)
    before = X.copy(order="K")
    job = jobs.create(
        NewJob(kind="training", model_name="x", algorithm="kmeans", total=1, request={}),
        owner=owner,
        lease_seconds=60,
    )
    results: list[Any] = []

    def finish(answers: list[Any], claim: JobClaim) -> None:
        results.extend(answers)
        jobs.complete(claim, {})

    handle = runner.submit(
        job, JobPlan([Task(describe, {"X": X, "same": X, "small": small})], finish)
    )
    assert handle.done.wait(60)
    assert jobs.get(job.id).status == "succeeded"
    (arrived,) = results
    expected = before.copy()
    expected[0, 0] = -1.0
    assert same_bits(arrived["X"], expected)
    assert arrived["c_contiguous"] == (layout == "C")
    assert arrived["f_contiguous"] == (layout == "F")
    assert arrived["same_memory"]  # one array passed twice is written and mapped once
    assert same_bits(arrived["small"], small)
    assert same_bits(X, before)  # the worker's write stayed in the worker
    # The worker fits with the cores' share of threads: cores / LLOYD_MAX_CONCURRENT_JOBS.
    assert set(arrived["threads"].values()) == {CORES}
    if os.path.isdir("/proc/self/fd"):
        assert open_shared_files() == 0  # closed with the job


def test_without_a_memory_file_arrays_go_through_the_pipe(monkeypatch: pytest.MonkeyPatch):
    def refused() -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(shared_arrays, "_anonymous_file", refused)
    X = np.ones((1_000, 200))
    (kwargs,), shared = shared_arrays.share_arrays([{"X": X, "k": 3}])
    assert kwargs == {"X": X, "k": 3} and kwargs["X"] is X
    assert shared == []


def test_a_cancelled_training_leaves_no_shared_rows_behind(client: TestClient):
    # A mixture that never converges (tol=0, a million EM iterations), on rows that go to the
    # worker in shared memory.
    fields = {
        "name": "never-ends",
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 10, "max_iter": 1_000_000, "tol": 0.0, "random_state": 0},
        "wait": False,
    }
    response = client.post(
        "/v1/models",
        content=npy(blobs()),
        headers={"Content-Type": "application/x-npy", "Lloyd-Request": orjson.dumps(fields)},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = poll(client, job_id, ("running", "succeeded", "failed", "cancelled"))
    assert job["status"] == "running", job
    [pid] = worker_pids()
    if os.path.isdir("/proc/self/fd"):
        assert open_shared_files() == 1  # the rows, while the worker has them
    cancelled = client.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert is_gone(pid)
    if os.path.isdir("/proc/self/fd"):
        assert open_shared_files() == 0
