"""Fixtures of the client's tests: the real app served by uvicorn over real HTTP, in a thread of
the test process, on a temporary SQLite file and models store; one open server and one with
API keys, each shared by a module's tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from app.api_keys import hash_key
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_settings
from tests.e2e.server import free_port

STARTUP_TIMEOUT_SECONDS = 60.0
READ_KEY, WRITE_KEY = "client-reader-1", "client-writer-2"


class ThreadedServer:
    """Uvicorn serving ``create_app(settings)`` on 127.0.0.1:``port`` in a daemon thread:
    ``start`` returns once it listens (after ``delay`` seconds, if given, before it starts),
    ``stop`` once its lifespan (job runner, worker processes, database) has shut down."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            loop="asyncio",
            ws="none",  # no websockets import (its deprecation warnings are errors here)
            log_config=None,  # the app configures logging itself
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def _serve(self, delay: float) -> None:
        try:
            time.sleep(delay)
            self.server.run()
        except BaseException as exc:  # shown by wait_started and stop
            self.failure = exc

    def start(self, *, delay: float = 0.0, wait: bool = True) -> ThreadedServer:
        self.thread = threading.Thread(target=self._serve, args=(delay,), daemon=True)
        self.thread.start()
        if wait:
            self.wait_started()
        return self

    def wait_started(self) -> None:
        assert self.thread is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} ended: {self.failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} not started in time")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=60)
            assert not self.thread.is_alive(), "the server did not stop"
        if self.failure is not None:
            raise self.failure


@dataclass(frozen=True)
class Served:
    url: str
    settings: Settings


def serving(settings: Settings) -> Iterator[Served]:
    server = ThreadedServer(settings).start()
    try:
        yield Served(server.url, settings)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lloyd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An open server (no API keys), shared by the module's tests."""
    yield from serving(make_settings(tmp_path_factory.mktemp("lloyd")))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server with a ``read`` key and a ``read+write`` key, whose trainings always answer
    with their job (a sync limit of 0 s), which the client then follows."""
    keys = f"{hash_key(READ_KEY)}:read,{hash_key(WRITE_KEY)}:read+write"
    settings = make_settings(
        tmp_path_factory.mktemp("keyed"), api_keys=keys, sync_timeout_seconds=0.0
    )
    yield from serving(settings)


@pytest.fixture
def fresh_settings(tmp_path: Path) -> Settings:
    """Settings of a database and store of the test's own (servers it starts and stops)."""
    return make_settings(tmp_path)
