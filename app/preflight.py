"""The checks of ``python -m app check``: the database answers, its migrations are at head or
can be applied, the models store is reachable and writable and is the database's own, and the
Dask scheduler answers; each failure a one-line reason. Nothing is changed but for a probe
written into the store and removed at once (and the store's folders, which start-up makes too).
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from app.registry.artifacts import ArtifactStore, open_store
from app.registry.database import MigrationState, create_database_engine, migration_state
from app.registry.object_store import TEMP_PREFIX
from app.registry.store_identity import store_mismatch
from app.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10


class CheckFailed(Exception):
    """A check that failed; its message is the reason, one line."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a driver's error, say, spans several), without
    SQLAlchemy's wrapping of the driver's own."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc) or type(exc).__name__
    return " ".join(text.split())


def run_checks(settings: Settings) -> str:
    """Every check, in order; the one-line summary when all pass, else ``CheckFailed``."""
    engine, database = open_database(settings)
    try:
        migrations = _migrations(engine, settings)
        store = _store(settings)
        if engine is not None and migrations.pending == 0:
            problem = store_mismatch(engine, store)
            if problem is not None:
                raise CheckFailed(problem)
    finally:
        if engine is not None:
            engine.dispose()
    jobs = _dask(settings.dask_scheduler)
    return (
        f"database {database} {_migration_summary(migrations)}; models store "
        f"{store.describe()} writable; jobs on {jobs}"
    )


def open_database(settings: Settings) -> tuple[Engine | None, str]:
    """An engine on the database, checked to answer, and the database's name for messages;
    None for a SQLite file that does not exist yet (start-up creates it: its folder must be
    writable), which is not created here."""
    url = make_url(settings.database_url)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        file = Path(url.database or "").expanduser()
        if not file.exists():
            _check_creatable(file, shown)
            return None, f"{shown} (a new file)"
    engine = create_database_engine(
        _with_timeout(url).render_as_string(hide_password=False),
        busy_timeout_seconds=settings.sqlite_busy_timeout_seconds,
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any failure to connect is the reason the check gives
        engine.dispose()
        raise CheckFailed(f"database {shown} is unreachable: {one_line(exc)}") from None
    return engine, shown


def _with_timeout(url: URL) -> URL:
    """A PostgreSQL URL with a connect timeout, unless it sets its own (an unreachable host
    would otherwise hang the check)."""
    if url.get_backend_name() != "postgresql" or "connect_timeout" in url.query:
        return url
    return url.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_SECONDS)})


def _check_creatable(file: Path, shown: str) -> None:
    folder = file.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise CheckFailed(f"database {shown} cannot be created: {folder} is not a folder")
    probe = folder / f"{TEMP_PREFIX}check-{uuid.uuid4().hex}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise CheckFailed(
            f"database {shown} cannot be created in {folder}: {one_line(exc)}"
        ) from None


def _migrations(engine: Engine | None, settings: Settings) -> MigrationState:
    state = migration_state(engine)
    if state.unknown:
        raise CheckFailed(
            f"the database is at revision {', '.join(state.unknown)}, which this Lloyd's "
            f"migrations (head {', '.join(state.heads)}) do not know: it was migrated by a "
            "newer Lloyd"
        )
    if state.pending and not settings.migrate_on_startup:
        raise CheckFailed(
            f"the database needs {state.pending} migration(s) and LLOYD_MIGRATE_ON_STARTUP is "
            "off: run `python -m app migrate`"
        )
    return state


def _migration_summary(state: MigrationState) -> str:
    if state.pending == 0:
        return f"at head ({', '.join(state.heads)})"
    return f"with {state.pending} migration(s) to apply at start-up"


def _store(settings: Settings) -> ArtifactStore:
    """The models store, opened and written to (a probe, removed at once)."""
    location = settings.models_store
    try:
        store = open_store(location, s3_endpoint_url=settings.s3_endpoint_url)
    except Exception as exc:  # a bad URL, a file where a folder should be, no access
        raise CheckFailed(f"models store {location} cannot be opened: {one_line(exc)}") from None
    probe = f"{TEMP_PREFIX}check-{uuid.uuid4().hex}"
    try:
        store.put(probe, b"lloyd check\n")
        store.remove(probe)
    except Exception as exc:  # no bucket, no credentials, no network, a read-only folder
        raise CheckFailed(
            f"models store {store.describe()} is not writable: {one_line(exc)}"
        ) from None
    return store


def _dask(scheduler: str | None) -> str:
    """Where jobs run; a scheduler's address is checked to accept connections."""
    if scheduler is None:
        return "local worker processes"
    if scheduler == "local":
        return "a Dask LocalCluster in the process"
    parts = urlsplit(scheduler)
    if parts.hostname is None:
        return f"the Dask scheduler {scheduler}"
    try:
        with socket.create_connection(
            (parts.hostname, parts.port or 8786), timeout=CONNECT_TIMEOUT_SECONDS
        ):
            pass
    except OSError as exc:
        raise CheckFailed(
            f"the Dask scheduler {scheduler} is unreachable: {one_line(exc)}"
        ) from None
    return f"the Dask scheduler {scheduler}"
