"""Edge: the one layer every HTTP request passes through before the router, and the only
middleware of the app (see ``LloydApp.build_middleware_stack``). For each request, once:

- its id: the client's ``X-Request-ID`` when it is a sane one, else a new one; visible to every
  log record and returned in the response's ``X-Request-ID``;
- its body limit: a declared ``Content-Length`` over LLOYD_MAX_BODY_BYTES is refused with 413
  before anything reads the body, and a body that grows past it as it arrives stops there;
- its metrics: counted and timed by route template (never by raw path: bounded labels);
- the last resort: an exception no handler answered becomes one 500 problem, logged once
  with its traceback and the id. Every other error is answered by the app's exception
  handlers (``app.api.problems``), inside.
"""

from __future__ import annotations

import logging
import time

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.request_id import HEADER, internal_error, request_id_of
from app.api.responses import problem
from app.logging_config import request_id
from app.observability import ServiceMetrics

log = logging.getLogger("app.errors")


class BodyTooLarge(HTTPException):
    """Raised by the receive channel once a body passes the limit. An HTTPException, so that
    FastAPI's body reading passes it on, and the exception handlers answer it (413)."""


class Edge:
    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.too_large = (
            f"the request body is over {max_body_bytes} bytes (LLOYD_MAX_BODY_BYTES); "
            "split the batch into several requests"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        value = request_id_of(scope)
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
            if self._declared_too_large(scope):
                await self._refuse(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        except ClientDisconnect:
            # The client left before its body arrived: nobody to answer, and no server fault.
            log.info("client disconnected during %s %s", scope["method"], scope["path"])
        except BodyTooLarge:  # raised where no handler was in reach
            if status:
                raise
            await self._refuse(scope, receive, send_with_id)
        except Exception:
            log.exception("500 internal_error on %s %s", scope["method"], scope["path"])
            if status:
                raise  # too late for a problem document; the server closes the connection
            await internal_error()(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.record(
                template, scope["method"], status or 500, time.perf_counter() - began
            )
            request_id.reset(token)

    def _declared_too_large(self, scope: Scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"content-length":
                return value.isdigit() and int(value) > self.max_body_bytes
        return False

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = problem(413, "payload_too_large", "Payload too large", self.too_large)
        await refusal(scope, receive, send)

    def _limited(self, receive: Receive) -> Receive:
        """``receive``, raising ``BodyTooLarge`` once the body passes the limit."""
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
