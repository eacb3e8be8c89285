"""Command line: ``python -m app`` serves; ``migrate`` only applies migrations; ``new-key`` and
``hash-key`` make API key entries for LLOYD_API_KEYS."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from app.api_keys import hash_key, new_key, parse_api_keys
from app.logging_config import configure_logging
from app.registry.database import create_database_engine, upgrade_database
from app.settings import get_settings

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description="Lloyd")
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "migrate", "new-key", "hash-key"]
    )
    parser.add_argument(
        "--scopes",
        default="read+write",
        help="new-key, hash-key: the key's scopes, joined by '+' (default read+write)",
    )
    args = parser.parse_args()
    if args.command in ("new-key", "hash-key"):
        _key_entry(args.command, args.scopes)
        return
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        engine = create_database_engine(settings.database_url)
        upgrade_database(engine)
        engine.dispose()
        logging.getLogger("app").info("migrations applied")
        return
    # Before the app (and numpy with its BLAS and OpenMP runtimes) is imported: OpenMP reads its
    # thread count per thread from the environment, so a limit set later in one thread would
    # not reach the thread pool's.
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(settings.serving_threads))
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to ours (request ids, JSON lines)
        # uvicorn formats an access line's fields on every request, even when its level is off.
        access_log=settings.log_level in ("debug", "info"),
    )


def _key_entry(command: str, scopes: str) -> None:
    """``new-key`` prints a random key (give it to the client) and its entry (give it to the
    service); ``hash-key`` reads a key from standard input and prints its entry."""
    key = new_key() if command == "new-key" else sys.stdin.readline().strip()
    if not key:
        sys.exit("hash-key: give the key on standard input")
    entry = f"{hash_key(key)}:{scopes}"
    try:
        parse_api_keys(entry)  # refuse unknown scopes here rather than at the service's start-up
    except ValueError as exc:
        sys.exit(f"{command}: {exc}")
    if command == "new-key":
        print(f"key:   {key}\nentry: {entry}")
    else:
        print(entry)


if __name__ == "__main__":
    main()
