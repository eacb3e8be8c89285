"""Notifications: what one replica tells the others sharing its PostgreSQL database, through
LISTEN/NOTIFY (the registry changed; a job was queued or asked to cancel). On SQLite, whose
processes share one host and its stamp file, there are none.

A notice is sent inside the transaction that makes the change, so PostgreSQL delivers it when,
and only if, that transaction commits. Each replica listens on a connection of its own, in a
thread; when that connection is lost, notices may have been missed, so every subscriber is told
to forget what it may have missed once listening resumes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from app.registry.database import is_postgresql

log = logging.getLogger(__name__)

REGISTRY = "registry"
JOBS = "jobs"
RECONNECT_SECONDS = 1.0
LISTEN_TIMEOUT_SECONDS = 0.5


class Notifications:
    """Send and receive notices on ``topic`` channels of one installation (``namespace``: the
    store id, so that installations sharing a database server never hear each other)."""

    def __init__(self, engine: Engine, *, namespace: str) -> None:
        self.enabled = is_postgresql(engine)
        self._url = engine.url.set(drivername="postgresql")
        self._namespace = "".join(c for c in namespace.lower() if c.isalnum())[:32]
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}
        self._missed: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    def channel(self, topic: str) -> str:
        return f"lloyd_{self._namespace}_{topic}"

    def send(self, where: Session | Connection, topic: str, payload: str = "") -> None:
        """Announce ``topic`` when ``where``'s transaction commits (PostgreSQL only)."""
        if self.enabled:
            where.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": self.channel(topic), "payload": payload},
            )

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` (in the listener thread) for each notice on ``topic``."""
        self._subscribers.setdefault(topic, []).append(callback)

    def on_missed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever listening (re)starts: notices may have been missed."""
        self._missed.append(callback)

    def start(self) -> None:
        if not self.enabled or not self._subscribers:
            return
        self._thread = threading.Thread(
            target=self._listen_forever, name="lloyd-notifications", daemon=True
        )
        self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        """Whether the listener is connected (within ``timeout`` seconds); True when off."""
        return not self.enabled or self._thread is None or self._listening.wait(timeout)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- the listener thread -------------------------------------------------------------------
    def _listen_forever(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                conninfo = self._url.render_as_string(hide_password=False)
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    for topic in self._subscribers:
                        conn.execute(f'LISTEN "{self.channel(topic)}"')
                    self._listening.set()
                    self._tell(self._missed)
                    self._receive(conn)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                log.warning("listening for other replicas' notices failed (%s); retrying", exc)
            finally:
                self._listening.clear()
            self._stopping.wait(RECONNECT_SECONDS)

    def _receive(self, conn: Any) -> None:
        topics = {self.channel(topic): topic for topic in self._subscribers}
        while not self._stopping.is_set():
            for notice in conn.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
                topic = topics.get(notice.channel)
                for callback in self._subscribers.get(topic or "", []):
                    self._call(callback, notice.payload)

    @staticmethod
    def _call(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("a notification subscriber failed")

    def _tell(self, callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            self._call(callback)
