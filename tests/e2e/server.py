"""A real Lloyd server in a subprocess for end-to-end tests: a free port, its environment, a
start that waits for /healthz, and SIGKILL of its whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(database_url: str, store: Path, **extra: str) -> dict[str, str]:
    """This process's environment without its ``LLOYD_*`` variables, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLOYD_")}
    return env | {
        "LLOYD_DATABASE_URL": database_url,
        "LLOYD_MODELS_STORE": str(store),
        "LLOYD_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def uvicorn_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still there (zombies waiting to be reaped aside)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the server's process group (server, forkserver, workers) and reap the server."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def spawn(
    command: list[str], env: dict[str, str], log: Path, *, stdin: int | None = None
) -> subprocess.Popen:
    """Start ``command`` in a session of its own (it, its forkserver and its workers share one
    process group, so that they can be killed together), its output appended to ``log``."""
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            env=env,
            cwd=REPO_ROOT,
            stdin=stdin,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextmanager
def serving(
    process: subprocess.Popen,
    port: int,
    log: Path,
    *,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> Iterator[str]:
    """Wait until the server ``process`` answers /healthz on ``port`` and yield its base URL.
    The server's log is printed if the body fails, and its whole process group is SIGKILLed on
    the way out, whatever happens."""
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            with suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after {startup_timeout} s:\n{log.read_text()}")
            time.sleep(0.1)
        try:
            yield base_url
        except BaseException:
            print(f"server log:\n{log.read_text()}")  # shown by pytest with the failure
            raise
    finally:
        kill_group(process)


@contextmanager
def running_process(
    command: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
    *,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start the server ``command`` and yield it and its base URL once /healthz answers; its
    whole process group is SIGKILLed on the way out."""
    process = spawn(command, env, log)
    with serving(process, port, log, startup_timeout=startup_timeout) as base_url:
        yield process, base_url


# Uvicorn serving the app factory, as ``uvicorn --factory`` and ``python -m app`` do, once its
# port arrives on stdin. Imports take seconds on a busy machine: a test that starts many servers
# starts each one ahead of need, and it answers within a second of being given its port.
_PRIMED = """
import sys
import uvicorn
import app.main
port = sys.stdin.readline().strip()
if port:
    uvicorn.run("app.main:create_app", factory=True, host="127.0.0.1", port=int(port))
"""


def primed_server(env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server process that has imported the app and waits for ``release``."""
    return spawn([sys.executable, "-c", _PRIMED], env, log, stdin=subprocess.PIPE)


def release(process: subprocess.Popen, port: int) -> None:
    """Tell a primed server its port: it runs the app's lifespan and serves."""
    assert process.stdin is not None
    process.stdin.write(f"{port}\n".encode())
    process.stdin.close()
