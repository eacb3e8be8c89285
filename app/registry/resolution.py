"""Resolved versions kept in memory, dropped the moment the registry changes anywhere.

Resolving ``{name}/{version}`` to a version record is a database query per request, which for a
1-row prediction costs more than the prediction (and, being blocking, a hop to the thread
pool). Every registry write (a new version, a delete, an alias set or removed) replaces a small
stamp file in the models store *after* its commit; a resolution is reused only while the stamp
is the one it was read under (one ``stat``, about a microsecond) and it is younger than the
configured age. Processes sharing the store (uvicorn workers, replicas on one host) therefore
see each other's deletes at once; replicas on other hosts, whose file attributes may be cached
by a network file system, within ``max_age_seconds``.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from app.registry.artifacts import TEMP_PREFIX
from app.registry.records import ModelVersion

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int] | None


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

    def __init__(self, stamp: RegistryStamp, *, max_age_seconds: float, size: int = 4096) -> None:
        self.stamp = stamp
        self.max_age = max_age_seconds
        self.size = size
        self._entries: OrderedDict[tuple[str, str], tuple[ModelVersion, float]] = OrderedDict()
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
            if time.monotonic() - stored > self.max_age:
                del self._entries[(name, ref)]
                return None
            return version

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
