"""The app factory: ``create_app(settings)`` builds the service; nothing happens at import time."""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send
from threadpoolctl import threadpool_limits

import app as lloyd
from app.api import operation_routes, problems
from app.api.auth import AUTH_ERRORS, READ, WRITE, Authentication
from app.api.body_limit import BodySizeLimit
from app.api.inference_front import InferenceFront
from app.api.request_id import RequestId
from app.api.routers import algorithms, health, jobs, models, prediction, scoring, training
from app.lifecycle import start_services
from app.logging_config import configure_logging
from app.observability import MetricsMiddleware, ServiceMetrics
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
    configure_logging(settings.log_level, settings.log_format)
    cache = ModelCache(settings.model_cache_size)
    metrics = ServiceMetrics(cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(start_services, settings, cache, metrics)
        app.state.registry = services.registry
        app.state.jobs = services.jobs
        app.state.runner = services.runner
        app.state.job_service = services.job_service
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
    )
    app.state.settings = settings
    app.state.key_ring = settings.key_ring
    app.state.metrics = metrics
    problems.install(app)
    # Scopes: `read` lists, inspects and runs inference; `write` trains, deletes and runs jobs.
    # The models router mixes both and declares them per route.
    # Inference first: routes are matched in order, and these are the hot ones. They authorize
    # by themselves (see app.api.operation_routes).
    for router, needs in (
        (prediction.router, []),
        (scoring.router, []),
        (training.router, [WRITE]),
        (jobs.router, [WRITE]),
        (algorithms.router, [READ]),
        (models.router, []),
    ):
        app.include_router(router, dependencies=needs, responses=AUTH_ERRORS)
    app.include_router(health.router)
    operation_routes.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Authentication, ring=settings.key_ring)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Outermost: the id is set before anything else can log or refuse the request.
    app.add_middleware(RequestId)
    return app


class LloydApp(FastAPI):
    """The FastAPI app with ``InferenceFront`` ahead of all of it: an inference request the
    front can answer with a 200 does not pass through FastAPI's and Starlette's own layers
    (error, telemetry and body-limit middleware) either; everything else is FastAPI's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front = InferenceFront(super().__call__, operation_routes.FRONT_OPERATIONS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
