"""ModelCache: a bounded LRU with hit and miss counters; the registry keys it by name, version
and artifact sha256."""

from __future__ import annotations

import dataclasses

import pytest

from app.errors import ArtifactIntegrityError
from app.registry.cache import ModelCache


def loader(value: object, calls: list[object]):
    def load() -> object:
        calls.append(value)
        return value

    return load


def test_get_loads_once_and_counts_hits_and_misses():
    cache = ModelCache(2)
    calls: list[object] = []
    assert cache.get("a", loader("A", calls)) == "A"
    assert cache.get("a", loader("other", calls)) == "A"
    assert calls == ["A"]
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_peek_counts_hits_only():
    cache = ModelCache(2)
    assert cache.peek("a") is None
    assert (cache.hits, cache.misses) == (0, 0)
    cache.get("a", lambda: "A")
    assert cache.peek("a") == "A"
    assert (cache.hits, cache.misses) == (1, 1)


def test_least_recently_used_is_dropped_at_capacity():
    cache = ModelCache(2)
    calls: list[object] = []
    cache.get("a", loader("A", calls))
    cache.get("b", loader("B", calls))
    cache.get("a", loader("A", calls))  # a is now the most recent
    cache.get("c", loader("C", calls))  # drops b
    assert len(cache) == 2
    assert cache.peek("b") is None
    assert cache.peek("a") == "A" and cache.peek("c") == "C"
    cache.get("b", loader("B", calls))  # loaded again; drops a (c was peeked after a)
    assert calls == ["A", "B", "C", "B"]
    assert cache.peek("a") is None
    assert (cache.hits, cache.misses) == (3, 4)


def test_put_holds_a_value_without_counting():
    cache = ModelCache(1)
    cache.put("a", "A")
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 1)
    cache.put("b", "B")  # over capacity: drops a
    assert cache.peek("a") is None
    assert cache.get("b", lambda: "other") == "B"
    assert (cache.hits, cache.misses) == (1, 0)


def test_capacity_zero_caches_nothing():
    cache = ModelCache(0)
    calls: list[object] = []
    cache.get("a", loader("A", calls))
    cache.get("a", loader("A", calls))
    assert calls == ["A", "A"]
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (0, 2)


def test_a_failed_load_is_not_cached():
    cache = ModelCache(2)

    def fail() -> object:
        raise ArtifactIntegrityError("bad")

    with pytest.raises(ArtifactIntegrityError):
        cache.get("a", fail)
    assert len(cache) == 0
    assert cache.get("a", lambda: "A") == "A"


def test_evict_by_predicate():
    cache = ModelCache(4)
    for key in [("m", 1, "x"), ("m", 2, "y"), ("n", 1, "z")]:
        cache.get(key, lambda key=key: key)
    cache.evict(lambda key: key[0] == "m")
    assert len(cache) == 1
    assert cache.peek(("n", 1, "z")) == ("n", 1, "z")


def test_registry_caches_by_name_version_and_sha256(registry, trained):
    registry.cache = ModelCache(2)  # the registry's own, fresh, with capacity 2
    first = trained(n_clusters=2)
    versions = [
        registry.register("line-7", t.new, t.model)
        for t in (first, trained(n_clusters=3), trained(n_clusters=4))
    ]
    assert versions[0].cache_key == ("line-7", 1, versions[0].artifact_sha256)
    # Registering put each new model in the cache; capacity 2 dropped version 1.
    assert len(registry.cache) == 2
    assert registry.cached(versions[0]) is None
    assert registry.cached(versions[2]) is not None

    misses = registry.cache.misses
    loaded = registry.load(versions[0])  # from disk
    assert registry.cache.misses == misses + 1
    assert registry.load(versions[0]) is loaded
    assert registry.cache.misses == misses + 1
    assert registry.cached(versions[1]) is None  # least recently used, dropped
    assert loaded.estimator.n_clusters == 2

    # A record naming another sha256 (an artifact rewritten since) never gets the cached model:
    # it goes to disk, where the file does not match it.
    stale = dataclasses.replace(versions[0], artifact_sha256="0" * 64)
    assert registry.cached(stale) is None
    with pytest.raises(ArtifactIntegrityError):
        registry.load(stale)


def test_register_caches_the_fitted_model_itself(registry, trained):
    model = trained()
    version = registry.register("line-7", model.new, model.model)
    assert registry.cached(version) is model.model
    assert registry.load(version) is model.model
