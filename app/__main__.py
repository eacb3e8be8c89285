"""Command line: ``python -m app`` serves; ``python -m app migrate`` only applies migrations."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from app.registry.database import create_database_engine, upgrade_database
from app.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description="Lloyd")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "migrate":
        engine = create_database_engine(settings.database_url)
        upgrade_database(engine)
        engine.dispose()
        logging.getLogger("app").info("migrations applied")
        return
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
