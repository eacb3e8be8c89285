"""DaskExecutor: a job's tasks as futures on a Dask distributed cluster, one per task.

Each task runs ``outcome_of`` on a Dask worker (``outcome_on_worker``), so that its errors come
back as outcomes, as from a local worker process, and its numbers are a local fit's. A worker
lost mid-task is Dask's to handle: its scheduler runs the task again elsewhere, and gives up
(``KilledWorker``) once workers died running it more than
``distributed.scheduler.allowed-failures`` times. Large arrays are scattered once per execution,
to two workers at least, so that losing one worker does not lose the data its tasks need.

Cancelling a future stops it from starting; a task already running on a worker runs to its end
(a worker thread cannot be interrupted), its result discarded.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import distributed.comm
import numpy as np
from distributed import Client, Future, KilledWorker, LocalCluster
from distributed.security import Security

from app.errors import JobFailed
from app.jobs.execution import Outcome, Task, result_of
from app.jobs.worker import outcome_of

log = logging.getLogger(__name__)

# An array at least this large goes to the workers once per execution (``client.scatter``);
# smaller ones travel inside each task.
SCATTER_BYTES = 1 << 20
# What numpy's own allocations are aligned to (glibc's malloc on 64-bit Linux).
NUMPY_ALIGNMENT = 16
# Each scattered array is held by this many workers at least (when the cluster has them).
SCATTER_REPLICAS = 2


class DaskSchedulerUnreachable(ConnectionError):
    """No Dask scheduler answers at the address given."""


class DaskExecution:
    """The tasks of one job, as futures. Used by one thread; several run on one client."""

    def __init__(self, executor: DaskExecutor, tasks: list[Task]) -> None:
        self._executor = executor
        self._client = executor.client
        self.label = f"lloyd-{uuid.uuid4().hex}"
        self._pending: dict[Future, int] = {}
        self._scattered: list[Future] = []
        self._finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._started = False
        self._closed = False
        self._lock = threading.Lock()  # close() may come from another thread (a shutdown)
        try:
            kwargs = self._scatter([task.kwargs for task in tasks])
            keys = [f"{self.label}-{index}" for index in range(len(tasks))]
            futures = self._client.map(
                outcome_on_worker,
                [task.fn for task in tasks],
                kwargs,
                [executor.threads] * len(tasks),
                key=keys,
                pure=False,
            )
        except Exception as exc:
            self.close()
            log.exception(
                "%s: submitting to the Dask scheduler at %s failed", self.label, executor.address
            )
            raise JobFailed(
                f"the tasks could not be submitted to the Dask scheduler ({type(exc).__name__}); "
                "see the server log"
            ) from exc
        with self._lock:
            self._pending = {future: index for index, future in enumerate(futures)}
            self._started = True
        for future in futures:
            future.add_done_callback(self._finished.put)

    # -- submission -------------------------------------------------------------------------------
    def _scatter(self, kwargs_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The kwargs with each large array replaced by the future of its one scattered copy:
        an array object shared by several tasks (a grid's rows) is sent once."""
        arrays: dict[int, np.ndarray] = {}
        uses: dict[int, int] = {}
        for kwargs in kwargs_list:
            for key in {id(array): None for array in _large_arrays(kwargs)}:
                uses[key] = uses.get(key, 0) + 1
            arrays.update((id(array), array) for array in _large_arrays(kwargs))
        if not arrays:
            return kwargs_list
        workers = list(self._client.nthreads())
        futures: dict[int, Future] = {}
        for key, array in arrays.items():
            replicas = min(len(workers), max(SCATTER_REPLICAS, uses[key]))
            if replicas:
                future = self._client.scatter(
                    array, workers=random.sample(workers, replicas), broadcast=True, hash=False
                )
            else:  # no worker yet: the scheduler keeps it for the first one
                future = self._client.scatter(array, hash=False)
            self._scattered.append(future)
            futures[key] = future
        return [_swap(kwargs, futures) for kwargs in kwargs_list]

    # -- the Execution interface ------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def poll(self, timeout: float) -> list[tuple[int, Any]]:
        """The tasks finished since the last call, as ``(index, result)``, waiting up to
        ``timeout`` seconds for the first; a task's error is raised, as is a lost task."""
        with self._lock:
            if self._closed or not self._pending:
                return []
        done = self._finished_since(timeout)
        if not done:
            return []
        indexed: list[tuple[int, Future]] = []
        with self._lock:
            if self._closed:
                return []
            for future in done:
                if future not in self._pending:
                    continue
                if future.status in ("pending", "lost"):
                    # Its result was lost with a worker after it finished: Dask computes it
                    # again, and the callback tells once more.
                    future.add_done_callback(self._finished.put)
                    continue
                indexed.append((self._pending.pop(future), future))
        indexed.sort(key=lambda item: item[0])
        try:
            finished = [future for _, future in indexed if future.status == "finished"]
            try:
                outcomes = dict(zip(finished, self._client.gather(finished), strict=True))
            except Exception as exc:  # cancelled or failed between finishing and its gather
                raise self._failure(exc) from exc
            results = []
            for index, future in indexed:
                if future not in outcomes:
                    raise self._failure_of(future)
                results.append((index, result_of(f"{self.label} task {index}", outcomes[future])))
            return results
        finally:
            # Read (or failed): the workers may drop them, even while a raised error's
            # traceback still holds these futures.
            for _, future in indexed:
                future.release()

    def _finished_since(self, timeout: float) -> list[Future]:
        """The futures whose callbacks told of their end since the last call, waiting up to
        ``timeout`` seconds for the first."""
        try:
            done = [self._finished.get(timeout=max(timeout, 0))]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self._finished.get_nowait())
            except queue.Empty:
                return done

    def close(self) -> None:
        """Cancel every task not finished yet (even those running) and release the scattered
        arrays. Safe to call more than once, and from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = list(self._pending), {}
            scattered, self._scattered = self._scattered, []
        while True:  # the finished futures nobody will read
            try:
                self._finished.get_nowait()
            except queue.Empty:
                break
        try:
            if pending:
                self._client.cancel(pending, force=True, reason="lloyd-execution-closed")
            for future in scattered:
                future.release()
        except Exception:  # the client is gone already: nothing left to release
            log.warning("%s: could not cancel its Dask futures", self.label, exc_info=True)
        finally:
            self._executor._forget(self)

    # -- failures ---------------------------------------------------------------------------------
    def _failure_of(self, future: Future) -> JobFailed:
        if future.status == "cancelled":
            try:
                future.result(timeout=5)
            except Exception as exc:
                return self._failure(exc)
            return JobFailed("a Dask task was cancelled")
        return self._failure(future.exception(timeout=5))

    def _failure(self, exc: BaseException | None) -> JobFailed:
        if isinstance(exc, KilledWorker):
            deaths = exc.allowed_failures + 1
            return JobFailed(
                f"a Dask worker died {'once' if deaths == 1 else f'{deaths} times'} running "
                "this task "
                "(distributed.scheduler.allowed-failures); the data may need more memory than "
                "a worker has"
            )
        if isinstance(exc, CancelledError):
            reason = getattr(exc, "reason", None) or str(exc)
            if reason == "scheduler-connection-lost":
                return JobFailed("the connection to the Dask scheduler was lost")
            return JobFailed(f"the Dask scheduler cancelled a task ({reason})")
        log.error("%s: a Dask task failed", self.label, exc_info=exc)
        return JobFailed(
            f"a Dask task failed ({type(exc).__name__}); see the server log (a worker without "
            "Lloyd's code installed fails this way)"
        )


class DaskExecutor:
    """Runs jobs' tasks on a Dask cluster: an in-process ``LocalCluster`` it owns (address
    ``"local"``) or the scheduler at ``address`` ("tcp://host:port")."""

    name = "dask"
    stopped_means = (
        "its tasks were cancelled on the Dask cluster (a task already running there runs to "
        "its end, its result dropped)"
    )

    def __init__(
        self,
        address: str,
        *,
        local_workers: int = 2,
        threads: int = 1,
        connect_timeout: float = 10.0,
    ) -> None:
        self.threads = threads  # BLAS/OpenMP threads of each task
        self._cluster: LocalCluster | None = None
        self._executions: set[DaskExecution] = set()
        self._lock = threading.Lock()
        if address == "local":
            self._cluster = LocalCluster(
                n_workers=local_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # The scheduler's HTTP routes (health, metrics) on a free port of this host, not
                # on 8787 of every interface.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            )
            target: str | LocalCluster = self._cluster
        else:
            target = address
            # A client that fails to connect keeps its event loop thread, and times out again
            # when it is collected: whether anything answers is asked first, without one.
            _check_reachable(address, connect_timeout)
        try:
            self.client = Client(target, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self._close_cluster()
            raise DaskSchedulerUnreachable(
                f"no Dask scheduler answered at {address!r} within {connect_timeout:g} s: {exc}"
            ) from exc
        self._address = self.client.scheduler.address
        log.info("Dask executor on the scheduler at %s", self._address)

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return self._address

    def execute(self, tasks: list[Task]) -> DaskExecution:
        """Submit every task at once (the scheduler places them); returns once submitted."""
        execution = DaskExecution(self, tasks)
        with self._lock:
            self._executions.add(execution)
        return execution

    def _forget(self, execution: DaskExecution) -> None:
        with self._lock:
            self._executions.discard(execution)

    def shutdown(self) -> None:
        """Close the running executions, then the client, then the cluster if it is ours."""
        with self._lock:
            executions = list(self._executions)
        for execution in executions:
            execution.close()
        try:
            self.client.close()
        finally:
            self._close_cluster()

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            cluster.close()


def outcome_on_worker(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int) -> Outcome:
    """``outcome_of`` on a Dask worker, its arrays first copied to memory aligned as numpy
    allocates it. Dask deserializes an array at whatever byte offset of its message it arrived
    (measured: any, not even a multiple of 8), and numpy hands no unaligned array to BLAS: its
    products are then summed in another order, slower, and differ from a local fit's in their
    last bits (a tied-covariance mixture's BIC, say)."""
    return outcome_of(fn, _aligned(kwargs), threads)


def _aligned(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.ctypes.data % NUMPY_ALIGNMENT:
            return value.copy(order="K")
        return value
    if isinstance(value, dict):
        return {key: _aligned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_aligned(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_aligned(item) for item in value)
    return value


def _check_reachable(address: str, timeout: float) -> None:
    """Raise ``ValueError`` for an address that is not one, ``DaskSchedulerUnreachable`` when
    nothing answers there within ``timeout`` seconds (connections refused are retried until
    then: a scheduler may be starting)."""

    # TLS as the client would use it (distributed.comm.tls.* in Dask's configuration).
    connection_args = Security().get_connection_args("client")

    async def connect() -> None:
        comm = await distributed.comm.connect(address, timeout=timeout, **connection_args)
        await comm.close()

    try:
        asyncio.run(connect())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a Dask scheduler address: {address!r} ({exc})") from exc
    except (OSError, TimeoutError) as exc:
        raise DaskSchedulerUnreachable(
            f"no Dask scheduler answered at {address!r} within {timeout:g} s: {exc}"
        ) from exc


def _large_arrays(value: Any) -> Iterator[np.ndarray]:
    if isinstance(value, np.ndarray):
        if value.nbytes >= SCATTER_BYTES:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _large_arrays(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _large_arrays(item)


def _swap(value: Any, futures: dict[int, Future]) -> Any:
    """``value`` with every scattered array replaced by its future (containers copied)."""
    if isinstance(value, np.ndarray):
        return futures.get(id(value), value)
    if isinstance(value, dict):
        return {key: _swap(item, futures) for key, item in value.items()}
    if isinstance(value, list):
        return [_swap(item, futures) for item in value]
    if isinstance(value, tuple):
        return tuple(_swap(item, futures) for item in value)
    return value
