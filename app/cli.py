"""Lloyd's command line, ``python -m app COMMAND``: ``serve`` (the default), ``migrate``,
``check``, ``new-key``, ``hash-key``. Every failure an operator can cause (a setting that does
not validate, a busy port, an unreachable database) is one line on standard error, ``lloyd:``
first, and a non-zero exit; never a traceback."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from app.api_keys import hash_key, new_key, parse_api_keys
from app.logging_config import configure_logging
from app.settings import Settings

PROG = "python -m app"
FAILED = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# The flags of ``serve`` that set a setting (they override its variable).
SERVE_FLAGS = ("host", "port", "workers")
APP_FOLDER = Path(__file__).resolve().parent


class Failed(Exception):
    """A command that cannot go on; each argument is one line of its reason."""


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` asks for (``sys.argv[1:]`` by default); the exit status."""
    args = build_parser().parse_args(_with_default_command(sys.argv[1:] if argv is None else argv))
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except Failed as failure:
        for line in failure.args:
            print(f"lloyd: {line}", file=sys.stderr)
        return FAILED


def _with_default_command(argv: list[str]) -> list[str]:
    """``serve`` when no command is named (``python -m app``, ``python -m app --port 9000``)."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return ["serve", *argv]
    return argv


# -- the parser and its help -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    settings = settings_help()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Lloyd: clustering, mixtures and anomaly detectors over HTTP.",
        epilog=settings,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="serve the API (the default command); migrations run at start-up",
        description="Serve the API with uvicorn. The flags override their LLOYD_ variables.",
        epilog=settings,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_parser.add_argument("--host", help="address to listen on (LLOYD_HOST)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (LLOYD_PORT)")
    serve_parser.add_argument("--workers", type=int, help="worker processes (LLOYD_WORKERS)")
    serve_parser.add_argument(
        "--reload",
        action="store_true",
        help="restart on a change to the code under app/ (development; one process)",
    )
    serve_parser.set_defaults(run=serve)
    commands.add_parser("migrate", help="apply the database migrations, then exit").set_defaults(
        run=migrate
    )
    commands.add_parser(
        "check",
        help="check the settings, the database, its migrations and the models store; exit 0 "
        "with a one-line summary when all is well, else 1 with the reason",
    ).set_defaults(run=check)
    for name, what in (
        ("new-key", "print a new random API key and its LLOYD_API_KEYS entry"),
        ("hash-key", "read a key from standard input and print its LLOYD_API_KEYS entry"),
    ):
        key_parser = commands.add_parser(name, help=what)
        key_parser.add_argument(
            "--scopes",
            default="read+write",
            help="the key's scopes, joined by '+' (default read+write)",
        )
        key_parser.set_defaults(run=key_entry, command=name)
    return parser


def settings_help() -> str:
    """Every setting, its default and its description, from ``Settings`` itself."""
    lines = ["settings (environment variables, all optional):"]
    for name, field in Settings.model_fields.items():
        lines.append(f"  LLOYD_{name.upper()}  (default: {shown_default(field)})")
        lines += textwrap.wrap(
            field.description or "",
            width=88,
            initial_indent="      ",
            subsequent_indent="      ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def shown_default(field: FieldInfo) -> str:
    """A setting's default as an operator would write it in the environment."""
    if field.default_factory is not None:
        return f"{field.get_default(call_default_factory=True)} on this machine"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else "empty"


# -- settings ----------------------------------------------------------------------------------
def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment (``overrides``: from flags); ``Failed`` naming each
    variable (or flag) that does not validate, and why."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise Failed(*(_setting_error(error, overrides) for error in exc.errors())) from None
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise Failed(" ".join(str(exc).split())) from None


def _setting_error(error: Any, overrides: dict[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = error.get("loc") or ()
    if not loc:
        return message  # a check across settings: its message names them
    name = str(loc[0])
    where = f"--{name}" if name in overrides else f"LLOYD_{name.upper()}"
    return message if message.startswith(where) else f"{where}: {message}"


# -- serve -------------------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    overrides = {name: value for name in SERVE_FLAGS if (value := getattr(args, name)) is not None}
    settings = load_settings(**overrides)
    refuse_busy_port(settings.host, settings.port)
    # The app factory reads the environment in every worker process (and after each reload):
    # the flags reach it there.
    for name, value in overrides.items():
        os.environ[f"LLOYD_{name.upper()}"] = str(value)
    # Before the app (and numpy with its BLAS and OpenMP runtimes) is imported: OpenMP reads its
    # thread count per thread from the environment, so a limit set later in one thread would
    # not reach the thread pool's.
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(settings.serving_threads))
    configure_logging(settings.log_level, settings.log_format, access_log=settings.access_log)
    workers = settings.workers
    if args.reload and workers > 1:
        print(f"lloyd: --reload serves one process, not {workers}", file=sys.stderr)
        workers = 1
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        reload=args.reload,
        reload_dirs=[str(APP_FOLDER)] if args.reload else None,
        log_level=settings.log_level,
        log_config=None,  # the factory configures logging, in every worker process
        access_log=settings.access_log,
    )
    return 0


def refuse_busy_port(host: str, port: int) -> None:
    """``Failed`` when ``host:port`` cannot be listened on: said before anything starts (uvicorn
    binds only once the app has started, and answers a busy port with a traceback-free line
    after the whole start-up). The probe binds as uvicorn does (SO_REUSEADDR: a port whose
    last connections linger in TIME_WAIT is free) and lets go at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Failed(f"port {port} on {host} is already in use") from None
            raise Failed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


# -- migrate, check ----------------------------------------------------------------------------
def migrate(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, access_log=settings.access_log)
    from app.preflight import CheckFailed, one_line, open_database
    from app.registry.database import create_database_engine, upgrade_database

    try:
        engine, _ = open_database(settings)
    except CheckFailed as exc:
        raise Failed(str(exc)) from None
    if engine is None:  # a SQLite file to create
        engine = create_database_engine(settings.database_url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        upgrade_database(engine)
    except Exception as exc:  # the database went away, refused a statement, ...
        raise Failed(f"migrating database {shown} failed: {one_line(exc)}") from None
    finally:
        engine.dispose()
    print(f"lloyd: database {shown} is at head")
    return 0


def check(args: argparse.Namespace) -> int:
    settings = load_settings()
    from app.preflight import CheckFailed, run_checks

    try:
        summary = run_checks(settings)
    except CheckFailed as exc:
        raise Failed(str(exc)) from None
    print(f"lloyd: ok: settings valid; {summary}")
    return 0


# -- API keys ----------------------------------------------------------------------------------
def key_entry(args: argparse.Namespace) -> int:
    """``new-key`` prints a random key (give it to the client) and its entry (give it to the
    service); ``hash-key`` reads a key from standard input and prints its entry."""
    command, scopes = args.command, args.scopes
    key = new_key() if command == "new-key" else sys.stdin.readline().strip()
    if not key:
        raise Failed("hash-key: give the key on standard input")
    entry = f"{hash_key(key)}:{scopes}"
    try:
        parse_api_keys(entry)  # refuse unknown scopes here rather than at the service's start-up
    except ValueError as exc:
        raise Failed(f"{command}: {exc}") from None
    if command == "new-key":
        print(f"key:   {key}\nentry: {entry}")
    else:
        print(entry)
    return 0
