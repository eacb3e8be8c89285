"""ModelRegistry: saves, finds, loads, caches and deletes model versions."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.errors import (
    AliasNotFound,
    ArtifactMissing,
    InvalidInput,
    LloydError,
    ModelNotFound,
    VersionNotFound,
)
from app.registry.artifacts import ArtifactStore, StoredArtifact
from app.registry.cache import ModelCache
from app.registry.compatibility import RUNNING, compared_versions, drift_error, has_drifted
from app.registry.compatibility import SETTING as DRIFT_SETTING
from app.registry.database import WRITE
from app.registry.job_store import JobCompletion, complete_job_in
from app.registry.notifications import REGISTRY, Notifications
from app.registry.orm import AliasRow, ModelRow, VersionRow
from app.registry.records import ModelSummary, ModelVersion, NewVersion
from app.registry.resolution import RegistryStamp, ResolutionCache

log = logging.getLogger(__name__)

LATEST = "latest"
ALIAS_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# Concurrent trainings of one name race for the next version number; the loser of a unique
# constraint violation simply tries again.
ALLOCATION_ATTEMPTS = 20
# ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
VERSION_NUMBER = re.compile(r"[0-9]+")
# Version numbers are 32-bit integers in the database and offsets 64-bit: a larger number names
# nothing, and must not reach the database, which would refuse it with an error.
MAX_VERSION = 2**31 - 1
MAX_OFFSET = 2**63 - 1


def _lost_allocation_race(exc: IntegrityError) -> bool:
    """True for a unique violation (another training took the name or the number first); any
    other integrity error is bad data, and retrying it would only hide the cause."""
    sqlstate: str | None = getattr(exc.orig, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return sqlstate == "23505"  # unique_violation
    return getattr(exc.orig, "sqlite_errorcode", None) in (
        sqlite3.SQLITE_CONSTRAINT_UNIQUE,
        sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY,
    )


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored moment is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ModelRegistry:
    """One transaction per operation; returns plain records."""

    def __init__(
        self,
        engine: Engine,
        store: ArtifactStore,
        cache: ModelCache,
        *,
        allow_version_drift: bool = False,
        resolution_max_age_seconds: float = 0.0,
        notifications: Notifications | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.store = store
        self.cache = cache
        self.resolutions = ResolutionCache(
            RegistryStamp(store.stamp_path),
            max_age_seconds=resolution_max_age_seconds,
            refresh=self._refresh_soon,
            clock=clock,
        )
        # Replicas on other hosts see no stamp file of ours: they hear of every write by a
        # notice sent in its transaction (PostgreSQL), and forget their resolutions.
        self.notifications = notifications
        if notifications is not None:
            notifications.subscribe(REGISTRY, lambda _payload: self.resolutions.invalidate())
            notifications.on_missed(self.resolutions.invalidate)
        self._refresher: ThreadPoolExecutor | None = None
        self._refresher_lock = threading.Lock()
        self.allow_version_drift = allow_version_drift
        self._drift_warned: set[tuple[str, int, str]] = set()
        self._write_engine = engine.execution_options(**WRITE)

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session
            if self.notifications is not None:
                self.notifications.send(session, REGISTRY)

    # -- lookups -------------------------------------------------------------------------------
    @staticmethod
    def _model_row(session: Session, name: str, *, lock: bool = False) -> ModelRow:
        if "\x00" in name:  # PostgreSQL refuses NUL in text; no stored name has one
            raise ModelNotFound(f"no model named {name!r}")
        query = select(ModelRow).where(ModelRow.name == name)
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise ModelNotFound(f"no model named {name!r}")
        return row

    @staticmethod
    def _version_row(session: Session, model: ModelRow, ref: str | int) -> VersionRow:
        ref = str(ref)
        query = select(VersionRow).where(VersionRow.model_id == model.id)
        if ref == LATEST:
            query = query.order_by(VersionRow.version.desc()).limit(1)
            what = "no versions"
        elif VERSION_NUMBER.fullmatch(ref):
            query = query.where(VersionRow.version == int(ref))
            what = f"no version {ref}"
            if int(ref) > MAX_VERSION:
                raise VersionNotFound(f"model {model.name!r} has {what}")
        else:
            query = query.join(AliasRow, AliasRow.version_id == VersionRow.id).where(
                AliasRow.alias == ref
            )
            what = f"no version and no alias {ref!r}"
            if not ALIAS_PATTERN.fullmatch(ref):  # no stored alias looks like this
                raise VersionNotFound(f"model {model.name!r} has {what}")
        row = session.scalars(query).one_or_none()
        if row is None:
            raise VersionNotFound(f"model {model.name!r} has {what}")
        return row

    @staticmethod
    def _aliases_by_version(session: Session, model_id: int) -> dict[int, list[str]]:
        rows = session.execute(
            select(AliasRow.version_id, AliasRow.alias)
            .where(AliasRow.model_id == model_id)
            .order_by(AliasRow.alias)
        )
        out: dict[int, list[str]] = {}
        for version_id, alias in rows:
            out.setdefault(version_id, []).append(alias)
        return out

    @staticmethod
    def _record(name: str, row: VersionRow, aliases: list[str]) -> ModelVersion:
        return ModelVersion(
            name=name,
            version=row.version,
            aliases=aliases,
            algorithm=row.algorithm,
            params=row.params,
            preprocessing=row.preprocessing,
            feature_names=row.feature_names,
            n_samples=row.n_samples,
            n_features=row.n_features,
            metrics=row.metrics,
            anomaly=row.anomaly,
            operations=row.operations,
            artifact_path=row.artifact_path,
            artifact_sha256=row.artifact_sha256,
            artifact_size=row.artifact_size,
            library_versions=row.library_versions,
            training_seconds=row.training_seconds,
            created_at=_utc(row.created_at),
            description=row.description,
            tags=row.tags,
        )

    def get_version(self, name: str, ref: str | int = LATEST) -> ModelVersion:
        """The version ``ref`` (a number, an alias or ``latest``) of model ``name``."""
        stamp = self.resolutions.before_lookup()
        with self._reading() as session:
            model = self._model_row(session, name)
            row = self._version_row(session, model, ref)
            aliases = self._aliases_by_version(session, model.id).get(row.id, [])
            version = self._record(name, row, aliases)
        self.resolutions.put(name, str(ref), version, stamp)
        return version

    def resolved(self, name: str, ref: str | int = LATEST) -> ModelVersion | None:
        """The version ``get_version`` would return, if it is known without a query (no
        registry write since it was looked up); else None."""
        return self.resolutions.get(name, str(ref))

    def _refresh_soon(self, name: str, ref: str) -> None:
        # One background thread, created on first use: renewals are rare (one per key per half
        # age) and must neither block a request nor take a thread a request is waiting for.
        with self._refresher_lock:
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="lloyd-resolutions"
                )
            try:
                self._refresher.submit(self._refresh, name, ref)
            except RuntimeError:  # the interpreter is shutting down: let the entry expire
                self.resolutions.refreshed(name, ref)

    def _refresh(self, name: str, ref: str) -> None:
        gone = failed = False
        try:
            self.get_version(name, ref)
        except (ModelNotFound, VersionNotFound):
            gone = True
        except Exception as exc:  # the database is away: the entry expires, requests query
            failed = True
            log.warning("renewing the resolution of %s/%s failed: %s", name, ref, exc)
        finally:
            self.resolutions.refreshed(name, ref, gone=gone, failed=failed)

    def close(self) -> None:
        """Stops the renewal thread (after its current query) and closes the stamp file; the
        registry stays usable (both come back when next needed)."""
        with self._refresher_lock:
            refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.shutdown(wait=True, cancel_futures=True)
        self.resolutions.stamp.close()

    def list_versions(
        self, name: str, *, offset: int, limit: int
    ) -> tuple[list[ModelVersion], int]:
        with self._reading() as session:
            model = self._model_row(session, name)
            total = session.scalar(
                select(func.count()).select_from(VersionRow).where(VersionRow.model_id == model.id)
            )
            rows = session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model.id)
                .order_by(VersionRow.version)
                .offset(min(offset, MAX_OFFSET))
                .limit(limit)
            ).all()
            aliases = self._aliases_by_version(session, model.id)
            return [self._record(name, r, aliases.get(r.id, [])) for r in rows], int(total or 0)

    def _summary(self, session: Session, model: ModelRow) -> ModelSummary:
        latest = session.execute(
            select(VersionRow.version, VersionRow.algorithm)
            .where(VersionRow.model_id == model.id)
            .order_by(VersionRow.version.desc())
            .limit(1)
        ).one_or_none()
        count = session.scalar(
            select(func.count()).select_from(VersionRow).where(VersionRow.model_id == model.id)
        )
        aliases = session.execute(
            select(AliasRow.alias, VersionRow.version)
            .join(VersionRow, AliasRow.version_id == VersionRow.id)
            .where(AliasRow.model_id == model.id)
            .order_by(AliasRow.alias)
        )
        return ModelSummary(
            name=model.name,
            created_at=_utc(model.created_at),
            latest_version=latest[0] if latest else None,
            n_versions=int(count or 0),
            aliases={alias: version for alias, version in aliases},
            algorithm=latest[1] if latest else None,
        )

    def get_model(self, name: str) -> ModelSummary:
        with self._reading() as session:
            return self._summary(session, self._model_row(session, name))

    def list_models(self, *, offset: int, limit: int) -> tuple[list[ModelSummary], int]:
        with self._reading() as session:
            total = session.scalar(select(func.count()).select_from(ModelRow))
            rows = session.scalars(
                select(ModelRow)
                .order_by(ModelRow.name)
                .offset(min(offset, MAX_OFFSET))
                .limit(limit)
            ).all()
            return [self._summary(session, r) for r in rows], int(total or 0)

    # -- writes --------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        new: NewVersion,
        model: Any,
        *,
        completes: JobCompletion | None = None,
    ) -> ModelVersion:
        """Store ``model`` as the next version of ``name``.

        The artifact is durable in the store before the row is committed; if the commit fails
        the artifact is removed, so neither exists without the other. With ``completes``, the job
        that produced the model is marked succeeded (its result ``completes.result(version)``)
        in the same transaction, which commits only while the job row still says its owner runs it:
        a cancelled job, or one another replica took over, never gains a version."""
        artifact = self.store.write(self.store.serialize(model))
        try:
            version = self._allocate(name, new, artifact, completes)
        except BaseException:
            self.store.delete(artifact.path)
            raise
        # Committed: nothing below may remove the artifact, whatever fails.
        self.resolutions.changed()
        # The freshly fitted model is the likeliest to be asked for next.
        self.cache.put(version.cache_key, model)
        return version

    def _allocate(
        self,
        name: str,
        new: NewVersion,
        artifact: StoredArtifact,
        completes: JobCompletion | None,
    ) -> ModelVersion:
        for attempt in range(ALLOCATION_ATTEMPTS):
            try:
                return self._insert_version(name, new, artifact, completes)
            except IntegrityError as exc:
                if not _lost_allocation_race(exc):
                    raise
                log.debug("version allocation for %r lost a race (attempt %d)", name, attempt)
        raise RuntimeError(f"could not allocate a version of {name!r}")

    def _insert_version(
        self,
        name: str,
        new: NewVersion,
        artifact: StoredArtifact,
        completes: JobCompletion | None,
    ) -> ModelVersion:
        with self._writing() as session:
            model = session.scalars(
                select(ModelRow).where(ModelRow.name == name).with_for_update()
            ).one_or_none()
            if model is None:
                model = ModelRow(name=name, last_version=0)
                session.add(model)
                session.flush()
            model.last_version += 1
            row = VersionRow(
                model_id=model.id,
                version=model.last_version,
                algorithm=new.algorithm,
                params=new.params,
                preprocessing=new.preprocessing,
                feature_names=new.feature_names,
                n_samples=new.n_samples,
                n_features=new.n_features,
                metrics=new.metrics,
                anomaly=new.anomaly,
                operations=new.operations,
                artifact_path=artifact.path,
                artifact_sha256=artifact.sha256,
                artifact_size=artifact.size_bytes,
                library_versions=new.library_versions,
                training_seconds=new.training_seconds,
                description=new.description,
                tags=new.tags,
            )
            session.add(row)
            session.flush()
            version = self._record(name, row, [])
            if completes is not None:
                complete_job_in(session, completes.claim, completes.result(version))
            return version

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        if not ALIAS_PATTERN.fullmatch(alias) or alias == LATEST:
            raise InvalidInput(
                f"alias {alias!r} is not allowed: it must start with a letter, use only letters, "
                "digits, '_', '.', '-' (at most 64) and not be 'latest'",
                at=["alias"],
            )
        with self._writing() as session:
            model = self._model_row(session, name, lock=True)
            row = self._version_row(session, model, version)
            existing = session.scalars(
                select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
            ).one_or_none()
            if existing is None:
                session.add(AliasRow(model_id=model.id, alias=alias, version_id=row.id))
            else:
                existing.version_id = row.id
            session.flush()
            aliases = self._aliases_by_version(session, model.id).get(row.id, [])
            record = self._record(name, row, aliases)
        self.resolutions.changed()
        return record

    def delete_alias(self, name: str, alias: str) -> None:
        with self._writing() as session:
            model = self._model_row(session, name, lock=True)
            row = None
            if ALIAS_PATTERN.fullmatch(alias):  # else no stored alias looks like it
                row = session.scalars(
                    select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
                ).one_or_none()
            if row is None:
                raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
            session.delete(row)
        self.resolutions.changed()

    def delete_version(self, name: str, ref: str | int) -> ModelVersion:
        """Delete one version (its aliases go with it), then its artifact."""
        with self._writing() as session:
            model = self._model_row(session, name, lock=True)
            row = self._version_row(session, model, ref)
            record = self._record(name, row, [])
            for alias in session.scalars(select(AliasRow).where(AliasRow.version_id == row.id)):
                session.delete(alias)
            # The ORM knows no relationships, so it would not order these deletes: children first,
            # else the database's ON DELETE CASCADE removes them and SQLAlchemy warns.
            session.flush()
            session.delete(row)
        self.resolutions.changed()
        # The row is gone before the file: a crash in between leaves an orphan file, never a
        # row whose artifact is missing.
        self._forget(record)
        return record

    def delete_model(self, name: str) -> list[ModelVersion]:
        """Delete a model, every version and alias of it, then their artifacts."""
        with self._writing() as session:
            model = self._model_row(session, name, lock=True)
            rows = session.scalars(select(VersionRow).where(VersionRow.model_id == model.id)).all()
            records = [self._record(name, r, []) for r in rows]
            for alias in session.scalars(select(AliasRow).where(AliasRow.model_id == model.id)):
                session.delete(alias)
            session.flush()
            for row in rows:
                session.delete(row)
            session.flush()
            session.delete(model)
        self.resolutions.changed()
        for record in records:
            self._forget(record)
        return records

    def _forget(self, record: ModelVersion) -> None:
        self.cache.evict(
            lambda key: isinstance(key, tuple) and key[:2] == (record.name, record.version)
        )
        self.store.delete(record.artifact_path)

    # -- artifacts -----------------------------------------------------------------------------
    def cached(self, version: ModelVersion) -> Any | None:
        """The loaded model if it is in memory, else None (no disk access)."""
        # Checked on a hit too, so that whether a drifted version is refused never depends on
        # what happens to be cached (nor on the request's size, which picks this path or load).
        self._check_library_versions(version)
        return self.cache.peek(version.cache_key)

    def load(self, version: ModelVersion) -> Any:
        """The loaded model of ``version``: from the cache, or from disk after its library
        versions (from the row: nothing is unpickled to learn them) and its sha256 check."""
        self._check_library_versions(version)
        try:
            return self.cache.get(version.cache_key, lambda: self._read_artifact(version))
        except ArtifactMissing:
            # Deleted while this request was on its way: that is a 404, not a damaged store.
            current = self.get_version(version.name, version.version)
            if current.artifact_sha256 != version.artifact_sha256:
                raise VersionNotFound(
                    f"model {version.name!r} version {version.version} was deleted"
                ) from None
            raise

    def _check_library_versions(self, version: ModelVersion) -> None:
        """Refuse (VersionDrift) an artifact written by another scikit-learn or numpy major
        version, unless the settings allow it; then warn once per version."""
        if not has_drifted(version.library_versions):
            return
        if not self.allow_version_drift:
            raise drift_error(version.label, version.library_versions)
        if version.cache_key not in self._drift_warned:
            self._drift_warned.add(version.cache_key)
            log.warning(
                "%s was trained with %s and is loaded under %s, as %s allows",
                version.label,
                compared_versions(version.library_versions),
                RUNNING,
                DRIFT_SETTING,
            )

    def _read_artifact(self, version: ModelVersion) -> Any:
        try:
            return self.store.load(
                version.artifact_path, version.artifact_sha256, label=version.label
            )
        except LloydError:
            raise
        except Exception as exc:
            # The file is the one the service wrote (its sha256 matched): a drifted version that
            # does not unpickle here failed because of the drift, which is no server error.
            if not has_drifted(version.library_versions):
                raise
            cause = f"{type(exc).__name__}: {exc}"
            raise drift_error(version.label, version.library_versions, cause=cause) from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return True
        except OperationalError:
            return False

    def artifact_paths(self) -> set[str]:
        """The artifact path of every version, as stored (relative to the store's root)."""
        with self._reading() as session:
            return set(session.scalars(select(VersionRow.artifact_path)))
