"""Start-up and shut-down of what the app runs on: the database (migrated under a lock), the
artifact store (checked to be the database's own), notices from other replicas, the registry,
the job runner and its executor (local worker processes or a Dask cluster)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from app.jobs.execution import Executor
from app.jobs.local_executor import LocalExecutor
from app.jobs.runner import JobRunner, Leases
from app.observability import ServiceMetrics
from app.registry.artifacts import ArtifactStore, open_store
from app.registry.cache import ModelCache
from app.registry.database import create_database_engine, upgrade_database
from app.registry.job_store import JobStore, replica_id
from app.registry.model_registry import ModelRegistry
from app.registry.notifications import JOBS, Notifications
from app.registry.store_identity import StoreMismatch, agree_on_store
from app.services.inference import InferenceService
from app.services.job_service import INPUTS_PREFIX, JobService
from app.settings import Settings

log = logging.getLogger("app")


@dataclass
class Services:
    engine: Engine
    store: ArtifactStore
    notifications: Notifications
    registry: ModelRegistry
    jobs: JobStore
    executor: Executor
    runner: JobRunner
    job_service: JobService
    inference: InferenceService

    def close(self) -> None:
        self.runner.shutdown()
        self.executor.shutdown()
        self.notifications.close()
        self.registry.close()
        self.engine.dispose()


# What the fitting workers run: imported once by the local executor's forkserver.
TASK_MODULES = ("app.services.fitting_tasks",)


def create_executor(settings: Settings) -> Executor:
    if settings.dask_scheduler is None:
        executor = LocalExecutor(max_workers=settings.max_concurrent_jobs, preload=TASK_MODULES)
        executor.start()
        return executor
    from app.jobs.dask_executor import DaskExecutor

    return DaskExecutor(settings.dask_scheduler, local_workers=settings.dask_local_workers)


def start_services(settings: Settings, cache: ModelCache, metrics: ServiceMetrics) -> Services:
    """Everything the app serves with, started in order; what was started is stopped again if
    a later step fails (a store that is not the database's, say)."""
    engine = create_database_engine(
        settings.database_url, busy_timeout_seconds=settings.sqlite_busy_timeout_seconds
    )
    try:
        if settings.migrate_on_startup:
            upgrade_database(engine)
        store = open_store(settings.models_store, s3_endpoint_url=settings.s3_endpoint_url)
        try:
            store_id = agree_on_store(engine, store)
        except StoreMismatch as exc:
            log.error("%s", exc)
            raise
        notifications = Notifications(engine, namespace=store_id)
        registry = ModelRegistry(
            engine,
            store,
            cache,
            allow_version_drift=settings.allow_version_drift,
            resolution_max_age_seconds=settings.version_cache_seconds,
            notifications=notifications,
        )
        jobs = JobStore(engine, notifications)
        sweep(store, registry, jobs, settings)
    except BaseException:
        engine.dispose()
        raise
    executor = create_executor(settings)
    runner = JobRunner(
        jobs=jobs,
        executor=executor,
        owner=replica_id(),
        timeout_seconds=settings.job_timeout_seconds,
        max_jobs=settings.max_concurrent_jobs,
        leases=Leases(
            seconds=settings.job_lease_seconds,
            heartbeat_seconds=settings.job_heartbeat_seconds,
            max_attempts=settings.job_max_attempts,
        ),
    )
    job_service = JobService(registry, jobs, runner, store, settings, metrics)
    runner.planner = job_service.plan
    runner.on_recovered = job_service.recovered
    notifications.subscribe(JOBS, lambda _payload: runner.wake())
    notifications.start()
    # The first heartbeat takes over the jobs whose owner's lease lapsed (a replica that died,
    # this one included before its restart); jobs live replicas hold are never touched.
    runner.start()
    inference = InferenceService(registry, settings)
    return Services(
        engine, store, notifications, registry, jobs, executor, runner, job_service, inference
    )


def sweep(
    store: ArtifactStore, registry: ModelRegistry, jobs: JobStore, settings: Settings
) -> None:
    """Remove what a crash left behind: artifacts no version refers to, temporary files, and
    the saved rows of jobs that have ended.

    An artifact is committed by the replica that runs its job, while it holds the job's lease.
    So while some live replica holds a lease (or the store is remote, whose clock is not this
    host's), nothing younger than the lease is touched; when every lease is of a replica known
    dead (this host's processes that are gone, as after a crash of a lone server), only the
    configured grace applies."""
    # The clock is read before the rows, so a commit racing this stays safe (see sweep): a job
    # that starts after the look at the leases writes its artifact after this moment.
    swept_at = time.time()
    referenced = registry.artifact_paths()
    grace = settings.orphan_grace_seconds
    if jobs.live_owners() or not store.is_local:
        grace = settings.sweep_grace_seconds
    swept = store.sweep(referenced, older_than_seconds=grace, now=swept_at)
    if swept.removed:
        log.warning("removed from the models store: %s", swept)
    needed = jobs.input_paths(unfinished_only=True)
    stale = [
        path
        for path, modified in store.listing(INPUTS_PREFIX)
        if path not in needed and modified < swept_at - grace
    ]
    for path in stale:
        store.remove(path)
    if stale:
        log.warning("removed the saved rows of %d ended job(s) from the models store", len(stale))
