"""Settings: one pydantic-settings class, read from ``LLOYD_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Lloyd's configuration. Every field is ``LLOYD_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="LLOYD_", env_file=None, extra="ignore")

    database_url: str = Field(
        "sqlite:///./lloyd.db",
        description="SQLAlchemy URL of the metadata database: a SQLite file by default, "
        "`postgresql://user@host/db` when several replicas share one.",
    )
    models_store: Path = Field(
        Path("./models_store"), description="Folder holding the model artifacts (joblib files)."
    )
    host: str = Field("127.0.0.1", description="Address `python -m app` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m app` listens on.")
    workers: int = Field(1, ge=1, le=64, description="Uvicorn worker processes.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    migrate_on_startup: bool = Field(
        True, description="Apply the Alembic migrations when the app starts."
    )
    sqlite_busy_timeout_seconds: float = Field(
        30.0, gt=0, description="How long a SQLite writer waits for the lock before failing."
    )
    model_cache_size: int = Field(
        32, ge=0, description="Loaded models kept in memory (least recently used are dropped)."
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes (413)."
    )
    max_training_cells: int = Field(
        50_000_000, ge=1, description="Largest rows x features accepted for one training (413)."
    )
    max_inference_rows: int = Field(
        1_000_000, ge=1, description="Most rows accepted by one inference request (413)."
    )
    max_sample_rows: int = Field(
        100_000, ge=1, description="Largest `n_samples` accepted by the `sample` operation."
    )
    max_concurrent_jobs: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Worker processes fitting at once, across every job (default: the number "
        "of cores). Workers run at a lower priority than the API, so serving comes first.",
    )
    job_timeout_seconds: float = Field(
        3600.0, gt=0, description="A job running longer is killed and marked failed."
    )
    sync_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description="A training or selection asked to wait answers with its job (202) when it "
        "runs longer than this.",
    )
    max_grid_candidates: int = Field(
        200, ge=1, description="Most candidates one model selection may fit (422 above)."
    )
    inline_work_limit: int = Field(
        20_000,
        ge=0,
        description="Inference whose rows x per-row cost (multiply-adds) is at most this runs "
        "on the event loop; larger work goes to the thread pool.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # psycopg 3 is the driver Lloyd ships; plain URLs would ask SQLAlchemy for psycopg2.
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        if not (url.startswith("sqlite") or url.startswith("postgresql+psycopg")):
            raise ValueError("LLOYD_DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        return url

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.lower() not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("LLOYD_LOG_LEVEL must be debug, info, warning, error or critical")
        return level.lower()


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; tests build their own ``Settings`` instead."""
    return Settings()
