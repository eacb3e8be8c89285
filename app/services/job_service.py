"""JobService: starts jobs (their spec and rows saved first, so that any replica can run them
again), rebuilds the jobs this replica claims, waits for one within the sync limit, and cancels
one wherever it runs."""

from __future__ import annotations

import hashlib
import io
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.errors import ArtifactIntegrityError, JobFinished, error_from_document
from app.jobs.runner import CANCELLED_BY_CLIENT, JobHandle, JobPlan, JobRunner
from app.observability import ServiceMetrics
from app.registry.artifacts import ArtifactStore
from app.registry.job_store import CANCELLED, FAILED, JobRecord, JobStore, NewJob, Recovered
from app.registry.model_registry import ModelRegistry
from app.settings import Settings

log = logging.getLogger(__name__)

INPUTS_PREFIX = "jobs/"
# How long a cancellation sent to a job another replica runs waits for that replica to see it
# (at its next heartbeat), beyond two heartbeats.
CANCEL_WAIT_MARGIN_SECONDS = 5.0


def rows_bytes(X: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, X, allow_pickle=False)
    return buffer.getvalue()


@dataclass
class JobService:
    """What the training and selection services run their jobs with (built once, at start)."""

    registry: ModelRegistry
    jobs: JobStore
    runner: JobRunner
    store: ArtifactStore
    settings: Settings
    metrics: ServiceMetrics

    # -- starting ------------------------------------------------------------------------------
    def start(self, new: NewJob, X: np.ndarray, plan: JobPlan) -> tuple[JobRecord, JobHandle]:
        """Create the job (owned by this replica, its rows saved when it may run again
        elsewhere) and run it by ``plan``."""
        if new.retryable:
            path, sha256 = self._save_rows(X)
            new = replace(new, input_path=path, input_sha256=sha256)
        try:
            job = self.jobs.create(
                new, owner=self.runner.owner, lease_seconds=self.runner.leases.seconds
            )
        except BaseException:
            if new.input_path is not None:
                self.store.remove(new.input_path)
            raise
        return job, self.runner.submit(job, self._cleaning_up(job, plan))

    def _save_rows(self, X: np.ndarray) -> tuple[str, str]:
        data = rows_bytes(X)
        path = f"{INPUTS_PREFIX}{uuid.uuid4().hex}.npy"
        self.store.put(path, data)
        return path, hashlib.sha256(data).hexdigest()

    def _load_rows(self, job: JobRecord) -> np.ndarray:
        assert job.input_path is not None
        data = self.store.get(job.input_path)
        if hashlib.sha256(data).hexdigest() != job.input_sha256:
            raise ArtifactIntegrityError(f"the saved rows of job {job.id} were changed or damaged")
        return np.load(io.BytesIO(data), allow_pickle=False)

    def _cleaning_up(self, job: JobRecord, plan: JobPlan) -> JobPlan:
        """``plan``, removing the job's saved rows once it has ended here for good."""
        path = job.input_path
        if path is None:
            return plan
        on_done = plan.on_done

        def done(status: str) -> None:
            try:
                current = self.jobs.get(job.id)
                if current.finished:  # handed back (queued) or taken over: still needed
                    self.store.remove(path)
            except Exception as exc:  # swept at a later start-up
                log.warning("job %s: its saved rows were not removed: %s", job.id, exc)
            if on_done is not None:
                on_done(status)

        return replace(plan, on_done=done)

    # -- jobs claimed from the queue, and jobs whose owner died --------------------------------
    def plan(self, job: JobRecord) -> JobPlan:
        """The plan of a job another replica started (the runner's planner)."""
        return self._cleaning_up(job, self._replanner(job.kind)(self, job, self._load_rows(job)))

    @staticmethod
    def _replanner(kind: str) -> Callable[[JobService, JobRecord, np.ndarray], JobPlan]:
        from app.services import selection, training

        planners = {
            training.TRAINING: training.replan_training,
            selection.SELECTION: selection.replan_selection,
        }
        return planners[kind]

    def recovered(self, recovered: Recovered) -> None:
        """A dead owner's job was re-queued or ended: an ended one's rows go."""
        if recovered.job.finished and recovered.job.input_path is not None:
            self.store.remove(recovered.job.input_path)

    # -- waiting and cancelling ----------------------------------------------------------------
    async def wait_briefly(self, job: JobRecord, handle: JobHandle) -> JobRecord:
        """The job once it ends, or as it stands after the sync limit. A failed or cancelled
        job raises its error, so a waiting client gets the same problem a training would."""
        await run_in_threadpool(handle.done.wait, self.settings.sync_timeout_seconds)
        current = await run_in_threadpool(self.jobs.get, job.id)
        if current.status in (FAILED, CANCELLED):
            raise error_from_document(current.error or CANCELLED_BY_CLIENT)
        return current

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job wherever it runs: its workers are killed and it
        leaves no version. A job another live replica runs is cancelled by that replica at its
        next heartbeat; the answer waits for it a little, and is the job as it then stands
        (``cancel_requested`` still running: the caller answers 202)."""
        job = self.jobs.get(job_id)
        if job.finished:
            raise JobFinished(f"job {job_id} has already finished ({job.status})")
        stopped = self.runner.stop(job_id, CANCELLED, CANCELLED_BY_CLIENT)
        if not stopped and not self.jobs.cancel_orphan(job_id, CANCELLED_BY_CLIENT):
            self.jobs.request_cancel(job_id)
            job = self._await_end(job_id)
            if not job.finished:
                return job
        job = self.jobs.get(job_id)
        if job.status != CANCELLED:
            raise JobFinished(f"job {job_id} finished ({job.status}) before it could be cancelled")
        return job

    def _await_end(self, job_id: str) -> JobRecord:
        leases = self.runner.leases
        deadline = time.monotonic() + 2 * leases.heartbeat_seconds + CANCEL_WAIT_MARGIN_SECONDS
        while True:
            job = self.jobs.get(job_id)
            if job.finished or time.monotonic() > deadline:
                return job
            time.sleep(0.05)
