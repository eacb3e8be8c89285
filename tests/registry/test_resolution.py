"""Resolved versions reused without a query until any registry write, in this process or in
another one sharing the store; deletes racing reads answer 404, never a damaged store."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from app.errors import ArtifactIntegrityError, ModelNotFound, VersionNotFound
from app.registry.artifacts import ArtifactStore
from app.registry.cache import ModelCache
from app.registry.model_registry import ModelRegistry
from app.registry.resolution import RegistryStamp


class Clock:
    """The resolutions' clock, moved by hand: ages pass without waiting for them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def caching(
    engine: sa.Engine, store_root, max_age: float = 60.0, clock: Clock | None = None
) -> ModelRegistry:
    return ModelRegistry(
        engine,
        ArtifactStore(store_root),
        ModelCache(0),
        resolution_max_age_seconds=max_age,
        clock=clock or Clock(),
    )


def queries(engine: sa.Engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_a_resolution_is_reused_until_a_write(engine, store_root, trained) -> None:
    registry = caching(engine, store_root)
    registry.register("m", trained().new, trained().model)
    first = registry.get_version("m", "latest")
    seen = queries(engine)
    assert registry.resolved("m", "latest") == first
    assert registry.resolved("m", "1") is None  # never looked up under this ref
    assert seen == []
    registry.register("m", trained(seed=1).new, trained(seed=1).model)
    assert registry.resolved("m", "latest") is None
    assert registry.get_version("m", "latest").version == 2


@pytest.mark.parametrize("write", ["delete_version", "delete_model", "set_alias", "delete_alias"])
def test_every_write_drops_resolutions(engine, store_root, trained, write) -> None:
    registry = caching(engine, store_root)
    registry.register("m", trained().new, trained().model)
    registry.register("m", trained(seed=1).new, trained(seed=1).model)
    registry.set_alias("m", "prod", 1)
    for ref in ("latest", "1", "2", "prod"):
        registry.get_version("m", ref)
    {
        "delete_version": lambda: registry.delete_version("m", 2),
        "delete_model": lambda: registry.delete_model("m"),
        "set_alias": lambda: registry.set_alias("m", "prod", 2),
        "delete_alias": lambda: registry.delete_alias("m", "prod"),
    }[write]()
    assert all(registry.resolved("m", ref) is None for ref in ("latest", "1", "2", "prod"))


def test_another_process_sharing_the_store_sees_a_delete_at_once(
    engine, store_root, trained
) -> None:
    # Two registries on one store and database stand for two processes (uvicorn workers).
    serving, deleting = caching(engine, store_root), caching(engine, store_root)
    serving.register("m", trained().new, trained().model)
    assert serving.get_version("m", "1").version == 1
    assert serving.resolved("m", "1") is not None
    deleting.delete_version("m", 1)
    assert serving.resolved("m", "1") is None
    with pytest.raises(VersionNotFound):
        serving.get_version("m", "1")
    deleting.delete_model("m")
    with pytest.raises(ModelNotFound):
        serving.get_version("m", "latest")


def test_resolutions_expire(engine, store_root, trained) -> None:
    clock = Clock()
    registry = caching(engine, store_root, max_age=0.05, clock=clock)
    registry.register("m", trained().new, trained().model)
    registry.get_version("m", "latest")
    assert registry.resolved("m", "latest") is not None
    clock.advance(0.06)
    assert registry.resolved("m", "latest") is None


def test_age_zero_turns_the_cache_off(engine, store_root, trained) -> None:
    registry = caching(engine, store_root, max_age=0)
    registry.register("m", trained().new, trained().model)
    registry.get_version("m", "latest")
    assert registry.resolved("m", "latest") is None


def test_a_load_racing_a_delete_is_a_404(engine, store_root, trained) -> None:
    registry = caching(engine, store_root)
    registry.register("m", trained().new, trained().model)
    registry.register("m", trained(seed=1).new, trained(seed=1).model)
    record = registry.get_version("m", "1")  # a request resolved it ...
    registry.delete_version("m", 1)  # ... then a delete committed and removed the file
    with pytest.raises(VersionNotFound):
        registry.load(record)


def test_a_load_racing_a_model_delete_and_recreate_is_a_404(engine, store_root, trained) -> None:
    registry = caching(engine, store_root)
    registry.register("m", trained().new, trained().model)
    record = registry.get_version("m", "1")
    registry.delete_model("m")
    registry.register("m", trained(seed=3).new, trained(seed=3).model)  # a new version 1
    with pytest.raises(VersionNotFound):
        registry.load(record)


def test_a_file_missing_under_a_live_row_is_still_an_integrity_error(
    engine, store_root, trained
) -> None:
    registry = caching(engine, store_root)
    version = registry.register("m", trained().new, trained().model)
    registry.cache.evict(lambda key: True)
    (registry.store.root / version.artifact_path).unlink()
    with pytest.raises(ArtifactIntegrityError):
        registry.load(version)


def wait_for_renewal(registry: ModelRegistry, name: str, ref: str) -> None:
    deadline = time.monotonic() + 5
    while (name, ref) in registry.resolutions._refreshing:
        assert time.monotonic() < deadline, "the renewal never ended"
        time.sleep(0.005)


def test_a_resolution_in_use_is_renewed_before_it_expires(engine, store_root, trained) -> None:
    clock = Clock()
    registry = caching(engine, store_root, max_age=1.0, clock=clock)
    registry.register("m", trained().new, trained().model)
    first = registry.get_version("m", "latest")
    seen = queries(engine)
    clock.advance(0.55)  # past half the age: this read asks for a renewal and is still answered
    assert registry.resolved("m", "latest") == first
    wait_for_renewal(registry, "m", "latest")
    assert seen, "the renewal queried the database"
    clock.advance(0.6)  # 1.15 s after the lookup, 0.6 s after the renewal
    assert registry.resolved("m", "latest") == first
    registry.close()


def test_one_renewal_at_a_time_per_resolution(engine, store_root, trained, monkeypatch) -> None:
    clock = Clock()
    registry = caching(engine, store_root, max_age=1.0, clock=clock)
    registry.register("m", trained().new, trained().model)
    registry.get_version("m", "latest")
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(registry, "_refresh_soon", lambda *key: asked.append(key))
    registry.resolutions.refresh = registry._refresh_soon
    clock.advance(0.55)
    for _ in range(20):
        assert registry.resolved("m", "latest") is not None
    assert asked == [("m", "latest")]
    registry.resolutions.refreshed("m", "latest")
    registry.resolved("m", "latest")
    assert asked == [("m", "latest")] * 2


def test_a_renewal_drops_a_version_deleted_where_the_stamp_is_not_seen(
    engine, store_root, trained
) -> None:
    # Another host deleted the version: its stamp bump is not visible here (another store
    # mount), only the database says so.
    clock = Clock()
    registry = caching(engine, store_root, max_age=1.0, clock=clock)
    registry.register("m", trained().new, trained().model)
    registry.get_version("m", "1")
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM model_versions"))
    clock.advance(0.55)
    assert registry.resolved("m", "1") is not None  # still within its age
    wait_for_renewal(registry, "m", "1")
    assert registry.resolved("m", "1") is None
    registry.close()


def test_a_failed_renewal_leaves_the_entry_to_expire(
    engine, store_root, trained, monkeypatch, caplog
) -> None:
    clock = Clock()
    registry = caching(engine, store_root, max_age=1.0, clock=clock)
    registry.register("m", trained().new, trained().model)
    first = registry.get_version("m", "latest")

    def database_away() -> None:
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    tries: list[object] = []
    monkeypatch.setattr(registry, "get_version", lambda *a: tries.append(a) or database_away())
    clock.advance(0.55)
    assert registry.resolved("m", "latest") == first
    deadline = time.monotonic() + 5
    while "renewing the resolution of m/latest failed" not in caplog.text:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    for _ in range(10):  # served until its age runs out, with no second try meanwhile
        assert registry.resolved("m", "latest") == first
    clock.advance(0.5)
    assert registry.resolved("m", "latest") is None
    assert len(tries) == 1
    monkeypatch.undo()
    assert registry.get_version("m", "latest") == first  # the database is back
    seen = queries(engine)
    clock.advance(0.55)
    registry.resolved("m", "latest")
    wait_for_renewal(registry, "m", "latest")
    assert seen, "renewals resume"
    registry.close()


def test_stamps_on_one_file_see_each_others_writes_at_once(tmp_path) -> None:
    writer, reader = RegistryStamp(tmp_path / "stamp"), RegistryStamp(tmp_path / "stamp")
    before = reader.read()
    assert before is not None and len(before) == RegistryStamp.LENGTH
    assert writer.read() == before
    writer.bump()
    assert reader.read() == writer.read() != before
    reader.close()
    writer.close()


def test_a_stamp_file_replaced_or_recreated_is_followed(tmp_path, monkeypatch) -> None:
    # An older Lloyd replaced the file on each write; an operator may delete it.
    path = tmp_path / "stamp"
    reader = RegistryStamp(path)
    before = reader.read()
    monkeypatch.setattr(RegistryStamp, "RECHECK_SECONDS", 0.0)
    (tmp_path / "new").write_bytes(b"\x01" * 40)
    (tmp_path / "new").replace(path)
    replaced = reader.read()
    assert replaced != before and replaced == b"\x01" * RegistryStamp.LENGTH
    path.unlink()
    recreated = reader.read()  # made again, with a value of its own
    assert path.exists() and recreated not in (before, replaced, None)
    RegistryStamp(path).bump()
    assert reader.read() != recreated
    reader.close()


def test_an_older_short_stamp_is_lengthened_and_counts_as_a_change(tmp_path) -> None:
    (tmp_path / "stamp").write_bytes(b"abc")
    stamp = RegistryStamp(tmp_path / "stamp")
    value = stamp.read()
    assert value is not None and len(value) == RegistryStamp.LENGTH and value[:3] != b"abc"
    stamp.close()


def test_an_unreadable_stamp_trusts_no_resolution(engine, store_root, trained, monkeypatch):
    registry = caching(engine, store_root)
    registry.register("m", trained().new, trained().model)
    registry.get_version("m", "latest")
    assert registry.resolved("m", "latest") is not None

    def failing(*args: object) -> bytes:
        raise OSError("stale file handle")

    monkeypatch.setattr("app.registry.resolution.os.pread", failing)
    assert registry.resolved("m", "latest") is None
    registry.get_version("m", "latest")  # looked up, but not filed under an unknown state
    assert registry.resolved("m", "latest") is None
    monkeypatch.undo()
    registry.get_version("m", "latest")
    assert registry.resolved("m", "latest") is not None
    registry.close()
