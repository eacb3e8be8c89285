"""Responses written with orjson straight from numpy arrays, and RFC 9457 problem documents."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response

log = logging.getLogger("app.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class FastJSONResponse(Response):
    """JSON via orjson; numpy arrays and scalars are written without a Python list in between."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return render_json(content)


def render_json(content: Any) -> bytes:
    """``content`` as JSON, numpy arrays and scalars included."""
    return orjson.dumps(content, option=_OPTIONS)


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    logged: bool = False,
) -> Response:
    """An RFC 9457 problem response. Every one is logged here, once, with the request id
    (``logged``: the caller already logged it, with its traceback)."""
    if not logged:
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%d %s: %s",
            status,
            code,
            detail,
        )
    body: dict[str, Any] = {
        "type": f"urn:lloyd:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    if extra:
        body |= extra
    return Response(
        orjson.dumps(body, option=_OPTIONS, default=str),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )
