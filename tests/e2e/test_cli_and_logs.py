"""The command line and the logs, with real processes: ``python -m app serve`` (its flags, a busy
port, a bad setting: one line each), ``check`` passing and failing, ``migrate``, ``--help``
listing every setting; and the same JSON log lines, request ids included, once each, whether
the app runs under ``python -m app serve``, bare ``uvicorn --factory`` or gunicorn's
UvicornWorker."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import shown_default
from app.registry.artifacts import open_store
from app.registry.database import create_database_engine, migration_state, upgrade_database
from app.registry.store_identity import agree_on_store
from app.settings import Settings
from tests.e2e.server import REPO_ROOT, free_port, running_process, server_env, uvicorn_command

COMMAND_TIMEOUT_SECONDS = 60
JSON_KEYS = {"time", "level", "logger", "message", "request_id"}
# gunicorn's own lines (its master's, and its worker's before the app is loaded): its format.
GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")


def lloyd(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m app ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    """The failure's one line on standard error (and nothing else, no traceback anywhere)."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lloyd: "), lines
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh SQLite file and store, and no LLOYD_* variable of the test's own environment."""
    return server_env(f"sqlite:///{tmp_path / 'db' / 'lloyd.db'}", tmp_path / "store")


# -- --help ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"]])
def test_help_lists_every_setting_with_its_default_and_description(
    env: dict[str, str], args: list[str]
) -> None:
    result = lloyd(*args, env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    flat = " ".join(text.split())
    for name, field in Settings.model_fields.items():
        line = f"LLOYD_{name.upper()}  (default: {shown_default(field)})"
        assert line in text, name
        assert " ".join((field.description or "").split()) in flat, name
    if args == ["--help"]:
        for command in ("serve", "migrate", "check", "new-key", "hash-key"):
            assert re.search(rf"^\s+{command}\s", text, re.MULTILINE), command
    else:
        for flag in ("--host", "--port", "--workers", "--reload"):
            assert flag in text


def test_defaults_are_shown_as_the_environment_writes_them() -> None:
    fields = Settings.model_fields
    assert shown_default(fields["database_url"]) == "sqlite:///./lloyd.db"
    assert shown_default(fields["migrate_on_startup"]) == "true"
    assert shown_default(fields["dask_scheduler"]) == "unset"
    assert shown_default(fields["api_keys"]) == "empty"
    assert shown_default(fields["max_concurrent_jobs"]).endswith(" on this machine")


# -- one line for what an operator can get wrong --------------------------------------------
@pytest.mark.parametrize(
    ("variables", "named"),
    [
        pytest.param({"LLOYD_DATABASE_URL": "mysql://db/lloyd"}, "LLOYD_DATABASE_URL", id="url"),
        pytest.param({"LLOYD_API_KEYS": "a-key-in-clear"}, "LLOYD_API_KEYS", id="api-key"),
        pytest.param({"LLOYD_API_KEYS_FILE": "/no/such/file"}, "LLOYD_API_KEYS_FILE", id="file"),
        pytest.param({"LLOYD_PORT": "eighty"}, "LLOYD_PORT", id="port"),
        pytest.param({"LLOYD_LOG_FORMAT": "xml"}, "LLOYD_LOG_FORMAT", id="log-format"),
        pytest.param(
            {"LLOYD_MIGRATE_ON_STARTUP": "perhaps"}, "LLOYD_MIGRATE_ON_STARTUP", id="bool"
        ),
        pytest.param(
            {"LLOYD_JOB_HEARTBEAT_SECONDS": "100"}, "LLOYD_JOB_HEARTBEAT_SECONDS", id="across"
        ),
    ],
)
@pytest.mark.parametrize("command", ["serve", "check", "migrate"])
def test_a_bad_setting_is_one_line_naming_it(
    env: dict[str, str], tmp_path: Path, variables: dict[str, str], named: str, command: str
) -> None:
    line = one_line_failure(lloyd(command, env=env | variables))
    assert named in line
    assert "a-key-in-clear" not in line  # a key pasted in clear is never echoed
    assert not (tmp_path / "db").exists()  # nothing was started


def test_a_bad_flag_is_one_line_naming_the_flag(env: dict[str, str]) -> None:
    line = one_line_failure(lloyd("serve", "--workers", "0", env=env))
    assert line.startswith("lloyd: --workers: ")


@pytest.mark.parametrize(
    "how", ["flag", "variable", "default-command"], ids=["--port", "LLOYD_PORT", "no-command"]
)
def test_a_busy_port_is_one_line_before_anything_starts(
    env: dict[str, str], tmp_path: Path, how: str
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        if how == "flag":
            result = lloyd("serve", "--port", str(port), env=env)
        elif how == "variable":
            result = lloyd("serve", env=env | {"LLOYD_PORT": str(port)})
        else:
            result = lloyd("--port", str(port), env=env)
    assert one_line_failure(result) == f"lloyd: port {port} on 127.0.0.1 is already in use"
    assert not (tmp_path / "db").exists()


# -- check and migrate -----------------------------------------------------------------------
def summary(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("lloyd: ok: settings valid; database "), lines
    return lines[0]


def test_check_passes_on_a_new_database_then_on_a_migrated_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    line = summary(lloyd("check", env=env))
    pending = migration_state(None).pending
    assert f"(a new file) with {pending} migration(s) to apply at start-up" in line
    assert f"models store {tmp_path / 'store'} writable" in line
    assert "jobs on local worker processes" in line
    assert not (tmp_path / "db").exists()  # check creates no database
    migrated = lloyd("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip().endswith("is at head")
    assert "at head (" in summary(lloyd("check", env=env))
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".tmp-")]


# (The S3 fixtures, of the session, come before ``env``: it holds the AWS variables they set,
# and botocore looks for no credentials elsewhere.)
def test_check_passes_on_an_s3_store(s3_endpoint: str, s3_store_url: str, env: dict[str, str]):
    variables = {"LLOYD_MODELS_STORE": s3_store_url, "LLOYD_S3_ENDPOINT_URL": s3_endpoint}
    line = summary(lloyd("check", env=env | variables))
    assert f"models store {s3_store_url} writable" in line


def test_check_fails_on_an_s3_bucket_that_is_not_there(s3_endpoint: str, env: dict[str, str]):
    variables = {"LLOYD_MODELS_STORE": "s3://no-such-bucket/lloyd"}
    line = one_line_failure(
        lloyd("check", env=env | variables | {"LLOYD_S3_ENDPOINT_URL": s3_endpoint})
    )
    assert "models store s3://no-such-bucket/lloyd is not writable" in line


def _store_under_a_file(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "a-file").write_text("not a folder")
    return {"LLOYD_MODELS_STORE": str(tmp_path / "a-file" / "store")}


def _closed_port(_: Path) -> dict[str, str]:
    return {"LLOYD_DATABASE_URL": f"postgresql://lloyd@127.0.0.1:{free_port()}/lloyd"}


def _no_migrations_on_start_up(_: Path) -> dict[str, str]:
    return {"LLOYD_MIGRATE_ON_STARTUP": "false"}


@pytest.mark.parametrize(
    ("break_it", "says"),
    [
        pytest.param(
            _store_under_a_file, "cannot be opened: [Errno 20] Not a directory", id="file"
        ),
        pytest.param(_closed_port, "is unreachable: connection failed", id="closed-port"),
        pytest.param(_no_migrations_on_start_up, "run `python -m app migrate`", id="no-migrate"),
    ],
)
def test_check_fails_with_the_reason_in_one_line(
    env: dict[str, str], tmp_path: Path, break_it: Callable[[Path], dict[str, str]], says: str
) -> None:
    line = one_line_failure(lloyd("check", env=env | break_it(tmp_path)))
    assert says in line


def test_check_fails_on_a_database_a_newer_lloyd_migrated(env: dict[str, str], tmp_path: Path):
    assert lloyd("migrate", env=env).returncode == 0
    with sqlite3.connect(tmp_path / "db" / "lloyd.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'feedfacecafe'")
    line = one_line_failure(lloyd("check", env=env))
    assert "revision feedfacecafe" in line
    assert "newer Lloyd" in line


def test_check_fails_on_a_store_that_is_not_the_databases(env: dict[str, str], tmp_path: Path):
    engine = create_database_engine(env["LLOYD_DATABASE_URL"])
    try:
        upgrade_database(engine)
        agree_on_store(engine, open_store(str(tmp_path / "store")))
    finally:
        engine.dispose()
    assert summary(lloyd("check", env=env))
    other = env | {"LLOYD_MODELS_STORE": str(tmp_path / "another-store")}
    line = one_line_failure(lloyd("check", env=other))
    assert "is not the store this database's versions live in" in line


def test_migrate_fails_in_one_line(env: dict[str, str]) -> None:
    line = one_line_failure(lloyd("migrate", env=env | _closed_port(Path())))
    assert "is unreachable" in line


# -- API keys ----------------------------------------------------------------------------------
def test_new_key_and_hash_key(env: dict[str, str]) -> None:
    made = lloyd("new-key", "--scopes", "read", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("key:", 1)[1].split()[0]
    entry = made.stdout.split("entry:", 1)[1].split()[0]
    assert entry.endswith(":read")
    hashed = lloyd("hash-key", "--scopes", "read", env=env, stdin=f"{key}\n")
    assert hashed.stdout.strip() == entry
    line = one_line_failure(lloyd("new-key", "--scopes", "admin", env=env))
    assert "scopes must be" in line


# -- the same log lines under every server ---------------------------------------------------
def _gunicorn(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--no-control-socket",  # (else one socket in the home folder for every gunicorn)
        "app.main:create_app()",
    ]


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "python -m app serve": lambda port: [sys.executable, "-m", "app", "serve", "--port", str(port)],
    "python -m app serve --workers 2": lambda port: [
        *(sys.executable, "-m", "app", "serve", "--workers", "2", "--port", str(port))
    ],
    "python -m app serve --reload": lambda port: [
        *(sys.executable, "-m", "app", "serve", "--reload", "--port", str(port))
    ],
    "uvicorn --factory app.main:create_app": uvicorn_command,
    "gunicorn -k uvicorn.workers.UvicornWorker": _gunicorn,
}


def _logged(log: Path, request_id: str, count: int) -> list[dict[str, Any]]:
    """The log's JSON lines of ``request_id``, once ``count`` of them have been written."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        found = [line for line in lines if line.get("request_id") == request_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("server", list(SERVERS))
def test_every_server_writes_the_same_json_lines_with_request_ids_once(
    tmp_path: Path, server: str
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = server_env(
        f"sqlite:///{tmp_path / 'lloyd.db'}", tmp_path / "store", LLOYD_LOG_FORMAT="json"
    )
    failing, healthy = f"e2e-{uuid.uuid4().hex}", f"e2e-{uuid.uuid4().hex}"
    with running_process(SERVERS[server](port), env, port, log, startup_timeout=60) as (_, url):
        missing = httpx.post(
            f"{url}/v1/models/nope/predict",
            json={"instances": [[1.0]]},
            headers={"X-Request-ID": failing},
        )
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == failing
        health = httpx.get(f"{url}/healthz", headers={"X-Request-ID": healthy})
        assert health.status_code == 200
        error_lines = _logged(log, failing, 2)
        health_lines = _logged(log, healthy, 1)
        text = log.read_text()
    shapes = [
        (line["logger"], line["level"], re.sub(r":\d+ - ", ":PORT - ", line["message"]))
        for line in error_lines
    ]
    assert shapes == [
        ("app.errors", "info", "404 model_not_found: no model named 'nope'"),
        ("uvicorn.access", "info", '127.0.0.1:PORT - "POST /v1/models/nope/predict HTTP/1.1" 404'),
    ], text
    assert [(line["logger"], line["message"].split(" - ", 1)[1]) for line in health_lines] == [
        ("uvicorn.access", '"GET /healthz HTTP/1.1" 200')
    ], text
    for line in [*error_lines, *health_lines]:
        assert set(line) == JSON_KEYS, line
    # Once: no other handler wrote these requests' lines in another format.
    assert text.count(failing) == 2, text
    assert text.count(healthy) == 1, text
    for line in text.splitlines():
        if line.startswith("{"):
            assert set(json.loads(line)) <= JSON_KEYS | {"exception"}, line
        else:
            assert server.startswith("gunicorn") and GUNICORN_LINE.match(line), line
