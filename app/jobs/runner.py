"""JobRunner: runs each job's tasks in worker processes, at most ``max_workers`` at once across
all jobs, kills them on cancel or past the time limit, and records every state in the JobStore.

Why processes of our own rather than concurrent.futures or loky: a task past its time limit or
cancelled must be killed, and neither pool can kill one task without breaking the pool. A
forkserver makes each new process cheap (scikit-learn is imported once, in the server), and
a task's large arrays reach its worker through shared memory (app.jobs.shared_arrays).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from app.errors import JobFailed, LloydError, error_document, error_from_document
from app.jobs.shared_arrays import SharedArray, share_arrays
from app.jobs.worker import run_task
from app.registry.job_store import FAILED, SUCCEEDED, JobRecord, JobStore

log = logging.getLogger(__name__)

_PRELOAD = ["app.jobs.worker_preload"]
_context_lock = threading.Lock()
_context: Any = None


def _process_context() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            _context = context
        return _context


@dataclass(frozen=True)
class Task:
    """A module-level function and its keyword arguments (both picklable)."""

    fn: Callable[..., Any]
    kwargs: dict[str, Any]


class _Stop(Exception):
    def __init__(self, status: str, error: dict[str, Any] | None) -> None:
        self.status = status
        self.error = error


@dataclass
class JobHandle:
    job_id: str
    done: threading.Event = field(default_factory=threading.Event)
    stop_reason: tuple[str, dict[str, Any] | None] | None = None
    # Held while the job finishes (registers its result); a cancel waits for it, so a job is
    # never cancelled halfway through writing its version.
    finishing: threading.Lock = field(default_factory=threading.Lock)
    # What ``finish`` chose to hand back to the request that started the job, in this process
    # (a registered version, say), so that it need not be read back after a concurrent delete.
    outcome: dict[str, Any] = field(default_factory=dict)


class JobRunner:
    def __init__(self, *, jobs: JobStore, max_workers: int, timeout_seconds: float) -> None:
        self.jobs = jobs
        self.max_workers = max_workers
        self.timeout_seconds = timeout_seconds
        self._slots = threading.BoundedSemaphore(max_workers)
        self._handles: dict[str, JobHandle] = {}
        self._lock = threading.Lock()
        # BLAS/OpenMP threads per worker, so that a full pool does not oversubscribe the cores.
        self._threads = max(1, (os.cpu_count() or 1) // max_workers)

    def submit(
        self,
        job: JobRecord,
        tasks: list[Task],
        finish: Callable[[list[Any]], dict[str, Any]],
        on_done: Callable[[str], None] | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> JobHandle:
        """Start ``job``: its ``tasks`` run in workers, then ``finish(results)`` runs here and
        returns the job's result document; ``on_done(status)`` is told how it ended."""
        handle = JobHandle(job.id, outcome=outcome if outcome is not None else {})
        with self._lock:
            self._handles[job.id] = handle
        threading.Thread(
            target=self._supervise,
            args=(handle, tasks, finish, on_done),
            name=f"job-{job.id[:8]}",
            daemon=True,
        ).start()
        return handle

    def handle(self, job_id: str) -> JobHandle | None:
        with self._lock:
            return self._handles.get(job_id)

    def stop(self, job_id: str, status: str, error: dict[str, Any] | None = None) -> bool:
        """Ask a job of this process to stop; False when it is not running here."""
        handle = self.handle(job_id)
        if handle is None or handle.done.is_set():
            return False
        with handle.finishing:
            handle.stop_reason = (status, error)
        handle.done.wait()
        return True

    def shutdown(self) -> None:
        """Stop every job of this process (at shutdown): their workers are killed."""
        with self._lock:
            handles = list(self._handles.values())
        error = {"code": "interrupted", "status": 500, "detail": "interrupted by shutdown"}
        for handle in handles:
            if not handle.done.is_set():
                self.stop(handle.job_id, FAILED, error)

    # -- the supervisor thread of one job --------------------------------------------------------
    def _check(self, handle: JobHandle, deadline: float) -> None:
        if handle.stop_reason is not None:
            raise _Stop(*handle.stop_reason)
        if time.monotonic() > deadline:
            raise _Stop(
                FAILED,
                {
                    "code": "job_timeout",
                    "status": 500,
                    "detail": f"the job ran longer than {self.timeout_seconds:g} s "
                    "(LLOYD_JOB_TIMEOUT_SECONDS); its workers were killed",
                },
            )

    def _start(self, task: Task) -> tuple[BaseProcess, Connection]:
        context = _process_context()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=run_task, args=(sender, task.fn, task.kwargs, self._threads), daemon=True
        )
        process.start()
        sender.close()
        return process, receiver

    def _supervise(
        self,
        handle: JobHandle,
        tasks: list[Task],
        finish: Callable[[list[Any]], dict[str, Any]],
        on_done: Callable[[str], None] | None,
    ) -> None:
        job_id = handle.job_id
        status = FAILED
        # The limit counts from the job's first worker, not from its wait for a free slot (or
        # for the forkserver to start): a job that has not run has not run too long.
        deadline = math.inf
        pending = deque(enumerate(tasks))
        running: dict[int, tuple[BaseProcess, Connection]] = {}
        results: list[Any] = [None] * len(tasks)
        done = 0
        started = False
        # The tasks' large arrays, written to shared memory when the first worker starts (not
        # while the job waits for a slot), and closed when the job ends.
        shared_kwargs: list[dict[str, Any]] | None = None
        shared: list[SharedArray] = []
        try:
            while pending or running:
                self._check(handle, deadline)
                while pending and self._slots.acquire(blocking=False):
                    index, task = pending.popleft()
                    try:
                        if shared_kwargs is None:
                            shared_kwargs, shared = share_arrays(t.kwargs for t in tasks)
                        running[index] = self._start(Task(task.fn, shared_kwargs[index]))
                    except BaseException:
                        self._slots.release()
                        raise
                    if not started:
                        started = True
                        self.jobs.mark_running(job_id)
                        deadline = time.monotonic() + self.timeout_seconds
                if not running:
                    time.sleep(0.02)  # every slot is taken by other jobs
                    continue
                wait([conn for _, conn in running.values()], timeout=0.1)
                for index, (process, conn) in list(running.items()):
                    if not conn.poll():
                        if not process.is_alive() and not conn.poll():
                            raise JobFailed(
                                f"a worker process died (exit code {process.exitcode}); "
                                "the data may need more memory than the worker has"
                            )
                        continue
                    try:
                        outcome = conn.recv()
                    except EOFError:
                        process.join()
                        raise JobFailed(
                            f"a worker process died (exit code {process.exitcode})"
                        ) from None
                    process.join()
                    conn.close()
                    del running[index]
                    self._slots.release()
                    kind, payload = outcome
                    if kind == "error":
                        raise error_from_document(payload)
                    if kind == "crash":
                        log.error("job %s: a worker failed:\n%s", job_id, payload)
                        raise JobFailed("a worker failed unexpectedly; see the server log")
                    results[index] = payload
                    done += 1
                    self.jobs.progress(job_id, done)
            with handle.finishing:
                self._check(handle, deadline)
                result = finish(results)
                self.jobs.finish(job_id, SUCCEEDED, result=result)
                status = SUCCEEDED
        except _Stop as stop:
            status = stop.status
            self.jobs.finish(job_id, stop.status, error=stop.error)
        except LloydError as exc:
            self.jobs.finish(job_id, FAILED, error=error_document(exc))
        except Exception:
            log.exception("job %s failed", job_id)
            self.jobs.finish(
                job_id,
                FAILED,
                error={"code": "internal_error", "status": 500, "detail": "the job failed"},
            )
        finally:
            for process, conn in running.values():
                process.kill()
                process.join()
                conn.close()
                self._slots.release()
            for array in shared:
                array.close()
            with self._lock:
                self._handles.pop(job_id, None)
            handle.done.set()
            if on_done is not None:
                on_done(status)
