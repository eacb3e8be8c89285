"""InferenceFront: serves the common inference request in one step, ahead of the middleware stack.

A 1-row prediction costs a few microseconds; passing it through four middlewares, a router, a
``Request`` and a ``Response`` cost ten times that (measured in-process: 129 us a request for a
k-means ``predict`` against 16 us for a bare Starlette endpoint). This layer, ahead of the
whole app, takes a request the stack would answer with a 200 from the inference routes, and
does what the stack does for it with nothing in between: the request id, the key and its
``read`` scope, the body (small, of a declared length), the version from the resolution cache,
the rows from the JSON fast parser, the operation, the answer and its metrics, all through the
functions the stack uses.

It never answers anything else. Whenever it is not certain of a 200 (no or a bad key, a body
over 64 KiB or of unknown length, a ``.npy`` body, a version not yet resolved, rows the fast
parser declines, any error of the operation), it hands the request, with the body it has read,
to the stack, which answers as it always does: every error and its problem document, log line
and metric come from one place. A declined request therefore costs the stack's time plus what
was tried here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import presented_key
from app.api.bodies import fast_rows_body, is_json_media
from app.api.operation_answer import answer_operation
from app.api.request_id import HEADER as REQUEST_ID_HEADER
from app.api.request_id import request_id_from
from app.logging_config import request_id
from app.registry.model_registry import LATEST

# /v1/models/{name}/{operation} and /v1/models/{name}/versions/{version}/{operation}, as
# Starlette matches them (a path parameter is anything but '/').
_PATH = re.compile(r"^/v1/models/([^/]+)/(?:versions/([^/]+)/)?([a-z_]+)$")
# Larger bodies (or bodies of unknown length) go to the stack: their work dwarfs its cost, and
# it reads them into one buffer, held once rather than as chunks plus their join.
FRONT_MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class FrontOperation:
    """An operation the front may serve: its body model and its routes' templates (the
    metrics' labels)."""

    body_model: type[BaseModel]
    latest_template: str
    version_template: str


class InferenceFront:
    """The ASGI layer; ``app`` is what it hands every other request to."""

    def __init__(self, app: ASGIApp, operations: dict[str, FrontOperation]) -> None:
        self.app = app
        self.operations = operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        matched = _PATH.match(scope["path"])
        if matched is None or (operation := self.operations.get(matched.group(3))) is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope["app"].state
        # A header sent twice counts by its first value, as Starlette and the stack read it.
        headers = dict(reversed(scope["headers"]))
        # Read the body only when the stack would: a key with the read scope, JSON, in size.
        if not (
            _has_read_key(state.key_ring, headers.get(b"authorization"))
            and is_json_media(headers.get(b"content-type", b"").decode("latin-1"))
        ):
            await self.app(scope, receive, send)
            return
        limit = min(FRONT_MAX_BODY_BYTES, state.settings.max_body_bytes)
        declared = headers.get(b"content-length", b"")
        if not declared.isdigit() or int(declared) > limit:
            await self.app(scope, receive, send)
            return
        messages, raw = await _read_body(receive, limit)
        if raw is not None:
            value = request_id_from(headers.get(REQUEST_ID_HEADER))
            # Set across the answer's sending too: the server's access line is written then.
            token = request_id.set(value)
            try:
                answered = await self._send_answer(
                    state, matched, operation, raw, headers, value, send, started
                )
            finally:
                request_id.reset(token)
            if answered:
                return
        await self.app(scope, _replay(messages, receive), send)

    async def _send_answer(
        self,
        state: Any,
        matched: re.Match[str],
        operation: FrontOperation,
        raw: bytes,
        headers: dict[bytes, bytes],
        value: str,
        send: Send,
        started: float,
    ) -> bool:
        """Answer with a 200 and True, or False when the stack must answer."""
        answer = await self._answer(state, matched, operation, raw, headers)
        if answer is None:
            return False
        body, content_headers = answer
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *content_headers,
                    (b"content-length", str(len(body)).encode()),
                    (REQUEST_ID_HEADER, value.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        template = operation.version_template if matched[2] else operation.latest_template
        state.metrics.record(template, "POST", 200, time.perf_counter() - started)
        return True

    async def _answer(
        self,
        state: Any,
        matched: re.Match[str],
        operation: FrontOperation,
        raw: bytes,
        headers: dict[bytes, bytes],
    ) -> tuple[bytes | memoryview, list[tuple[bytes, bytes]]] | None:
        """The 200 answer's body and content headers, or None when the stack must answer."""
        name, ref, operation_name = matched.groups()
        version = state.registry.resolved(name, ref or LATEST)
        if version is None:
            return None
        parsed = fast_rows_body(operation.body_model, raw)
        if parsed is None:
            return None
        try:
            accept = headers.get(b"accept")
            return await answer_operation(
                state=state,
                version=version,
                operation=operation_name,
                parsed=parsed,
                accept=accept.decode("latin-1") if accept else None,
            )
        except Exception:  # the stack runs it again and answers with its own error
            return None


def _has_read_key(ring: Any, header: bytes | None) -> bool:
    """Whether the request may read: keys off, or a valid key with the ``read`` scope."""
    if not ring:
        return True
    token = presented_key(header.decode("latin-1")) if header else None
    key = ring.authenticate(token) if token else None
    return key is not None and "read" in key.scopes


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The messages read, and the whole body, or None when it is over ``limit`` or the client
    disconnected (the stack then answers, from the messages replayed)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None  # a disconnect: the stack handles it
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` giving back what the front read, then whatever is left."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
