"""Errors on the Open Inference Protocol's paths, in its shape: ``{"error": "<message>"}``.

The app's exception handlers (``app.api.problems``) answer every error, at the edge, once; on a
path of the protocol (``/v2`` and below: a route's error, Edge's body limit, an unknown path or
method) they write it here instead of as a problem document. The status stays the one the error
carries (401, 403, 404, 409, 413, ...), except that the protocol knows no 422: an invalid value
is its 400 ("typically 400" for every failed request, in its words)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from app.errors import LloydError

log = logging.getLogger("app.errors")

PREFIX = "/v2"


def on_protocol_path(path: str) -> bool:
    """Whether ``path`` (an app's route path) is the protocol's: ``/v2`` or below it."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def for_the_protocol(scope: Scope) -> bool:
    """Whether a request is on the protocol's paths (its path within the app: after any
    ``root_path`` the server is mounted under)."""
    path, root = scope["path"], scope.get("root_path", "")
    return on_protocol_path(path[len(root) :] if root and path.startswith(root) else path)


def _pointer(loc: Sequence[Any]) -> str:
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _located(detail: str, errors: list[dict[str, Any]] | None) -> str:
    """``detail``, with where the bad value is (a JSON pointer into the request) when it names
    one place."""
    if not errors or len(errors) != 1 or "loc" not in errors[0]:
        return detail
    loc = list(errors[0]["loc"])
    where = _pointer(loc) if loc and loc[0] == "body" else ".".join(map(str, loc))
    return f"{detail} (at {where})" if where else detail


def _described(exc: Exception) -> tuple[int, str, str, Mapping[str, str] | None]:
    """The status, stable code, message and headers of an error the app's handlers take."""
    if isinstance(exc, LloydError):
        return exc.status, exc.code, _located(exc.detail, exc.errors), exc.headers
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = _pointer(first.get("loc", ())) or "the request"
        return 400, "validation_error", f"{where}: {first['msg']}{more}", None
    if isinstance(exc, HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint of the Open Inference Protocol; see /docs"
        return exc.status_code, f"http_{exc.status_code}", detail, exc.headers
    return 500, "internal_error", "an unexpected error occurred", None


def protocol_error(exc: Exception) -> Response:
    """``exc`` answered in the protocol's error shape (logged once, as every problem is)."""
    status, code, message, headers = _described(exc)
    status = 400 if status == 422 else status
    log.log(logging.ERROR if status >= 500 else logging.INFO, "%d %s: %s", status, code, message)
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
