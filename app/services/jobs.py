"""Jobs: wait for one within the sync limit, read them, cancel one."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from app.errors import JobFinished, error_from_document
from app.jobs.runner import JobHandle, JobRunner
from app.registry.job_store import CANCELLED, FAILED, SUCCEEDED, JobRecord, JobStore

CANCELLED_BY_CLIENT = {"code": "job_cancelled", "status": 409, "detail": "cancelled by a client"}


async def wait_briefly(
    *, jobs: JobStore, job: JobRecord, handle: JobHandle, timeout: float
) -> JobRecord:
    """The job once it ends, or as it stands after ``timeout`` seconds. A failed or cancelled
    job raises its error, so a waiting client gets the same problem a training would give."""
    await run_in_threadpool(handle.done.wait, timeout)
    current = await run_in_threadpool(jobs.get, job.id)
    if current.status in (FAILED, CANCELLED):
        raise error_from_document(current.error or CANCELLED_BY_CLIENT)
    return current


def cancel(*, jobs: JobStore, runner: JobRunner, job_id: str) -> JobRecord:
    """Cancel a queued or running job: its workers are killed and it leaves no version."""
    job = jobs.get(job_id)
    if job.finished:
        raise JobFinished(f"job {job_id} has already finished ({job.status})")
    if not runner.stop(job_id, CANCELLED, CANCELLED_BY_CLIENT):
        # Not running in this process: its process is gone, nothing more will come of it.
        jobs.finish(job_id, CANCELLED, error=CANCELLED_BY_CLIENT)
    job = jobs.get(job_id)
    if job.status != CANCELLED:
        raise JobFinished(f"job {job_id} finished ({job.status}) before it could be cancelled")
    return job


def is_success(job: JobRecord) -> bool:
    return job.status == SUCCEEDED
