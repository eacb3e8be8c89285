"""RequestId: gives every request an id (the client's ``X-Request-ID`` when it is a sane one),
returns it in the response's ``X-Request-ID`` and makes it visible to every log record. It is
the outermost layer of the app, so it also answers an unexpected exception: one 500 problem,
logged once with its traceback and the id, which the response carries too."""

from __future__ import annotations

import itertools
import logging
import os
import re

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.responses import problem
from app.logging_config import request_id

log = logging.getLogger("app.errors")

HEADER = b"x-request-id"
# A client's id is kept only when it cannot forge log lines or headers.
_SAFE = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = request_id_of(scope)
        token = request_id.set(value)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, value.encode())]
            await send(message)

        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except ClientDisconnect:
            # The client left before its body arrived: nobody to answer, and no server fault.
            log.info("client disconnected during %s %s", scope["method"], scope["path"])
        except Exception:
            log.exception("500 internal_error on %s %s", scope["method"], scope["path"])
            if started:
                raise  # too late for a problem document; the server closes the connection
            await internal_error()(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


# New ids: a random prefix per process (unique across processes and restarts) and a counter,
# a fraction of the cost of 16 random bytes per request.
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def request_id_of(scope: Scope) -> str:
    """The request's id: the client's ``X-Request-ID`` when it is a sane one, else a new one."""
    return request_id_from(next((v for k, v in scope["headers"] if k == HEADER), None))


def request_id_from(given: bytes | None) -> str:
    """``request_id_of`` from the ``X-Request-ID`` header's (first) value, if any."""
    if given is not None and _SAFE.match(given):
        return given.decode()
    return f"{_PREFIX}{next(_COUNTER):016x}"


def internal_error():
    return problem(
        500,
        "internal_error",
        "Internal server error",
        "an unexpected error occurred; quote the X-Request-ID header when reporting it",
        logged=True,
    )
