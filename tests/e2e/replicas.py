"""Replicas for end-to-end tests: Lloyd server processes sharing one PostgreSQL database (made
for the test) and one S3 store (moto's server), started at once, restarted, killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_URL
from tests.e2e.server import free_port, group_alive, server_env, spawn, uvicorn_command

STARTUP_TIMEOUT_SECONDS = 60.0
POLL_TIMEOUT_SECONDS = 120.0
# Short leases, so that a killed replica's job is taken over within seconds.
LEASE = {"LLOYD_JOB_LEASE_SECONDS": "3", "LLOYD_JOB_HEARTBEAT_SECONDS": "0.5"}


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards."""
    name = f"lloyd_e2e_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield str(sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(False))
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@dataclass
class Replica:
    """One server process (its own session: it, its forkserver and workers are one group)."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    own_tmp: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        # A temporary folder of its own, as a container has: replicas on one host would share
        # the stamp file of a URL store there, and see each other's writes through it rather
        # than through PostgreSQL's notices, which are what replicas on other hosts rely on.
        # (Short: multiprocessing makes its forkserver's socket there, and a socket path has
        # at most 107 bytes.)
        self.own_tmp = tempfile.mkdtemp(prefix="lloyd-")
        env = self.env | {"TMPDIR": self.own_tmp}
        self.process = spawn(uvicorn_command(self.port), env, self.log)
        return self

    def wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.text()}")
            with suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name} not ready after {STARTUP_TIMEOUT_SECONDS} s:\n{self.text()}"
                )
            time.sleep(0.1)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops a pod; waits for a clean exit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) in (0, -signal.SIGTERM), self.text()

    def kill_api_process(self) -> None:
        """SIGKILL the API process only (not its group), as the OOM killer would."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def group_alive(self) -> bool:
        assert self.process is not None
        return group_alive(self.process.pid)

    def kill_group(self) -> None:
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        if self.own_tmp is not None:
            shutil.rmtree(self.own_tmp, ignore_errors=True)


def replica_env(
    database_url: str, store_url: str, s3_endpoint: str, **extra: str
) -> dict[str, str]:
    env = server_env(database_url, Path("unused"), **(LEASE | extra))
    return env | {
        "LLOYD_MODELS_STORE": store_url,
        "LLOYD_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }


@contextmanager
def replicas(env: dict[str, str], tmp_path: Path, names: list[str]) -> Iterator[list[Replica]]:
    """Replicas started at once (on a new database, they race to migrate it); every process
    group is SIGKILLed on the way out, and the logs printed if the body failed."""
    started = [Replica(name, dict(env), tmp_path / f"{name}.log").start() for name in names]
    try:
        for replica in started:
            replica.wait_healthy()
        yield started
    except BaseException:
        for replica in started:
            print(f"--- {replica.name} log:\n{replica.text()}")
        raise
    finally:
        for replica in started:
            replica.kill_group()


def poll_job(
    http: httpx.Client,
    job_id: str,
    statuses: tuple[str, ...],
    *,
    timeout: float = POLL_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


@contextmanager
def dask_cluster(tmp_path: Path, workers: int = 2) -> Iterator[str]:
    """A ``dask scheduler`` and ``dask worker`` processes, as the compose file runs them; the
    scheduler's address. Every process is killed on the way out."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLOYD_")}
    dask = str(Path(sys.executable).with_name("dask"))
    log = tmp_path / "dask.log"
    address = f"tcp://127.0.0.1:{port}"
    processes = [
        spawn(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env,
            log,
        )
    ]
    try:
        for _ in range(workers):
            processes.append(
                spawn(
                    [
                        dask,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    env,
                    log,
                )
            )
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
