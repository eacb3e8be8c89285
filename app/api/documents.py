"""Registry records shaped into the API's response models."""

from __future__ import annotations

from app.api.schemas import ArtifactOut, ModelOut, VersionOut
from app.registry.records import ModelSummary, ModelVersion


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
