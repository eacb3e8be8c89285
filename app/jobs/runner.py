"""JobRunner: runs the jobs this replica owns on an executor, keeps their leases alive by
heartbeat, honours cancellations asked for on any replica, takes over jobs whose owner died,
and records every state in the JobStore.

A job's life: its creator owns it from the start (it holds the rows already) and submits it
here; a supervisor thread runs its tasks, then its ``finish`` step, which commits the job's
result (a new version, say) in the same transaction that marks it succeeded, and only while the
row still says this replica runs it. Meanwhile one heartbeat thread per replica renews the
leases of all its jobs, reads back cancellations, re-queues the jobs of replicas whose lease
lapsed and claims queued jobs while it has room.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.errors import JobFailed, JobNotHeld, LloydError, error_document
from app.jobs.execution import Executor, Task
from app.registry.job_store import (
    CANCELLED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    JobClaim,
    JobRecord,
    JobStore,
    Recovered,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
CANCELLED_BY_CLIENT = {"code": "job_cancelled", "status": 409, "detail": "cancelled by a client"}
INTERNAL = {"code": "internal_error", "status": 500, "detail": "the job failed"}
SHUT_DOWN = {"code": "interrupted", "status": 500, "detail": "interrupted by shutdown"}


@dataclass(frozen=True)
class JobPlan:
    """How to run one job: its tasks, then ``finish(results, claim)``, which commits the
    job's success (only while ``claim`` holds) and returns what the job produced."""

    tasks: list[Task]
    finish: Callable[[list[Any], JobClaim], Any]
    on_done: Callable[[str], None] | None = None


class _Stop(Exception):
    """Why a job stopped before its end: the status and error to record, or ``record``
    False when the row is no longer this replica's to write."""

    def __init__(self, status: str, error: dict[str, Any] | None, *, record: bool = True) -> None:
        self.status = status
        self.error = error
        self.record = record


@dataclass
class JobHandle:
    job_id: str
    done: threading.Event = field(default_factory=threading.Event)
    stop_reason: _Stop | None = None
    # Held while the job finishes (commits its result); a local stop waits for it, so a job is
    # never cancelled halfway through writing its version.
    finishing: threading.Lock = field(default_factory=threading.Lock)
    status: str = QUEUED
    # What ``finish`` returned (a registered version, say), for the request that started it.
    outcome: Any = None


@dataclass(frozen=True)
class Leases:
    """How jobs are held: the lease, how often it is renewed, how often a job is tried."""

    seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3


class JobRunner:
    def __init__(
        self,
        *,
        jobs: JobStore,
        executor: Executor,
        owner: str,
        timeout_seconds: float,
        max_jobs: int,
        leases: Leases | None = None,
        planner: Callable[[JobRecord], JobPlan] | None = None,
        on_recovered: Callable[[Recovered], None] | None = None,
    ) -> None:
        self.jobs = jobs
        self.executor = executor
        self.owner = owner
        self.timeout_seconds = timeout_seconds
        self.max_jobs = max_jobs
        self.leases = leases or Leases()
        # Rebuilds a job claimed from the queue (one another replica started) into its plan.
        self.planner = planner
        self.on_recovered = on_recovered
        self._handles: dict[str, JobHandle] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._heart: threading.Thread | None = None
        self._renewed = time.monotonic()

    # -- the API of the service layer ----------------------------------------------------------
    def start(self) -> None:
        """Start the heartbeat (which also takes over the jobs of replicas that died)."""
        self._heart = threading.Thread(target=self._beat_forever, name="lloyd-jobs", daemon=True)
        self._heart.start()

    def submit(self, job: JobRecord, plan: JobPlan) -> JobHandle:
        """Run ``job`` (owned by this replica) by ``plan``; returns at once."""
        handle = JobHandle(job.id)
        with self._lock:
            self._handles[job.id] = handle
        threading.Thread(
            target=self._supervise,
            args=(handle, plan),
            name=f"job-{job.id[:8]}",
            daemon=True,
        ).start()
        return handle

    def handle(self, job_id: str) -> JobHandle | None:
        with self._lock:
            return self._handles.get(job_id)

    def stop(self, job_id: str, status: str, error: dict[str, Any] | None = None) -> bool:
        """Stop a job this replica runs and wait until it has; False when it runs elsewhere."""
        handle = self.handle(job_id)
        if handle is None or handle.done.is_set():
            return False
        self._ask_stop(handle, _Stop(status, error))
        handle.done.wait()
        return True

    def wake(self) -> None:
        """Run a heartbeat now (a cancellation or a queued job was just announced)."""
        self._wake.set()

    def shutdown(self) -> None:
        """Stop every job of this replica (their workers are killed, the jobs marked failed),
        then the heartbeat."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            if not handle.done.is_set():
                # Handed back rather than failed: another replica (or this one, restarted)
                # runs it again from its saved rows; one that cannot run again fails.
                self._ask_stop(handle, _Stop(QUEUED, SHUT_DOWN))
        for handle in handles:
            handle.done.wait()
        if self._heart is not None:
            self._heart.join(timeout=10)

    # -- one job's supervisor thread -----------------------------------------------------------
    def _supervise(self, handle: JobHandle, plan: JobPlan) -> None:
        status = FAILED
        try:
            results = self._run_tasks(handle, plan.tasks)
            status = self._complete(handle, plan, results)
        except _Stop as stop:
            status = self._record_stop(handle, stop)
        except LloydError as exc:
            status = self._record_stop(handle, _Stop(FAILED, error_document(exc)))
        except Exception:
            log.exception("job %s failed", handle.job_id)
            status = self._record_stop(handle, _Stop(FAILED, INTERNAL))
        finally:
            with self._lock:
                self._handles.pop(handle.job_id, None)
            handle.status = status
            handle.done.set()
            if plan.on_done is not None:
                plan.on_done(status)

    def _run_tasks(self, handle: JobHandle, tasks: list[Task]) -> list[Any]:
        # The limit counts from the job's first running task, not from its wait for a free
        # slot: a job that has not run has not run too long.
        deadline = math.inf
        results: list[Any] = [None] * len(tasks)
        done = 0
        execution = self.executor.execute(tasks)
        try:
            while done < len(tasks):
                self._check(handle, deadline)
                finished = execution.poll(POLL_SECONDS)
                if execution.started and deadline == math.inf:
                    self.jobs.mark_running(handle.job_id, owner=self.owner)
                    deadline = time.monotonic() + self.timeout_seconds
                for index, result in finished:
                    results[index] = result
                    done += 1
                if finished:
                    self.jobs.progress(handle.job_id, done, owner=self.owner)
            return results
        finally:
            execution.close()

    def _check(self, handle: JobHandle, deadline: float) -> None:
        if handle.stop_reason is not None:
            raise handle.stop_reason
        if time.monotonic() > deadline:
            raise _Stop(
                FAILED,
                {
                    "code": "job_timeout",
                    "status": 500,
                    "detail": f"the job ran longer than {self.timeout_seconds:g} s "
                    f"(LLOYD_JOB_TIMEOUT_SECONDS); {self.executor.stopped_means}",
                },
            )

    def _complete(self, handle: JobHandle, plan: JobPlan, results: list[Any]) -> str:
        with handle.finishing:
            self._check(handle, math.inf)
            try:
                handle.outcome = plan.finish(results, JobClaim(handle.job_id, self.owner))
            except JobNotHeld:
                raise self._why_not_held(handle.job_id) from None
        return SUCCEEDED

    def _why_not_held(self, job_id: str) -> _Stop:
        """The job refused this replica its result: cancelled meanwhile, or taken over."""
        job = self.jobs.get(job_id)
        if job.owner == self.owner and not job.finished and job.cancel_requested:
            return _Stop(CANCELLED, CANCELLED_BY_CLIENT)
        return _Stop(job.status, job.error, record=False)

    def _record_stop(self, handle: JobHandle, stop: _Stop) -> str:
        if not stop.record:
            log.warning(
                "job %s is no longer this replica's; its work here is dropped", handle.job_id
            )
            return stop.status
        if stop.status == QUEUED:
            return self.jobs.release(handle.job_id, owner=self.owner, error=stop.error)
        self.jobs.finish(handle.job_id, stop.status, error=stop.error, owner=self.owner)
        return stop.status

    @staticmethod
    def _ask_stop(handle: JobHandle, stop: _Stop) -> None:
        with handle.finishing:
            if handle.stop_reason is None:
                handle.stop_reason = stop

    # -- the heartbeat -------------------------------------------------------------------------
    def _beat_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                self.beat()
            except Exception as exc:  # the database is away: try again at the next beat
                log.warning("job heartbeat failed: %s", exc)
            self._wake.wait(self.leases.heartbeat_seconds)
            self._wake.clear()

    def beat(self) -> None:
        """One heartbeat: renew, honour cancellations, recover, claim."""
        self._renew()
        if self._stopping.is_set():
            return
        for recovered in self.jobs.recover_expired(max_attempts=self.leases.max_attempts):
            log.warning(
                "job %s: its owner's lease expired; %s",
                recovered.job.id,
                "queued again" if recovered.status == QUEUED else recovered.status,
            )
            if self.on_recovered is not None:
                self.on_recovered(recovered)
        self._claim()

    def _renew(self) -> None:
        with self._lock:
            handles = [h for h in self._handles.values() if not h.done.is_set()]
        try:
            held = self.jobs.heartbeat(self.owner, [h.job_id for h in handles], self.leases.seconds)
        except Exception:
            if time.monotonic() - self._renewed > self.leases.seconds:
                # Unrenewed this long, the leases have lapsed and other replicas may be running
                # these jobs already: stop them here, without writing what is not ours.
                for handle in handles:
                    self._ask_stop(handle, _Stop(FAILED, None, record=False))
            raise
        self._renewed = time.monotonic()
        for handle in handles:
            if handle.job_id not in held:
                self._ask_stop(handle, _Stop(FAILED, None, record=False))
            elif held[handle.job_id]:
                self._ask_stop(handle, _Stop(CANCELLED, CANCELLED_BY_CLIENT))

    def _claim(self) -> None:
        if self.planner is None:
            return
        with self._lock:
            room = self.max_jobs - len(self._handles)
        for job in self.jobs.claim(self.owner, lease_seconds=self.leases.seconds, limit=room):
            log.info("job %s claimed from the queue (attempt %d)", job.id, job.attempts)
            try:
                plan = self.planner(job)
            except LloydError as exc:
                self.jobs.finish(job.id, FAILED, error=error_document(exc), owner=self.owner)
                continue
            except Exception:
                log.exception("job %s could not be planned", job.id)
                self.jobs.finish(job.id, FAILED, error=INTERNAL, owner=self.owner)
                continue
            self.submit(job, plan)


__all__ = ["CANCELLED_BY_CLIENT", "JobFailed", "JobHandle", "JobPlan", "JobRunner", "Leases"]
