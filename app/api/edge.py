"""Edge: the one layer every HTTP request passes through before the router, and the only
middleware of the app (see ``LloydApp.build_middleware_stack``). For each request, once:

- its id: the client's ``X-Request-ID`` when it is a sane one, else a new one; visible to every
  log record and returned in the response's ``X-Request-ID``;
- its body limit: a declared ``Content-Length`` over LLOYD_MAX_BODY_BYTES is refused with 413
  before anything reads the body, and a body that grows past it as it arrives stops there;
- its metrics: counted and timed by route template (never by raw path: bounded labels);
- its errors: an exception raised anywhere inside is answered here, once, by the app's
  exception handler for its class (``app.api.problems``: a problem document); one no handler
  takes becomes the 500 problem, logged once with its traceback and the id.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.request_id import HEADER, internal_error, request_id_from
from app.logging_config import request_id
from app.observability import ServiceMetrics

log = logging.getLogger("app.errors")

# An exception handler as Starlette registers them: (request, exception) -> a response, or an
# awaitable of one.
Handler = Callable[[Request, Any], Any]


class BodyTooLarge(HTTPException):
    """Raised by the receive channel once a body passes the limit. An HTTPException, so that
    FastAPI's body reading passes it on, and its handler answers it (413)."""


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        handlers: Mapping[Any, Handler],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.handlers = dict(handlers)
        self.too_large = (
            f"the request body is over {max_body_bytes} bytes (LLOYD_MAX_BODY_BYTES); "
            "split the batch into several requests"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        given_id, length = _id_and_length(scope["headers"])
        value = request_id_from(given_id)
        token = request_id.set(value)
        id_header = (HEADER, value.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            if length is not None and length > self.max_body_bytes:
                await self._refuse(scope, receive, send_with_id)
            elif length is not None:  # the server delivers no more than the declared length
                await self.app(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        except ClientDisconnect:
            # The client left before its body arrived: nobody to answer, and no server fault.
            log.info("client disconnected during %s %s", scope["method"], scope["path"])
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                log.exception("500 internal_error on %s %s", scope["method"], scope["path"])
            if status:
                raise  # too late for a problem document; the server closes the connection
            await (await self._answer(handler, scope, exc))(scope, receive, send_with_id)
            exc.__traceback__ = None  # an exception raised again must not grow a traceback
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.record(
                template, scope["method"], status or 500, time.perf_counter() - began
            )
            request_id.reset(token)

    @staticmethod
    async def _answer(handler: Handler | None, scope: Scope, exc: Exception) -> ASGIApp:
        if handler is None:
            return internal_error()
        answer = handler(Request(scope), exc)
        return await answer if inspect.isawaitable(answer) else answer

    def _handler_for(self, exc: Exception) -> Handler | None:
        """The handler of the closest class of ``exc`` that has one, as Starlette looks it up."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Answered as every error is, by its handler (the protocol's shape on its paths).
        refusal = BodyTooLarge(413, self.too_large)
        handler = self._handler_for(refusal)
        await (await self._answer(handler, scope, refusal))(scope, receive, send)

    def _limited(self, receive: Receive) -> Receive:
        """``receive``, raising ``BodyTooLarge`` once a body of no declared length passes the
        limit."""
        received = 0
        limit = self.max_body_bytes
        detail = self.too_large

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(413, detail)
            return message

        return limited


def _id_and_length(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, int | None]:
    """The (first) ``X-Request-ID`` and the (first) declared ``Content-Length``, in one pass;
    None for an absent or unreadable length (the body is then counted as it arrives)."""
    given: bytes | None = None
    declared: bytes | None = None
    for key, value in headers:
        if key == b"content-length":
            declared = value if declared is None else declared
        elif key == HEADER and given is None:
            given = value
    return given, int(declared) if declared is not None and declared.isdigit() else None
