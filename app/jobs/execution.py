"""What runs a job's tasks: the Executor and Execution interfaces, and the outcome protocol that
every executor's tasks answer in (local worker processes, or a Dask cluster)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.errors import JobFailed, error_from_document

log = logging.getLogger(__name__)

# A task's answer, as its worker sends it: ("ok", result), ("error", an error document of a
# LloydError the task raised on purpose) or ("crash", the traceback of a bug).
Outcome = tuple[str, Any]


@dataclass(frozen=True)
class Task:
    """A module-level function and its keyword arguments (both picklable)."""

    fn: Callable[..., Any]
    kwargs: dict[str, Any]


class Execution(Protocol):
    """The tasks of one job, running. Used by one thread (the job's supervisor)."""

    @property
    def started(self) -> bool:
        """Whether any task has started: a job's time limit counts from then."""
        ...

    def poll(self, timeout: float) -> list[tuple[int, Any]]:
        """Wait up to ``timeout`` seconds; the tasks that finished since the last call, as
        ``(index, result)``. A task's error is raised (``result_of``), and so is a lost one
        (``JobFailed``)."""
        ...

    def close(self) -> None:
        """Stop whatever still runs (kill its processes, cancel its futures) and release what
        the execution holds. Called once, whatever happened."""
        ...


class Executor(Protocol):
    """Where jobs' tasks run."""

    name: str
    # What stopping a job's tasks does here, as a job's error says it.
    stopped_means: str

    def execute(self, tasks: list[Task]) -> Execution:
        """Start running ``tasks`` (or queue them until there is room); returns at once."""
        ...

    def shutdown(self) -> None:
        """Release the executor (at the app's shutdown); running executions are closed first."""
        ...


def result_of(job_label: str, outcome: Outcome) -> Any:
    """A task's result, or the error its outcome reports, raised."""
    kind, payload = outcome
    if kind == "ok":
        return payload
    if kind == "error":
        raise error_from_document(payload)
    log.error("%s: a task failed:\n%s", job_label, payload)
    raise JobFailed("a worker failed unexpectedly; see the server log")
