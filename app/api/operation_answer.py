"""operation_answer: an inference operation's answer written as JSON, or as ``.npy`` when the
client's ``Accept`` prefers it: its body and its headers, for the route to send."""

from __future__ import annotations

from typing import Any

from app.api.binary import npy_response, wants_npy
from app.api.responses import render_json

Headers = list[tuple[bytes, bytes]]
JSON_TYPE = (b"content-type", b"application/json")


def operation_answer(
    row_fields: tuple[str, ...], result: dict[str, Any], accept: str | None
) -> tuple[bytes | memoryview, Headers]:
    """``result`` as ``.npy`` (its ``row_fields``; the rest in a header) when ``accept``
    prefers it, else as JSON; with its content type and length."""
    if accept and wants_npy(accept):
        response = npy_response(row_fields, result)
        return response.body, response.raw_headers
    body = render_json(result)
    return body, [JSON_TYPE, (b"content-length", str(len(body)).encode())]
