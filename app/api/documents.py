"""Registry records shaped into the API's response models."""

from __future__ import annotations

from functools import cache
from typing import Any

from app.api.locations import in_body
from app.api.schemas import ArtifactOut, JobOut, JobOwnerOut, ModelOut, ProgressOut, VersionOut
from app.registry.compatibility import has_drifted
from app.registry.job_store import JobRecord, parse_owner
from app.registry.records import ModelSummary, ModelVersion
from app.services.training import library_versions


@cache
def serving_library_versions() -> dict[str, str]:
    """This process's library versions, as a training here would record them."""
    return library_versions()


def version_out(version: ModelVersion) -> VersionOut:
    return VersionOut(
        name=version.name,
        version=version.version,
        aliases=version.aliases,
        algorithm=version.algorithm,
        params=version.params,
        preprocessing=version.preprocessing,
        feature_names=version.feature_names,
        n_samples=version.n_samples,
        n_features=version.n_features,
        metrics=version.metrics,
        anomaly=version.anomaly,
        operations=version.operations,
        artifact=ArtifactOut(sha256=version.artifact_sha256, size_bytes=version.artifact_size),
        library_versions=version.library_versions,
        serving_library_versions=serving_library_versions(),
        version_drift=has_drifted(version.library_versions),
        training_seconds=version.training_seconds,
        created_at=version.created_at,
        description=version.description,
        tags=version.tags,
    )


def model_out(model: ModelSummary) -> ModelOut:
    return ModelOut(
        name=model.name,
        created_at=model.created_at,
        latest_version=model.latest_version,
        n_versions=model.n_versions,
        aliases=model.aliases,
        algorithm=model.algorithm,
    )


def job_out(job: JobRecord) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,
        model_name=job.model_name,
        algorithm=job.algorithm,
        progress=ProgressOut(done=job.progress_done, total=job.progress_total),
        request=job.request,
        result=job.result,
        error=_located_error(job.error),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        owner=JobOwnerOut(**owner) if (owner := parse_owner(job.owner)) else None,
        lease_expires_at=job.lease_expires_at,
        attempts=job.attempts,
        retryable=job.retryable,
        cancel_requested=job.cancel_requested,
    )


def _located_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's stored error, its locations (the spec's) translated to the request's body."""
    if not error or not error.get("errors"):
        return error
    errors = [
        {**entry, "loc": in_body(list(entry["loc"]))} if "loc" in entry else entry
        for entry in error["errors"]
    ]
    return {**error, "errors": errors}
