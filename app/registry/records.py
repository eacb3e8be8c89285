"""Plain records the registry returns: never live ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class NewVersion:
    """Everything about a trained version except what the registry allocates."""

    algorithm: str
    params: dict[str, Any]
    preprocessing: list[dict[str, Any]]
    feature_names: list[str] | None
    n_samples: int
    n_features: int
    metrics: dict[str, Any]
    anomaly: dict[str, Any]
    operations: list[str]
    library_versions: dict[str, str]
    training_seconds: float
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    aliases: list[str]
    algorithm: str
    params: dict[str, Any]
    preprocessing: list[dict[str, Any]]
    feature_names: list[str] | None
    n_samples: int
    n_features: int
    metrics: dict[str, Any]
    anomaly: dict[str, Any]
    operations: list[str]
    artifact_path: str
    artifact_sha256: str
    artifact_size: int
    library_versions: dict[str, str]
    training_seconds: float
    created_at: datetime
    description: str | None
    tags: dict[str, str]

    @property
    def label(self) -> str:
        return f"model {self.name!r} version {self.version}"

    @property
    def cache_key(self) -> tuple[str, int, str]:
        return (self.name, self.version, self.artifact_sha256)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    created_at: datetime
    latest_version: int | None
    n_versions: int
    aliases: dict[str, int]
    algorithm: str | None
