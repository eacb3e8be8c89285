"""Dependencies: the app's registry, settings and metrics, and the one place a path's model
version is resolved. Every one is ``async``: FastAPI runs a plain ``def`` dependency in the
thread pool, a hop that costs more than a whole 1-row prediction."""

from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from app.observability import ServiceMetrics
from app.registry.job_store import JobStore
from app.registry.model_registry import ModelRegistry
from app.registry.records import ModelVersion
from app.services.job_service import JobService
from app.settings import Settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_jobs(request: Request) -> JobStore:
    return request.app.state.jobs


async def get_job_service(request: Request) -> JobService:
    return request.app.state.job_service


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
JobStoreDep = Annotated[JobStore, Depends(get_jobs)]
JobServiceDep = Annotated[JobService, Depends(get_job_service)]

NamePath = Annotated[str, Path(description="The model's name.", examples=["line-7"])]
VersionPath = Annotated[
    str,
    Path(
        description="A version number, an alias (e.g. `production`) or `latest`.",
        examples=["latest"],
    ),
]


async def resolve_version(registry: ModelRegistry, name: str, ref: str) -> ModelVersion:
    """The one resolution of a path's model version (``ModelVersionDep`` and the inference
    routes use it); 404 when either does not exist."""
    # Known without a query when nothing was written since it was last looked up; else the
    # (blocking) query runs in the thread pool.
    found = registry.resolved(name, ref)
    if found is not None:
        return found
    return await run_in_threadpool(registry.get_version, name, ref)


async def path_version(name: NamePath, version: VersionPath, registry: RegistryDep) -> ModelVersion:
    """The version named by ``{name}`` and ``{version}``; 404 when either does not exist."""
    return await resolve_version(registry, name, version)


ModelVersionDep = Annotated[ModelVersion, Depends(path_version)]
