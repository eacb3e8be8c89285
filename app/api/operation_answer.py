"""operation_answer: an inference operation's answer written as JSON, or as ``.npy`` when the
client's ``Accept`` prefers it."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from app.api.binary import npy_response, wants_npy
from app.api.responses import render_json

Headers = list[tuple[bytes, bytes]]
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


def operation_answer(
    row_fields: tuple[str, ...], result: dict[str, Any], accept: str | None
) -> Response:
    """``result`` as ``.npy`` (its ``row_fields``; the rest in a header) when ``accept``
    prefers it, else as JSON."""
    if accept and wants_npy(accept):
        return npy_response(row_fields, result)
    return AnswerResponse(render_json(result), JSON_HEADERS)


class AnswerResponse(Response):
    """A 200 of a body and its content headers, with nothing else to work out."""

    def __init__(self, body: bytes, headers: Headers) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
