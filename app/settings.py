"""Settings: one pydantic-settings class, read from ``LLOYD_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.api_keys import ApiKey, KeyRing, parse_api_keys


class Settings(BaseSettings):
    """Lloyd's configuration. Every field is ``LLOYD_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="LLOYD_",
        env_file=None,
        extra="ignore",
        # A key pasted in clear into LLOYD_API_KEYS must not be echoed into a start-up log.
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        "sqlite:///./lloyd.db",
        description="SQLAlchemy URL of the metadata database: a SQLite file by default, "
        "`postgresql://user@host/db` when several replicas share one.",
    )
    models_store: str = Field(
        "./models_store",
        description="Where the model artifacts (joblib files) live: a folder, or an fsspec URL "
        "such as `s3://bucket/prefix` (S3 through s3fs, credentials from the usual AWS "
        "variables) that every replica shares.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3-compatible object store (MinIO, Ceph, ...) for an "
        "`s3://` LLOYD_MODELS_STORE; unset: AWS S3 itself.",
    )
    host: str = Field(
        "127.0.0.1", description="Address `python -m app serve` listens on (or its --host)."
    )
    port: int = Field(
        8000, ge=1, le=65535, description="Port `python -m app serve` listens on (or its --port)."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Uvicorn worker processes of `python -m app serve` (or its --workers).",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as one JSON object per line."
    )
    access_log: bool = Field(
        True,
        description="One access line per request (uvicorn's, with its request id) at log "
        "levels debug and info, whichever server runs the app; off: none.",
    )
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
    serving_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="BLAS/OpenMP threads of each serving process. Requests are served "
        "concurrently by a thread pool, so one thread per request uses the cores without "
        "oversubscribing them (fits run in their own worker processes, with their own limit).",
    )
    gc_freeze: bool = Field(
        True,
        description="Move what start-up allocated out of the garbage collector's reach "
        "(`gc.freeze`): full collections then skip millions of long-lived objects, which "
        "lowers request latency. Off only where many apps start in one process (tests).",
    )
    max_name_length: int = Field(
        128, ge=1, le=128, description="Longest model name accepted (422 above; 128 at most)."
    )
    max_description_length: int = Field(
        2000, ge=0, le=2000, description="Longest description accepted (422; 2,000 at most)."
    )
    max_tags: int = Field(
        50, ge=0, le=50, description="Most tags on one version (422; 50 at most)."
    )
    max_tag_length: int = Field(
        256, ge=1, le=256, description="Longest tag value accepted; keys stop at 64 (422)."
    )
    max_concurrent_jobs: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Worker processes fitting at once, across every job of this API process "
        "(default: the number of cores; each replica and each LLOYD_WORKERS process has its "
        "own), and the most jobs it runs or claims from the queue at once. Workers run at a "
        "lower priority than the API, so serving comes first.",
    )
    job_timeout_seconds: float = Field(
        3600.0, gt=0, description="A job running longer is killed and marked failed."
    )
    orphan_grace_seconds: float = Field(
        0.0,
        ge=0,
        description="At start-up, artifacts no version refers to, temporary files and the "
        "saved rows of ended jobs, left by a crash, are removed once they are older than this "
        "or than the job lease (LLOYD_JOB_LEASE_SECONDS), whichever is longer: a replica that "
        "wrote an artifact commits it while it holds its job's lease, so a starting replica "
        "never removes what a live sibling is about to commit.",
    )
    job_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a replica holds a job it runs without renewing its lease; a "
        "job whose owner has not renewed it for this long is taken over by another replica "
        "(run again from its saved rows, or failed when it cannot be).",
    )
    job_heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a replica renews the leases of its jobs, reads cancellations "
        "asked on other replicas, and takes over the jobs of replicas that died.",
    )
    job_max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="A job runs at most this many times, its first run included: one whose "
        "replica died that often fails with that reason instead of running again.",
    )
    dask_scheduler: str | None = Field(
        None,
        description="Run trainings and selection grids on a Dask cluster: the scheduler's "
        "address (`tcp://host:8786`), or `local` for a LocalCluster in this process. Unset: "
        "local worker processes.",
    )
    dask_local_workers: int = Field(
        2,
        ge=1,
        le=256,
        description="Workers (one thread each) of the LocalCluster of LLOYD_DASK_SCHEDULER=local.",
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
    version_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a resolved `{name}/{version}` is reused without a database "
        "query; one in use is renewed in the background past half this age. Any registry "
        "write in this store (a new version, a delete, an alias) drops it at once; the age "
        "only bounds staleness across hosts. 0: query every request.",
    )
    inline_work_limit: int = Field(
        20_000,
        ge=0,
        description="Inference whose rows x per-row cost (multiply-adds) is at most this runs "
        "on the event loop; larger work goes to the thread pool.",
    )
    allow_version_drift: bool = Field(
        False,
        description="Load artifacts written by another scikit-learn version (or another numpy "
        "major version) than the one running. scikit-learn does not support unpickling a model "
        "across versions, so by default such a version answers 409 `version_drift` until it is "
        "retrained; when allowed it is served, with a warning logged once per version.",
    )

    api_keys: str = Field(
        "",
        description="API keys as `<sha256 of the key>:<scopes>` entries (scopes `read`, `write`, "
        "joined by `+`), separated by commas. Empty (and no keys file): the service is open.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="A file of API key entries, one per line (`#` comments); adds to "
        "`LLOYD_API_KEYS`.",
    )
    metrics_require_key: bool = Field(
        False, description="Close `/metrics` to clients without a valid API key."
    )
    _key_ring: KeyRing = PrivateAttr(default_factory=lambda: KeyRing([]))

    @model_validator(mode="after")
    def _load_api_keys(self) -> Settings:
        try:
            keys: list[ApiKey] = parse_api_keys(self.api_keys)
        except ValueError as exc:
            raise ValueError(f"LLOYD_API_KEYS: {exc}") from None
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text()
            except OSError as exc:
                raise ValueError(f"LLOYD_API_KEYS_FILE cannot be read: {exc}") from exc
            try:
                keys += parse_api_keys(text)
            except ValueError as exc:
                raise ValueError(f"LLOYD_API_KEYS_FILE {self.api_keys_file}: {exc}") from None
        self._key_ring = KeyRing(keys)
        return self

    @property
    def key_ring(self) -> KeyRing:
        """The configured API keys (empty: authentication is off)."""
        return self._key_ring

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # psycopg 3 is the driver Lloyd ships; plain URLs would ask SQLAlchemy for psycopg2.
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        if not (url.startswith("sqlite") or url.startswith("postgresql+psycopg")):
            raise ValueError("LLOYD_DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        return url

    @field_validator("models_store", mode="before")
    @classmethod
    def _store_location(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @field_validator("dask_scheduler")
    @classmethod
    def _dask_address(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if value != "local" and "://" not in value:
            raise ValueError(
                "LLOYD_DASK_SCHEDULER must be `local` or a scheduler address such as "
                "tcp://scheduler:8786"
            )
        return value

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.job_heartbeat_seconds * 2 > self.job_lease_seconds:
            raise ValueError(
                "LLOYD_JOB_HEARTBEAT_SECONDS must be at most half of LLOYD_JOB_LEASE_SECONDS, so "
                "that a lease is renewed before it can lapse"
            )
        return self

    @property
    def sweep_grace_seconds(self) -> float:
        """What the start-up sweep spares: nothing younger than a job's lease."""
        return max(self.orphan_grace_seconds, self.job_lease_seconds)

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
