"""Jobs router: follow, list and cancel trainings and model selections."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from app.api.auth import WRITE, GuardedRoute
from app.api.deps import JobServiceDep, JobStoreDep
from app.api.documents import job_out
from app.api.responses import FastJSONResponse
from app.api.schemas import JobOut, JobPage, Problem
from app.registry.job_store import MAX_OFFSET

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=GuardedRoute, dependencies=[WRITE])

# A job's id is drawn when it is queued: an example can only be one no job has, and says so
# (x-expected-status: what it answers as is).
JOB_ID_EXAMPLES: dict[str, Any] = {
    "unknown": {
        "summary": "An id no job has: 404 (a real one is in a 202's Location)",
        "value": "3f0c2b1e-7a4d-4c55-9a51-0d6f2f1f4b2a",
        "x-expected-status": 404,
    }
}
JobId = Annotated[
    str,
    Path(description="The job's id (from a 202's Location).", openapi_examples=JOB_ID_EXAMPLES),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such job."}
}


@router.get("", response_model=JobPage)
def list_jobs(
    jobs: JobStoreDep,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
        Query(description="Only jobs in this status."),
    ] = None,
    kind: Annotated[
        Literal["training", "model_selection"] | None, Query(description="Only this kind.")
    ] = None,
    model: Annotated[str | None, Query(description="Only jobs for this model name.")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    """Jobs, newest first, a page at a time."""
    items, total = jobs.list(status=status, kind=kind, model_name=model, offset=offset, limit=limit)
    return JobPage(items=[job_out(j) for j in items], total=total, offset=offset, limit=limit)


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
def get_job(job_id: JobId, jobs: JobStoreDep) -> JobOut:
    """A job: status, progress, timestamps, and its result or error."""
    return job_out(jobs.get(job_id))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses={
        **NOT_FOUND,
        202: {
            "model": JobOut,
            "description": "Another replica runs the job and has not yet seen the request "
            "(`cancel_requested`): it stops the job at its next heartbeat.",
        },
        409: {"model": Problem, "description": "Already finished."},
    },
)
def cancel_job(job_id: JobId, service: JobServiceDep) -> Response:
    """Cancel a queued or running job, whichever replica runs it: its worker processes are
    killed and no version is created."""
    job = service.cancel(job_id)
    return FastJSONResponse(
        job_out(job).model_dump(mode="json"), status_code=200 if job.finished else 202
    )
