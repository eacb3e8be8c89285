"""answer_operation: an inference operation run on a parsed body, its answer written as JSON or
``.npy``. The one place both the inference routes and the inference front produce an answer."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from app.api.binary import npy_response, wants_npy
from app.api.bodies import ParsedBody
from app.api.responses import render_json
from app.registry.records import ModelVersion
from app.services import inference

Headers = list[tuple[bytes, bytes]]
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


async def answer_operation(
    *, state: Any, version: ModelVersion, operation: str, parsed: ParsedBody, accept: str | None
) -> tuple[bytes | memoryview, Headers]:
    """The answer's body and content headers (no length): ``.npy`` when ``accept`` prefers
    it, else JSON. ``state``: the app's, with its registry and settings."""
    result = await inference.perform(
        registry=state.registry,
        version=version,
        operation=operation,
        body=parsed.fields,
        rows=parsed.rows,
        rows_at=parsed.rows_at,
        settings=state.settings,
    )
    if accept and wants_npy(accept):
        response = npy_response(operation, result)
        # The buffer the array was written into, as it is: a copy would be one more answer held.
        return response.body, [
            (key, value) for key, value in response.raw_headers if key != b"content-length"
        ]
    return render_json(result), JSON_HEADERS


class AnswerResponse(Response):
    """A 200 of an answer's body and content headers, as ``answer_operation`` wrote them."""

    def __init__(self, body: bytes | memoryview, headers: Headers) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
