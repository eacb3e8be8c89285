"""The artifact store's id, written once into the store and into the database: a replica whose
store is not the one its database's versions live in refuses to start, saying so."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import Connection, Engine, func, insert, select

from app.registry.artifacts import ArtifactStore
from app.registry.database import STORE_ID_LOCK, WRITE, hold_lock
from app.registry.orm import MetaRow, ModelRow

STORE_ID = "store_id"
ARTIFACTS = "artifacts/"


def _is_new(connection: Connection) -> bool:
    """Whether the database has never had a model."""
    return connection.scalar(select(func.count()).select_from(ModelRow)) == 0


class StoreMismatch(RuntimeError):
    """This replica's artifact store is not the one its database names."""


def agree_on_store(engine: Engine, store: ArtifactStore) -> str:
    """The store id this database and this store share; made on first use of either.

    Held under a lock (PostgreSQL advisory lock; SQLite's write lock), so that replicas
    starting at once on a new database and a new store agree on one id rather than each
    writing its own."""
    with engine.execution_options(**WRITE).begin() as connection:
        hold_lock(connection, STORE_ID_LOCK)
        known = connection.scalar(select(MetaRow.value).where(MetaRow.key == STORE_ID))
        found = store.read_store_id()
        problem = _mismatch(known, found, store, lambda: _is_new(connection))
        if problem is not None:
            raise StoreMismatch(problem)
        if known is None:
            chosen = found or store.write_store_id(uuid.uuid4().hex)
            connection.execute(insert(MetaRow).values(key=STORE_ID, value=chosen))
            return chosen
        return known


def store_mismatch(engine: Engine, store: ArtifactStore) -> str | None:
    """Why ``agree_on_store`` would refuse ``store`` for this (migrated) database, or None when
    it would agree; read without writing anything."""
    with engine.connect() as connection:
        known = connection.scalar(select(MetaRow.value).where(MetaRow.key == STORE_ID))
        return _mismatch(known, store.read_store_id(), store, lambda: _is_new(connection))


def _mismatch(
    known: str | None, found: str | None, store: ArtifactStore, database_is_new: Callable[[], bool]
) -> str | None:
    """Why the store id ``found`` in ``store`` cannot go with the database's ``known`` one."""
    if known is None:
        if found is not None and database_is_new() and store.listing(ARTIFACTS):
            # Adopted, the store's artifacts would all look orphaned to this database, and
            # its start-up sweep would remove another database's models.
            return (
                f"the models store {store.describe()} (store id {found}) holds another "
                "database's artifacts, and this database is new: point LLOYD_MODELS_STORE "
                "at a new store, or LLOYD_DATABASE_URL at that store's database"
            )
        return None
    if found is None:
        return (
            f"the models store {store.describe()} is not the store this database's "
            f"versions live in (store id {known}): it holds no store id. Point "
            "LLOYD_MODELS_STORE at the store every replica of this database shares (a "
            "shared folder or an s3:// URL); if this is that store and its `store-id` "
            f"was lost, write {known} into it"
        )
    if found != known:
        return (
            f"the models store {store.describe()} (store id {found}) is not the store this "
            f"database's versions live in (store id {known}): point LLOYD_MODELS_STORE at "
            "the store every replica of this database shares"
        )
    return None
