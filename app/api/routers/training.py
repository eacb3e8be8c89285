"""Training router: create model versions, and model selection over a grid."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.auth import WRITE, GuardedRoute
from app.api.bodies import parse_rows_body
from app.api.deps import JobServiceDep
from app.api.documents import job_out, version_out
from app.api.locations import in_body, located
from app.api.operation_routes import LLOYD_REQUEST_HEADER, rows_request_body
from app.api.responses import FastJSONResponse
from app.api.schemas import (
    JobOut,
    ModelSelectionRequest,
    Problem,
    SelectionReport,
    TrainRequest,
    VersionOut,
)
from app.api.training_input import selection_input, training_input
from app.jobs.runner import JobHandle
from app.registry.job_store import SUCCEEDED, JobRecord
from app.services import selection, training
from app.services.job_service import JobService

router = APIRouter(prefix="/v1", tags=["training"], route_class=GuardedRoute, dependencies=[WRITE])

ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "model": JobOut,
        "description": "Still running (`wait: false`, or longer than LLOYD_SYNC_TIMEOUT_SECONDS): "
        "the job; poll its `Location`.",
    }
}
TRAINING_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The job was cancelled while the client waited."},
    413: {"model": Problem, "description": "Too many rows x features, or body too large."},
    422: {"model": Problem, "description": "Invalid data, algorithm or hyperparameter."},
    500: {"model": Problem, "description": "The job failed: time limit, or a worker died."},
}


UNSUPPORTED_MEDIA_TYPE: dict[int | str, dict[str, Any]] = {
    415: {
        "model": Problem,
        "description": "A body neither JSON, `.npy` nor CSV (or a CSV `header` or `charset` "
        "parameter that is not understood).",
    }
}


def accepted(job: JobRecord) -> Response:
    return FastJSONResponse(
        job_out(job).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/jobs/{job.id}"},
    )


async def finished(
    job: JobRecord, handle: JobHandle, *, wait: bool, service: JobService
) -> JobRecord:
    """The job once it ends, when the client waits and it ends within the sync limit; else the
    job as it stands (the caller answers 202 with it)."""
    if not wait:
        return job
    return await service.wait_briefly(job, handle)


@router.post(
    "/models",
    status_code=201,
    response_model=VersionOut,
    responses={**ACCEPTED, **TRAINING_ERRORS, **UNSUPPORTED_MEDIA_TYPE},
    openapi_extra={
        "requestBody": rows_request_body(TrainRequest, optional=False),
        "parameters": [LLOYD_REQUEST_HEADER],
    },
)
async def train_model(request: Request, service: JobServiceDep) -> Response:
    """Train a new immutable version of model `name` and store it.

    The first training of a name creates the model (version 1); every later one adds the next
    version. Results equal scikit-learn's on the same data and hyperparameters. The fit runs in
    a worker process, as a job. Answers 201 with the version document once the artifact and its
    metadata are both stored, or 202 with the job (`wait: false`, or a fit longer than
    LLOYD_SYNC_TIMEOUT_SECONDS).

    The rows may also be sent as a `.npy` array (`Content-Type: application/x-npy`) or as CSV
    (`Content-Type: text/csv`; a header row names the features, as `records` keys do), with
    every other field, as JSON, in the `Lloyd-Request` header.
    """
    parsed = await parse_rows_body(request, TrainRequest)
    body = parsed.fields
    assert body is not None
    with located(in_body):
        # Rows into a matrix and every check, in the thread pool: a large body takes a while.
        job, handle = await run_in_threadpool(
            lambda: training.start_training(
                service, *training_input(body, parsed.rows, parsed.columns)
            )
        )
        job = await finished(job, handle, wait=body.wait, service=service)
    if job.status != SUCCEEDED or handle.outcome is None:
        return accepted(job)
    # The version as registered: reading it back could race a delete of the model.
    version = handle.outcome
    return JSONResponse(
        version_out(version).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/models/{version.name}/versions/{version.version}"},
    )


@router.post(
    "/model-selection",
    response_model=SelectionReport,
    responses={**ACCEPTED, **TRAINING_ERRORS, **UNSUPPORTED_MEDIA_TYPE},
    openapi_extra={
        "requestBody": rows_request_body(ModelSelectionRequest, optional=False),
        "parameters": [LLOYD_REQUEST_HEADER],
    },
)
async def select_model(request: Request, service: JobServiceDep) -> Response:
    """Fit every candidate of a grid and report it, so that nobody has to guess k.

    k-means: inertia (and its elbow), silhouette (with each candidate's silhouette diagram
    data), Davies-Bouldin, Calinski-Harabasz. Gaussian mixtures: BIC, AIC, log-likelihood,
    convergence. Bayesian mixtures: effective components and weights. The best candidate under
    each criterion; with `register`, the best under its criterion becomes a new version.
    Candidates are fitted in parallel worker processes; a long grid answers 202 with its job.
    The rows may be a `.npy` or CSV body, as for a training.
    """
    # Read here, after the route's key check, never before it (see app.api.bodies).
    parsed = await parse_rows_body(request, ModelSelectionRequest)
    body = parsed.fields
    assert body is not None
    with located(in_body):
        job, handle = await run_in_threadpool(
            lambda: selection.start_selection(
                service, *selection_input(body, parsed.rows, parsed.columns)
            )
        )
        job = await finished(job, handle, wait=body.wait, service=service)
    if job.status != SUCCEEDED:
        return accepted(job)
    return FastJSONResponse(job.result)
