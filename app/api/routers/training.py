"""Training router: create model versions."""

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import MetricsDep, RegistryDep, SettingsDep
from app.api.documents import version_out
from app.api.schemas import Problem, TrainRequest, VersionOut
from app.services import training

router = APIRouter(prefix="/v1", tags=["training"])


@router.post(
    "/models",
    status_code=201,
    response_model=VersionOut,
    responses={
        413: {"model": Problem, "description": "Too many rows x features, or body too large."},
        422: {"model": Problem, "description": "Invalid data, algorithm or hyperparameter."},
    },
)
async def train_model(
    spec: TrainRequest,
    response: Response,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> VersionOut:
    """Train a new immutable version of model `name` and store it.

    The first training of a name creates the model (version 1); every later one adds the next
    version. Results equal scikit-learn's on the same data and hyperparameters. Answers 201 with
    the version document once the artifact and its metadata are both stored.
    """
    version = await run_in_threadpool(
        lambda: training.train(registry=registry, spec=spec, settings=settings, metrics=metrics)
    )
    response.headers["Location"] = f"/v1/models/{version.name}/versions/{version.version}"
    return version_out(version)
