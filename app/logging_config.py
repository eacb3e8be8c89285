"""Logging: every record carries the request id of the request it was written for; text or JSON
lines by configuration."""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime

import orjson

# The id of the request being served (set by app.api.request_id), "-" outside a request.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``%(request_id)s``, and the JSON field)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and the exception's
    traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class LloydHandler(logging.StreamHandler):
    """The handler ``configure_logging`` installs (told apart from any other, which it keeps:
    a test's log capture, say)."""


def configure_logging(level: str, log_format: str) -> None:
    """Root logging for the process (uvicorn's loggers included, which propagate to it). Called
    by the app factory, so that every way of starting the app (``python -m app``, bare
    ``uvicorn --factory``, each of uvicorn's or gunicorn's worker processes) logs alike; calling
    it again replaces what it installed before."""
    handler = LloydHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, LloydHandler)]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # uvicorn formats every request's access line (client address, quoted path) whenever its
    # access logger has a handler in reach, before the logger's level is asked: at a level that
    # drops those lines (they are INFO), it has none (measured: 5-10 us a 1-row request).
    logging.getLogger("uvicorn.access").propagate = root.isEnabledFor(logging.INFO)
