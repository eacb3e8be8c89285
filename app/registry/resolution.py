"""Resolved versions kept in memory, dropped the moment the registry changes anywhere.

Resolving ``{name}/{version}`` to a version record is a database query per request, which for a
1-row prediction costs more than the prediction (and, being blocking, a hop to the thread
pool). Every registry write (a new version, a delete, an alias set or removed) replaces a small
stamp file in the models store *after* its commit; a resolution is reused only while the stamp
is the one it was read under (one ``stat``, about a microsecond) and it is younger than the
configured age. Processes sharing the store (uvicorn workers, replicas on one host) therefore
see each other's deletes at once; replicas on other hosts, whose file attributes may be cached
by a network file system, within ``max_age_seconds``.

A resolution in use is renewed before it expires: the first read past half its age asks for a
refresh (one query, in the background, never more than one per key at a time) and is answered
from the cache meanwhile. Under steady traffic no request waits for an expired resolution's
query, which made the slowest 1% of 1-row requests up to twice as slow; the age still bounds
staleness, since an entry not renewed in time expires as before.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from app.registry.artifacts import TEMP_PREFIX
from app.registry.records import ModelVersion

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int] | None

# A resolution read when older than this share of the maximum age is renewed in the background.
REFRESH_AFTER = 0.5


class RegistryStamp:
    """A file replaced (never rewritten in place) on every registry write: its inode, time
    and size identify the registry's state."""

    def __init__(self, path: Path, *, temp_dir: Path) -> None:
        self.path = path
        # Written among the artifacts' temporary files, so that one left by a crash is swept.
        self.temp_dir = temp_dir

    def read(self) -> Stamp:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def bump(self) -> None:
        # A random length too, so that two stamps never look alike even if an inode is reused
        # within the file system's time resolution.
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.temp_dir)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(1 + secrets.randbelow(64)))
        os.replace(temp, self.path)


class ResolutionCache:
    """``(name, ref) -> ModelVersion`` while the registry stamp has not changed."""

    def __init__(
        self,
        stamp: RegistryStamp,
        *,
        max_age_seconds: float,
        size: int = 4096,
        refresh: Callable[[str, str], None] | None = None,
    ) -> None:
        self.stamp = stamp
        self.max_age = max_age_seconds
        self.size = size
        # Called (under no lock) with a key due for renewal; it must not block, and must call
        # ``refreshed`` when done, whatever the outcome.
        self.refresh = refresh
        self._entries: OrderedDict[tuple[str, str], tuple[ModelVersion, float]] = OrderedDict()
        self._refreshing: set[tuple[str, str]] = set()
        self._seen: Stamp = None
        self._lock = threading.Lock()

    def get(self, name: str, ref: str) -> ModelVersion | None:
        if self.max_age <= 0:
            return None
        current = self.stamp.read()
        with self._lock:
            if current != self._seen:
                self._entries.clear()
                self._seen = current
                return None
            entry = self._entries.get((name, ref))
            if entry is None:
                return None
            version, stored = entry
            age = time.monotonic() - stored
            if age > self.max_age:
                del self._entries[(name, ref)]
                self._refreshing.discard((name, ref))
                return None
            renew = (
                age > self.max_age * REFRESH_AFTER
                and self.refresh is not None
                and (name, ref) not in self._refreshing
            )
            if renew:
                self._refreshing.add((name, ref))
        if renew:
            self.refresh(name, ref)  # type: ignore[misc]
        return version

    def refreshed(self, name: str, ref: str, *, gone: bool = False, failed: bool = False) -> None:
        """A renewal asked for by ``get`` has ended. ``gone``: the version no longer exists
        (deleted by a host whose stamp this one does not see), so it is dropped. ``failed``
        (the database is away): no other renewal is tried for it; it expires, and the next
        request's own lookup reports what is wrong."""
        with self._lock:
            if gone:
                self._entries.pop((name, ref), None)
            if not failed:
                self._refreshing.discard((name, ref))

    def before_lookup(self) -> Stamp:
        """The stamp to file a lookup's result under: read *before* the query, so that a write
        committed during the query makes the result stale rather than lost."""
        return self.stamp.read()

    def put(self, name: str, ref: str, version: ModelVersion, stamp: Stamp) -> None:
        if self.max_age <= 0:
            return
        with self._lock:
            if stamp != self._seen:
                self._entries.clear()
                self._seen = stamp
            self._entries[(name, ref)] = (version, time.monotonic())
            self._refreshing.discard((name, ref))
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def changed(self) -> None:
        """Called after every committed registry write; never raises, since the write is done:
        a stamp that cannot be replaced only leaves other processes on ``max_age``."""
        with self._lock:
            self._entries.clear()
        try:
            self.stamp.bump()
        except OSError as exc:
            log.warning("registry stamp %s not replaced (%s)", self.stamp.path, exc)
