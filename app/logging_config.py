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


# The loggers of the server that runs the app: uvicorn's (gunicorn's UvicornWorker logs through
# them too).
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Loggers whose INFO lines say nothing to an operator: alembic's, one per plugin it loads (only
# written where logging was configured before alembic was imported, as `python -m app` does).
QUIET = ("alembic.runtime.plugins",)


def configure_logging(level: str, log_format: str, *, access_log: bool = True) -> None:
    """Root logging for the process, and the server's loggers taken over. Called by the app
    factory, so that every way of starting the app (``python -m app serve``, bare
    ``uvicorn --factory``, each of uvicorn's or gunicorn's worker processes) logs alike; calling
    it again replaces what it installed before.

    Before it calls the factory, uvicorn has configured its own logging (its LOGGING_CONFIG:
    handlers on ``uvicorn`` and ``uvicorn.access``, which do not propagate), and gunicorn's
    UvicornWorker has put gunicorn's handlers on ``uvicorn.error`` and ``uvicorn.access``. Those
    handlers are dropped here, the loggers' levels too, and they propagate to the root's one
    handler: every line comes out once, in Lloyd's format, with its request id, at
    LLOYD_LOG_LEVEL. ``access_log``: uvicorn's line per request, at levels info and debug."""
    handler = LloydHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, LloydHandler)]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        # A new list: gunicorn's worker gave uvicorn's loggers gunicorn's own list of handlers,
        # which emptying in place would take from gunicorn's logger as well.
        logger.handlers = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    # uvicorn formats every request's access line (client address, quoted path) whenever its
    # access logger has a handler in reach, before the logger's level is asked: at a level that
    # drops those lines (they are INFO), or with access lines off, it has none (measured: 5-10
    # us a 1-row request).
    logging.getLogger("uvicorn.access").propagate = access_log and root.isEnabledFor(logging.INFO)
