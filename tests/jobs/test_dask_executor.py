"""DaskExecutor on real LocalClusters: the numbers of an in-process fit bit for bit, errors as
the local workers report them, a worker killed mid-grid, cancellation, scattering."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import dask
import numpy as np
import pytest
from distributed import Future, get_worker
from sklearn.datasets import make_blobs

from app.errors import InvalidParameter, JobFailed, LloydError, TrainingFailed
from app.jobs.dask_executor import DaskExecution, DaskExecutor, DaskSchedulerUnreachable
from app.jobs.execution import Task
from app.jobs.worker import outcome_of
from app.services.fitting_tasks import fit_candidate

# Tied covariances on these rows change in their last bits when numpy sums their products
# outside BLAS (as it does for the unaligned arrays Dask deserializes): a grid that tells.
X_BLOBS, _ = make_blobs(n_samples=1250, centers=4, random_state=0)


# -- task functions (module-level: the workers import them by name) --------------------------------
def slow_fit_candidate(*, delay: float, **kwargs: Any) -> Any:
    time.sleep(delay)
    return fit_candidate(**kwargs)


def until_cancelled(*, limit: float) -> str:
    """Runs until its task is cancelled (or ``limit`` seconds): a long fit that can be told to
    stop, so that a cancelled one does not hold the worker's thread for the next tests."""
    worker = get_worker()
    key = worker.get_current_task()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        task = worker.state.tasks.get(key)
        if task is None or task.state != "executing":
            return "cancelled"
        time.sleep(0.05)
    return "ran out"


def column_sums(*, X: np.ndarray, tag: int) -> tuple[int, np.ndarray]:
    return tag, X.sum(axis=0)


def alignments(*, small: np.ndarray, large: np.ndarray) -> tuple[int, int]:
    return small.ctypes.data % 16, large.ctypes.data % 16


def exit_worker() -> None:
    os._exit(1)


def lloyd_suspicious(dask_scheduler: Any) -> int:
    """How many times, so far, a worker died while running one of Lloyd's tasks."""
    prefix = dask_scheduler.task_prefixes.get("lloyd")
    return prefix.suspicious if prefix is not None else 0


# -- helpers ---------------------------------------------------------------------------------------
def candidate_kwargs(algorithm: str, params: dict[str, Any], X: np.ndarray) -> dict[str, Any]:
    """A candidate's kwargs as app.services.selection builds them."""
    return {
        "algorithm": algorithm,
        "params": params,
        "preprocessing": [],
        "X": X,
        "feature_names": None,
        "contamination": 0.1,
        "diagram": False,
    }


def mixture_grid(X: np.ndarray) -> list[dict[str, Any]]:
    return [
        candidate_kwargs(
            "gaussian_mixture",
            {"n_components": k, "covariance_type": covariance, "random_state": 0},
            X,
        )
        for k in (1, 2, 3)
        for covariance in ("full", "tied")
    ]


def run_all(execution: DaskExecution, n: int, timeout: float = 60.0) -> list[Any]:
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(results) < n:
        assert time.monotonic() < deadline, f"only {len(results)} of {n} tasks finished"
        for index, result in execution.poll(0.2):
            assert index not in results
            results[index] = result
    assert execution.poll(0.05) == []
    return [results[index] for index in range(n)]


def assert_same_fits(got: list[Any], expected: list[Any]) -> None:
    for (result, diagram), (reference, reference_diagram) in zip(got, expected, strict=True):
        assert result.metrics == reference.metrics
        assert result.params == reference.params
        assert diagram == reference_diagram
        estimator, reference_estimator = result.model.estimator, reference.model.estimator
        for attribute in ("means_", "weights_", "covariances_", "precisions_cholesky_"):
            assert np.array_equal(
                getattr(estimator, attribute), getattr(reference_estimator, attribute)
            ), attribute


def in_process(kwargs_list: list[dict[str, Any]]) -> list[Any]:
    outcomes = [outcome_of(fit_candidate, kwargs, 1) for kwargs in kwargs_list]
    assert all(kind == "ok" for kind, _ in outcomes)
    return [payload for _, payload in outcomes]


def our_keys(executor: DaskExecutor, execution: DaskExecution) -> set[str]:
    return {
        key
        for keys in executor.client.processing().values()
        for key in keys
        if str(key).startswith(execution.label)
    }


def wait_for(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.fixture(scope="module")
def executor() -> Iterator[DaskExecutor]:
    executor = DaskExecutor("local", local_workers=2)
    try:
        yield executor
    finally:
        executor.shutdown()


@pytest.fixture
def cluster_back(executor: DaskExecutor) -> Iterator[None]:
    """For tests that kill workers: the next test finds both workers back."""
    yield
    executor.client.wait_for_workers(2, timeout=60)


# -- tests -----------------------------------------------------------------------------------------
def test_grid_gives_the_numbers_of_an_in_process_fit(executor: DaskExecutor) -> None:
    grid = mixture_grid(X_BLOBS)
    execution = executor.execute([Task(fit_candidate, kwargs) for kwargs in grid])
    try:
        assert execution.started
        got = run_all(execution, len(grid))
    finally:
        execution.close()
    assert_same_fits(got, in_process(grid))


@pytest.mark.parametrize(
    ("algorithm", "params", "error", "detail"),
    [
        ("kmeans", {"n_clusters": 200}, TrainingFailed, "more than the 120 rows"),
        ("dbscan", {"eps": 1e-4, "min_samples": 50}, TrainingFailed, "no core samples"),
        ("gaussian_mixture", {"covariance_type": "bogus"}, InvalidParameter, "covariance_type"),
        ("no_such_algorithm", {}, JobFailed, "a worker failed unexpectedly"),
    ],
)
def test_an_error_outcome_is_raised_as_its_error(
    executor: DaskExecutor,
    algorithm: str,
    params: dict[str, Any],
    error: type[LloydError],
    detail: str,
) -> None:
    X = np.random.RandomState(0).normal(size=(120, 2))
    execution = executor.execute([Task(fit_candidate, candidate_kwargs(algorithm, params, X))])
    try:
        with pytest.raises(error, match=detail) as raised:
            run_all(execution, 1)
        assert type(raised.value) is error
    finally:
        execution.close()


def test_a_worker_killed_mid_grid_is_replaced_and_its_tasks_run_again(
    executor: DaskExecutor, cluster_back: None
) -> None:
    client = executor.client
    grid = mixture_grid(X_BLOBS)
    execution = executor.execute(
        [Task(slow_fit_candidate, {"delay": 0.8, **kwargs}) for kwargs in grid]
    )
    try:
        wait_for(lambda: our_keys(executor, execution), 10, "no task started")
        victim = next(
            address
            for address, keys in client.processing().items()
            if any(str(key).startswith(execution.label) for key in keys)
        )
        suspicious = client.run_on_scheduler(lloyd_suspicious)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        got = run_all(execution, len(grid))
    finally:
        execution.close()
    assert_same_fits(got, in_process(grid))
    assert victim not in client.nthreads()  # replaced by its nanny, at another address
    # The scheduler saw the worker die running our task(s), and ran them again elsewhere.
    assert client.run_on_scheduler(lloyd_suspicious) > suspicious


def test_a_task_that_keeps_killing_workers_fails_its_job() -> None:
    # A cluster of its own, whose scheduler gives up at the first death (the module's would
    # need four, each worker restarted by its nanny).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        fragile = DaskExecutor("local", local_workers=1)
    try:
        execution = fragile.execute([Task(exit_worker, {})])
        try:
            with pytest.raises(JobFailed, match=r"a Dask worker died once running this task"):
                run_all(execution, 1)
        finally:
            execution.close()
    finally:
        fragile.shutdown()


def test_close_cancels_what_still_runs(executor: DaskExecutor) -> None:
    client = executor.client
    tasks = [Task(until_cancelled, {"limit": 30}) for _ in range(3)]
    execution = executor.execute(tasks)
    wait_for(lambda: len(our_keys(executor, execution)) >= 2, 10, "the tasks did not start")
    execution.close()
    wait_for(lambda: not any(client.processing().values()), 5, "tasks still processing after close")
    assert execution.poll(0.5) == []
    assert not any(str(key).startswith(execution.label) for key in client.who_has())
    execution.close()  # a second close does nothing


def test_a_task_cancelled_on_the_cluster_fails_its_job(executor: DaskExecutor) -> None:
    execution = executor.execute([Task(until_cancelled, {"limit": 30})])
    try:
        handle = Future(f"{execution.label}-0", executor.client)
        executor.client.cancel([handle], force=True, reason="an operator")
        with pytest.raises(JobFailed, match=r"the Dask scheduler cancelled a task \(an operator\)"):
            run_all(execution, 1)
    finally:
        execution.close()


def test_a_large_array_is_scattered_once(executor: DaskExecutor) -> None:
    client = executor.client
    # Both workers up (one may be restarting after a test above killed it).
    client.wait_for_workers(2, timeout=60)
    X = np.random.RandomState(1).normal(size=(131072, 2))  # 2 MiB
    assert X.nbytes == 2 << 20
    small = np.arange(6.0).reshape(3, 2)  # below the bound: travels in each task
    tasks = [Task(column_sums, {"X": X, "tag": tag}) for tag in range(5)]
    tasks.append(Task(column_sums, {"X": small, "tag": 5}))
    execution = executor.execute(tasks)
    try:
        got = run_all(execution, len(tasks))
        arrays = [key for key in client.who_has() if str(key).startswith("ndarray-")]
        assert len(arrays) == 1
        # Held by both workers (its copy to the second may still be on its way): losing one
        # does not lose the data.
        wait_for(lambda: len(client.who_has()[arrays[0]]) == 2, 10, "not held by both workers")
    finally:
        execution.close()
    for tag, (got_tag, sums) in enumerate(got):
        assert got_tag == tag
        assert np.array_equal(sums, (X if tag < 5 else small).sum(axis=0))
    wait_for(lambda: arrays[0] not in client.who_has(), 5, "the scattered array was not released")


def test_the_arrays_a_task_gets_are_aligned_as_numpy_allocates_them(
    executor: DaskExecutor,
) -> None:
    small, large = np.ones((100, 2)), np.ones((131072, 2))  # in the task; scattered
    execution = executor.execute([Task(alignments, {"small": small, "large": large})])
    try:
        assert run_all(execution, 1) == [(0, 0)]
    finally:
        execution.close()


def test_executions_from_several_threads_share_one_client(executor: DaskExecutor) -> None:
    grids = [mixture_grid(X_BLOBS)[:3], mixture_grid(X_BLOBS)[3:]]
    got: dict[int, list[Any]] = {}

    def run(which: int) -> None:
        execution = executor.execute([Task(fit_candidate, kwargs) for kwargs in grids[which]])
        try:
            got[which] = run_all(execution, len(grids[which]))
        finally:
            execution.close()

    threads = [threading.Thread(target=run, args=(which,)) for which in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for which in (0, 1):
        assert_same_fits(got[which], in_process(grids[which]))


def test_an_executor_connects_to_a_scheduler_by_address(executor: DaskExecutor) -> None:
    remote = DaskExecutor(executor.address)
    try:
        assert remote.address == executor.address
        grid = mixture_grid(X_BLOBS)[:2]
        execution = remote.execute([Task(fit_candidate, kwargs) for kwargs in grid])
        try:
            assert_same_fits(run_all(execution, len(grid)), in_process(grid))
        finally:
            execution.close()
    finally:
        remote.shutdown()
    assert len(executor.client.nthreads()) == 2  # the cluster is not the remote client's


def test_an_address_nobody_listens_on_fails_fast_and_says_so() -> None:
    started = time.monotonic()
    with pytest.raises(DaskSchedulerUnreachable, match=r"tcp://127\.0\.0\.1:9.*within 1 s"):
        DaskExecutor("tcp://127.0.0.1:9", connect_timeout=1)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="not a Dask scheduler address: 'nonsense'"):
        DaskExecutor("nonsense")
