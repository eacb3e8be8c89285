"""The app factory: ``create_app(settings)`` builds the service; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import app as lloyd
from app.api import problems
from app.api.body_limit import BodySizeLimit
from app.api.routers import algorithms, health, jobs, models, prediction, scoring, training
from app.jobs.runner import JobRunner
from app.observability import MetricsMiddleware, ServiceMetrics
from app.registry.artifacts import ArtifactStore
from app.registry.cache import ModelCache
from app.registry.database import create_database_engine, upgrade_database
from app.registry.job_store import JobStore
from app.registry.model_registry import ModelRegistry
from app.settings import Settings, get_settings

log = logging.getLogger("app")

DESCRIPTION = """
Lloyd trains, stores and serves unsupervised models: k-means, DBSCAN, Gaussian mixtures and
more. Post feature vectors to `POST /v1/models` to train an immutable version; then call its
operations (`predict`, `predict_proba`, `transform`, `score_samples`, `score`, `anomalies`,
`sample`, `bic`, `aic`) on the latest version, a numbered version or an alias.

Every error is `application/problem+json` (RFC 9457) with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Engines open and migrations run in the lifespan, not here."""
    settings = settings or get_settings()
    cache = ModelCache(settings.model_cache_size)
    metrics = ServiceMetrics(cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_database_engine(
            settings.database_url, busy_timeout_seconds=settings.sqlite_busy_timeout_seconds
        )
        if settings.migrate_on_startup:
            await run_in_threadpool(upgrade_database, engine)
        store = ArtifactStore(settings.models_store)
        app.state.registry = ModelRegistry(engine, store, cache)
        app.state.jobs = JobStore(engine)
        interrupted = await run_in_threadpool(
            app.state.jobs.fail_unfinished, "interrupted by restart"
        )
        if interrupted:
            log.warning("marked %d interrupted job(s) failed", interrupted)
        app.state.runner = JobRunner(
            jobs=app.state.jobs,
            max_workers=settings.max_concurrent_jobs,
            timeout_seconds=settings.job_timeout_seconds,
        )
        log.info(
            "Lloyd %s ready: database %s, models store %s",
            lloyd.__version__,
            engine.url.render_as_string(hide_password=True),
            store.root,
        )
        try:
            yield
        finally:
            await run_in_threadpool(app.state.runner.shutdown)
            engine.dispose()

    app = FastAPI(
        title="Lloyd",
        version=lloyd.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    problems.install(app)
    for router in (
        training.router,
        prediction.router,
        scoring.router,
        models.router,
        jobs.router,
        algorithms.router,
        health.router,
    ):
        app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
