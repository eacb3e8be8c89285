"""The app factory: ``create_app(settings)`` builds the service; nothing happens at import time."""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp
from threadpoolctl import threadpool_limits

import app as lloyd
from app.api import docs_pages, problems
from app.api.auth import AUTH_ERRORS
from app.api.edge import Edge
from app.api.operation_routes import operation_routes
from app.api.operations import OPERATIONS
from app.api.routers import algorithms, health, jobs, models, training
from app.api.v2.routes import router as open_inference_protocol
from app.lifecycle import start_services
from app.logging_config import configure_logging
from app.observability import ServiceMetrics
from app.registry.cache import ModelCache
from app.settings import Settings, get_settings

log = logging.getLogger("app")

DESCRIPTION = """
Lloyd trains, stores and serves unsupervised models: k-means, DBSCAN, Gaussian mixtures and
more. Post feature vectors to `POST /v1/models` to train an immutable version; then call its
operations (`predict`, `predict_proba`, `transform`, `score_samples`, `score`, `anomalies`,
`sample`, `bic`, `aic`) on the latest version, a numbered version or an alias.

Every error is `application/problem+json` (RFC 9457) with a stable `code`.
"""


def _log_access_policy(settings: Settings) -> None:
    keys = settings.key_ring.keys
    if keys:
        log.info("API keys on: %d key(s) configured", len(keys))
    elif not ipaddress_is_loopback(settings.host):
        log.warning(
            "no API keys configured and listening on %s: anyone who reaches this port can "
            "train, delete and read every model (set LLOYD_API_KEYS)",
            settings.host,
        )


def ipaddress_is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Engines open and migrations run in the lifespan, not here."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format, access_log=settings.access_log)
    cache = ModelCache(settings.model_cache_size)
    metrics = ServiceMetrics(cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(start_services, settings, cache, metrics)
        app.state.registry = services.registry
        app.state.jobs = services.jobs
        app.state.runner = services.runner
        app.state.job_service = services.job_service
        app.state.inference = services.inference
        _log_access_policy(settings)
        # BLAS pools are process-wide: this holds wherever the app was started from (python -m
        # app also sets the environment, which OpenMP needs, before anything is imported).
        blas_limit = threadpool_limits(limits=settings.serving_threads, user_api="blas")
        log.info(
            "Lloyd %s ready: database %s, models store %s, jobs on %s, replica %s",
            lloyd.__version__,
            services.engine.url.render_as_string(hide_password=True),
            services.store.describe(),
            services.executor.name,
            services.runner.owner,
        )
        if settings.gc_freeze:
            # What start-up allocated (modules, scikit-learn, SQLAlchemy: millions of objects)
            # lives as long as the process: out of the collector's reach, a full collection no
            # longer walks it (measured: a few % more 1-row predictions a second).
            gc.freeze()
        try:
            yield
        finally:
            blas_limit.restore_original_limits()
            await run_in_threadpool(services.close)

    app = LloydApp(
        title="Lloyd",
        version=lloyd.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Lloyd's Prometheus metrics measure every request; FastAPI's OpenTelemetry hooks, which
        # cost a check per request even when nothing is configured, stay off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Served by app.api.docs_pages from Lloyd's own assets, not FastAPI's CDN-loading pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.key_ring = settings.key_ring
    app.state.metrics = metrics
    problems.install(app)
    # The inference operations first, ahead of the documentation's own routes: routes are
    # matched in order, and these are the hot ones.
    app.router.routes[:0] = operation_routes(OPERATIONS)
    # Scopes: `read` lists, inspects and runs inference; `write` trains, deletes and runs jobs.
    # Each router declares them (the models router, which mixes both, per route).
    # /v2, the Open Inference Protocol, next: the other routers pass it by its prefix.
    app.include_router(open_inference_protocol)
    for router in (training.router, jobs.router, algorithms.router, models.router):
        app.include_router(router, responses=AUTH_ERRORS)
    app.include_router(health.router)
    docs_pages.install(app)
    return app


class LloydApp(FastAPI):
    """The FastAPI app with one layer ahead of its router: ``Edge`` (request ids, body limits,
    metrics, and every error answered by the exception handlers ``app.api.problems``
    installs), then FastAPI's own exit stack (the files its request handling opens).

    FastAPI's default stack would add its own server-error, telemetry, body-limit and
    exception layers around these: each would be a second mechanism for a concern ``Edge``
    holds, and a cost every 1-row prediction pays."""

    def build_middleware_stack(self) -> ASGIApp:
        handlers = {
            key: handler
            for key, handler in self.exception_handlers.items()
            if isinstance(key, type) and key is not Exception
        }
        app: ASGIApp = AsyncExitStackMiddleware(self.router)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        settings = self.state.settings
        return Edge(
            app,
            metrics=self.state.metrics,
            max_body_bytes=settings.max_body_bytes,
            handlers=handlers,
        )
