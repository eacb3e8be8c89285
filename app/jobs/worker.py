"""What runs inside a worker: one task, its outcome sent back through a pipe (local processes)
or returned (a Dask task); a local worker also dies the moment its API process does."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from threadpoolctl import threadpool_limits

from app.errors import LloydError, error_document
from app.jobs.execution import Outcome

# Workers run below the API process's priority: a long fit must not slow serving down.
WORKER_NICENESS = 10


def outcome_of(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int) -> Outcome:
    """Run ``fn(**kwargs)`` with at most ``threads`` BLAS/OpenMP threads: ``("ok", result)``,
    ``("error", document)`` for a LloydError, or ``("crash", traceback)`` for anything else."""
    try:
        with threadpool_limits(limits=threads):
            return ("ok", fn(**kwargs))
    except LloydError as exc:
        return ("error", error_document(exc))
    except Exception as exc:  # a bug: reported, the supervisor logs it and fails the job
        return ("crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")


def _die_with(lifeline: int) -> None:
    """Exit the moment ``lifeline`` (the read end of a pipe whose only writer is the API
    process) reports end of file: the API process is gone, however it died."""
    while True:
        try:
            readable, _, _ = select.select([lifeline], [], [])
        except InterruptedError:
            continue
        if readable and os.read(lifeline, 1) == b"":
            os._exit(70)


def watch_lifeline(lifeline: Any) -> None:
    """Start the thread that ends this process with its API process. ``lifeline``: the
    ``DupFd`` of the pipe's read end, as the runner passed it."""
    fd = lifeline.detach()
    threading.Thread(target=_die_with, args=(fd,), name="lloyd-lifeline", daemon=True).start()


def run_task(
    conn: Connection,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    threads: int,
    lifeline: Any | None = None,
) -> None:
    """A local worker's body: ``outcome_of`` sent through ``conn``."""
    # A worker is forked by the forkserver, which outlives a killed API process as long as
    # any worker holds its pipe: the worker itself must watch for its API process's death.
    if lifeline is not None:
        watch_lifeline(lifeline)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    try:
        conn.send(outcome_of(fn, kwargs, threads))
    finally:
        conn.close()
