"""LocalExecutor: a job's tasks in worker processes of this host, at most ``max_workers`` at
once across every job; killed on cancel or past the time limit, and dead with their API process.

Why processes of our own rather than concurrent.futures or loky: a task past its time limit or
cancelled must be killed, and neither pool can kill one task without breaking the pool. A
forkserver makes each new process cheap (scikit-learn is imported once, in the server), and a
task's large arrays reach its worker through shared memory (app.jobs.shared_arrays).

A worker is the forkserver's child, and the forkserver lives as long as any worker holds its
pipe, so neither notices on its own when the API process is killed. Every worker holds the
read end of a *lifeline*, a pipe whose only writer is this process: when it dies, however, the
kernel closes that end, and each worker's watch thread ends the worker at once.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import DupFd
from typing import Any

from app.errors import JobFailed
from app.jobs.execution import Task, result_of
from app.jobs.shared_arrays import SharedArray, share_arrays
from app.jobs.worker import run_task

_PRELOAD = ["app.jobs.worker_preload"]
_context_lock = threading.Lock()
_context: Any = None


def _process_context(preload: tuple[str, ...] = ()) -> Any:
    """The process's forkserver context; the first call names the modules it preloads."""
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([*_PRELOAD, *preload])
            _context = context
        return _context


class LocalExecutor:
    name = "local"
    stopped_means = "its workers were killed"

    def __init__(self, *, max_workers: int, preload: tuple[str, ...] = ()) -> None:
        """``preload``: modules of the tasks to come, imported once by the forkserver rather
        than by every worker (the first executor of the process decides)."""
        self.max_workers = max_workers
        self.preload = preload
        self._slots = threading.BoundedSemaphore(max_workers)
        # BLAS/OpenMP threads per worker, so that a full pool does not oversubscribe the cores.
        self.threads = max(1, (os.cpu_count() or 1) // max_workers)
        self._lifeline_lock = threading.Lock()
        self._lifeline: tuple[int, int] | None = None

    def start(self) -> None:
        """Start the forkserver now (it imports scikit-learn: the first job need not wait)."""
        _process_context(self.preload)
        from multiprocessing import forkserver

        forkserver.ensure_running()

    def lifeline(self) -> int:
        """The read end of this process's lifeline (made on first use)."""
        with self._lifeline_lock:
            if self._lifeline is None:
                # Close-on-exec: no program this process starts holds the write end.
                self._lifeline = os.pipe2(os.O_CLOEXEC)
            return self._lifeline[0]

    def execute(self, tasks: list[Task]) -> LocalExecution:
        return LocalExecution(self, tasks)

    def shutdown(self) -> None:
        """Close the lifeline: any worker still running ends with it."""
        with self._lifeline_lock:
            if self._lifeline is not None:
                for fd in self._lifeline:
                    os.close(fd)
                self._lifeline = None

    # -- used by LocalExecution --------------------------------------------------------------
    def try_slot(self) -> bool:
        return self._slots.acquire(blocking=False)

    def release_slot(self) -> None:
        self._slots.release()

    def spawn(self, task: Task) -> tuple[BaseProcess, Connection]:
        context = _process_context()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=run_task,
            args=(sender, task.fn, task.kwargs, self.threads, DupFd(self.lifeline())),
            daemon=True,
        )
        process.start()
        sender.close()
        return process, receiver


class LocalExecution:
    """One job's tasks on a LocalExecutor: started as slots free up, in order."""

    def __init__(self, executor: LocalExecutor, tasks: list[Task]) -> None:
        self._executor = executor
        self._tasks = tasks
        self._pending = deque(range(len(tasks)))
        self._running: dict[int, tuple[BaseProcess, Connection]] = {}
        # The tasks' large arrays, written to shared memory when the first worker starts (not
        # while the job waits for a slot), and closed when the job ends.
        self._shared_kwargs: list[dict[str, Any]] | None = None
        self._shared: list[SharedArray] = []
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def _start_pending(self) -> None:
        while self._pending and self._executor.try_slot():
            index = self._pending.popleft()
            try:
                if self._shared_kwargs is None:
                    self._shared_kwargs, self._shared = share_arrays(t.kwargs for t in self._tasks)
                task = Task(self._tasks[index].fn, self._shared_kwargs[index])
                self._running[index] = self._executor.spawn(task)
            except BaseException:
                self._executor.release_slot()
                raise
            self._started = True

    def poll(self, timeout: float) -> list[tuple[int, Any]]:
        self._start_pending()
        if not self._running:
            time.sleep(min(timeout, 0.02))  # every slot is taken by other jobs
            return []
        wait([conn for _, conn in self._running.values()], timeout=timeout)
        finished = []
        for index, (process, conn) in list(self._running.items()):
            outcome = self._outcome(process, conn)
            if outcome is None:
                continue
            process.join()
            conn.close()
            del self._running[index]
            self._executor.release_slot()
            finished.append((index, result_of(f"task {index}", outcome)))
        return finished

    @staticmethod
    def _outcome(process: BaseProcess, conn: Connection) -> Any | None:
        """The worker's outcome once it sent one; None while it runs; JobFailed if it died."""
        if not conn.poll():
            if process.is_alive() or conn.poll():
                return None
            raise JobFailed(
                f"a worker process died (exit code {process.exitcode}); "
                "the data may need more memory than the worker has"
            )
        try:
            return conn.recv()
        except EOFError:
            process.join()
            raise JobFailed(f"a worker process died (exit code {process.exitcode})") from None

    def close(self) -> None:
        for process, conn in self._running.values():
            process.kill()
            process.join()
            conn.close()
            self._executor.release_slot()
        self._running.clear()
        self._pending.clear()
        for array in self._shared:
            array.close()
        self._shared = []
