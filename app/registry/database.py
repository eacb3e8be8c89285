"""Engines for SQLite (WAL, busy timeout, immediate write transactions) and PostgreSQL, and the
Alembic upgrade run at start-up."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Execution option that makes a SQLite transaction take the write lock at BEGIN: a deferred
# transaction that reads and then writes can fail at once with SQLITE_BUSY in WAL mode when
# another writer commits in between, whatever the busy timeout.
WRITE = {"lloyd_write": True}


def create_database_engine(url: str, *, busy_timeout_seconds: float = 30.0) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and WAL mode on."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("lloyd_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# Keys of PostgreSQL advisory locks (any 64-bit number no other application uses).
MIGRATION_LOCK = 0x6C6C6F7964_01  # "lloyd" + 1
STORE_ID_LOCK = 0x6C6C6F7964_02


def is_postgresql(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def hold_lock(connection: Connection, key: int) -> None:
    """Serialize this transaction with every other holding ``key``, across processes and
    hosts: a PostgreSQL advisory lock, released at commit or rollback. (On SQLite a write
    transaction, begun IMMEDIATE, already excludes every other writer.)"""
    if is_postgresql(connection):
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key})")


def upgrade_database(engine: Engine) -> None:
    """Apply every Alembic migration to ``engine``'s database (the same scripts everywhere).

    Replicas starting at once on a new or older database would each run the migrations, and
    all but one fail (PostgreSQL: ``duplicate key ... pg_type_typname_nsp_index`` on
    ``alembic_version``). Under an advisory lock, one migrates while the others wait, then
    find the schema current and do nothing."""
    config = alembic_config()
    with engine.execution_options(**WRITE).begin() as connection:
        hold_lock(connection, MIGRATION_LOCK)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass(frozen=True)
class MigrationState:
    """Where a database stands against the migration scripts."""

    current: tuple[str, ...]  # the revisions it is at (none: no schema yet)
    heads: tuple[str, ...]  # the scripts' latest
    pending: int  # migrations ``upgrade_database`` would apply
    unknown: tuple[str, ...]  # revisions it is at that the scripts do not know (a newer Lloyd)


def migration_state(engine: Engine | None) -> MigrationState:
    """``engine``'s database against the scripts, read without changing anything; None: a
    database that does not exist yet (every migration is pending)."""
    script = ScriptDirectory.from_config(alembic_config())
    heads = tuple(script.get_heads())
    current: tuple[str, ...] = ()
    if engine is not None:
        with engine.connect() as connection:
            current = tuple(MigrationContext.configure(connection).get_current_heads())
    unknown = []
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            unknown.append(revision)
    if unknown:
        return MigrationState(current, heads, 0, tuple(unknown))
    pending = len(list(script.iterate_revisions(heads, current or "base")))
    # (From "base", iterate_revisions counts the revisions up to head; from a revision, those
    # after it.)
    return MigrationState(current, heads, pending, ())
