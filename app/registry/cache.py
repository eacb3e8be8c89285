"""ModelCache: a bounded least-recently-used cache of loaded models, keyed by version and sha256."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class ModelCache:
    """Thread-safe LRU. ``capacity`` 0 disables caching. Counters feed the Prometheus metrics."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def peek(self, key: Hashable) -> Any | None:
        """The cached value, counted as a hit, or None (not counted: ``get`` counts the miss)."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return value

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        value = self.peek(key)
        if value is not None:
            return value
        with self._lock:
            self.misses += 1
        value = load()  # outside the lock: loads of different models run in parallel
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        """Hold ``value`` without counting a hit or a miss (a model just trained, say)."""
        if self.capacity == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def evict(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                del self._items[key]
