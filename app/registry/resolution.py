"""Resolved versions kept in memory, dropped the moment the registry changes anywhere.

Resolving ``{name}/{version}`` to a version record is a database query per request, which for a
1-row prediction costs more than the prediction (and, being blocking, a hop to the thread
pool). Every registry write (a new version, a delete, an alias set or removed) rewrites a small
stamp file in the models store *after* its commit; a resolution is reused only while the stamp
is the one it was read under (one ``pread``, under a microsecond) and it is younger than the
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
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from app.registry.records import ModelVersion

log = logging.getLogger(__name__)

Stamp = bytes | None

# A resolution read when older than this share of the maximum age is renewed in the background.
REFRESH_AFTER = 0.5


class RegistryStamp:
    """A small file whose first bytes are rewritten in place, with new random ones, after every
    registry write: those bytes identify the registry's state.

    A reader keeps the file open and reads its bytes with one ``pread`` (under a microsecond,
    where a ``stat`` of its path, what this used to be, costs 3-9 us and was the largest single
    cost of a 1-row request). Writing in place, never replacing, keeps every process's open
    file the one the writers write. Whether the path still names that file (it was deleted and
    made again, say) is checked at most once a second; a half-written value read meanwhile only
    looks like one more change.
    """

    LENGTH = 16
    RECHECK_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._checked = -math.inf
        with self._lock:
            self._reopen()

    def _reopen(self) -> None:
        """Opens the file (created with a first value where there is none yet); called with the
        lock held."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            info = os.fstat(fd)
            if info.st_size < self.LENGTH:
                os.pwrite(fd, secrets.token_bytes(self.LENGTH), 0)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._identity = fd, (info.st_dev, info.st_ino)
        self._checked = time.monotonic()

    def _current_fd(self) -> int:
        fd = self._fd
        if fd is not None and time.monotonic() - self._checked < self.RECHECK_SECONDS:
            return fd
        with self._lock:
            try:
                info = os.stat(self.path)
                same = (info.st_dev, info.st_ino) == self._identity
            except FileNotFoundError:
                same = False
            if same and self._fd is not None:
                self._checked = time.monotonic()
            else:
                self._reopen()
            assert self._fd is not None
            return self._fd

    def read(self) -> Stamp:
        try:
            return os.pread(self._current_fd(), self.LENGTH, 0)
        except OSError:  # the store is away: nothing cached is trusted
            return None

    def bump(self) -> None:
        os.pwrite(self._current_fd(), secrets.token_bytes(self.LENGTH), 0)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd, self._identity = None, None
                self._checked = -math.inf


class ResolutionCache:
    """``(name, ref) -> ModelVersion`` while the registry stamp has not changed."""

    def __init__(
        self,
        stamp: RegistryStamp,
        *,
        max_age_seconds: float,
        size: int = 4096,
        refresh: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stamp = stamp
        self.max_age = max_age_seconds
        self.size = size
        # Called (under no lock) with a key due for renewal; it must not block, and must call
        # ``refreshed`` when done, whatever the outcome.
        self.refresh = refresh
        # What ages are reckoned by (tests give a clock they move by hand).
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[ModelVersion, float]] = OrderedDict()
        self._refreshing: set[tuple[str, str]] = set()
        self._seen: Stamp = None
        # Counts invalidations announced by other replicas (PostgreSQL NOTIFY), which no stamp
        # file shows: a lookup that ran across one is not kept.
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, name: str, ref: str) -> ModelVersion | None:
        if self.max_age <= 0:
            return None
        current = self.stamp.read()
        if current is None:  # the stamp cannot be read: nothing cached is trusted
            return None
        with self._lock:
            if current != self._seen:
                self._entries.clear()
                self._seen = current
                return None
            entry = self._entries.get((name, ref))
            if entry is None:
                return None
            version, stored = entry
            age = self.clock() - stored
            if age > self.max_age:
                del self._entries[(name, ref)]
                self._refreshing.discard((name, ref))
                return None
            # The renewal to ask for, if any: this read is past half the age and none runs.
            refresh = (
                self.refresh
                if age > self.max_age * REFRESH_AFTER and (name, ref) not in self._refreshing
                else None
            )
            if refresh is not None:
                self._refreshing.add((name, ref))
        if refresh is not None:
            refresh(name, ref)
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

    def before_lookup(self) -> tuple[Stamp, int]:
        """The stamp to file a lookup's result under: read *before* the query, so that a write
        committed during the query makes the result stale rather than lost."""
        return self.stamp.read(), self._generation

    def put(self, name: str, ref: str, version: ModelVersion, token: tuple[Stamp, int]) -> None:
        stamp, generation = token
        if self.max_age <= 0 or stamp is None:
            return
        with self._lock:
            if generation != self._generation:
                return  # another replica wrote during the lookup: its answer may be stale
            if stamp != self._seen:
                self._entries.clear()
                self._seen = stamp
            self._entries[(name, ref)] = (version, self.clock())
            self._refreshing.discard((name, ref))
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """Another replica changed the registry (or may have: notices were lost): forget every
        resolution, and any lookup now running."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def changed(self) -> None:
        """Called after every committed registry write; never raises, since the write is done:
        a stamp that cannot be rewritten only leaves other processes on ``max_age``."""
        with self._lock:
            self._entries.clear()
        try:
            self.stamp.bump()
        except OSError as exc:
            log.warning("registry stamp %s not rewritten (%s)", self.stamp.path, exc)
