"""Health router: liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app.api.auth import ANY_KEY, AUTH_ERRORS, GuardedRoute
from app.api.deps import MetricsDep, RegistryDep
from app.api.responses import FastJSONResponse

router = APIRouter(tags=["health"], route_class=GuardedRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database or store unavailable."}})
async def readyz(registry: RegistryDep) -> Response:
    """Ready when the database answers and the model store is writable."""
    database = await run_in_threadpool(registry.ping)
    store = await run_in_threadpool(registry.store.is_writable)
    ready = database and store
    return FastJSONResponse(
        {"status": "ready" if ready else "not ready", "database": database, "store": store},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[ANY_KEY],
    responses={401: AUTH_ERRORS[401]},
)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Prometheus metrics: requests and latency by route and status, trainings and their
    duration, model cache hits, misses and size. Needs any valid API key when
    LLOYD_METRICS_REQUIRE_KEY is on."""
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)
