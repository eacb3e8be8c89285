"""Request ids: the client's ``X-Request-ID`` when it is a sane one, else a new one (set for
each request by ``app.api.edge``); and the one 500 problem, which tells the client to quote it."""

from __future__ import annotations

import itertools
import os
import re

from starlette.responses import Response

from app.api.responses import problem

HEADER = b"x-request-id"
# A client's id is kept only when it cannot forge log lines or headers.
_SAFE = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")


# New ids: a random prefix per process (unique across processes and restarts) and a counter,
# a fraction of the cost of 16 random bytes per request.
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def request_id_from(given: bytes | None) -> str:
    """The request's id: the client's ``X-Request-ID`` (its first value, if any) when it is a
    sane one, else a new one."""
    if given is not None and _SAFE.match(given):
        return given.decode()
    return f"{_PREFIX}{next(_COUNTER):016x}"


def internal_error() -> Response:
    return problem(
        500,
        "internal_error",
        "Internal server error",
        "an unexpected error occurred; quote the X-Request-ID header when reporting it",
        logged=True,
    )
