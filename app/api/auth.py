"""Authentication: the dependencies that require an API key with the ``read`` or ``write`` scope.

With no key configured every dependency lets the request through (the service is open, and
says so at start-up). Routers declare what they need; nothing else in the code checks keys.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.responses import problem
from app.api.schemas import Problem
from app.api_keys import ApiKey, KeyRing
from app.errors import Forbidden, Unauthorized

# Documents the Bearer scheme in OpenAPI (the Authorize button of /docs); errors are ours.
BEARER_SCHEME = "HTTPBearer"
bearer = HTTPBearer(
    scheme_name=BEARER_SCHEME,
    auto_error=False,
    description="An API key, when the service has keys configured (LLOYD_API_KEYS).",
)


def presented_key(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (the scheme in any case)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _authenticate(ring: KeyRing, header: str | None) -> ApiKey:
    token = presented_key(header)
    if token is None:
        raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    key = ring.authenticate(token)
    if key is None:
        raise Unauthorized("the API key is not valid")
    return key


def authorize(request: Request, scope: str | None) -> None:
    """Nothing when keys are off, or the request carries a valid key holding ``scope`` (any
    valid key when ``scope`` is None); else 401 without a (valid) key, 403 without the scope.
    The one check of the service: dependencies below and the inference routes call it."""
    key = request.scope.get("state", {}).get("api_key")  # set by Authentication
    if key is None:
        ring = request.app.state.key_ring
        if not ring:
            return
        key = _authenticate(ring, request.headers.get("authorization"))
    if scope is not None and scope not in key.scopes:
        raise Forbidden(
            f"the API key {key.key_id} lacks the {scope!r} scope this endpoint needs",
            extra={"required_scope": scope, "key_scopes": sorted(key.scopes)},
        )


def require(scope: str):
    """A dependency running ``authorize(request, scope)``. Async, so that it costs no hop to
    the thread pool; ``bearer`` only documents the scheme in OpenAPI."""

    async def check(
        request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> None:
        authorize(request, scope)

    check.__name__ = f"require_{scope}"
    return check


async def require_any_key(
    request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Any valid key, whatever its scopes (``/metrics`` when LLOYD_METRICS_REQUIRE_KEY is on)."""
    if request.app.state.settings.metrics_require_key:
        authorize(request, None)


READ = Depends(require("read"))
WRITE = Depends(require("write"))
ANY_KEY = Depends(require_any_key)

AUTH_ERRORS: dict[int | str, dict] = {
    401: {"model": Problem, "description": "No API key, or not a valid one (keys configured)."},
    403: {"model": Problem, "description": "The API key lacks the scope this endpoint needs."},
}


class Authentication:
    """Refuses a ``/v1`` request without a valid key (401) before anything reads its body:
    a stranger's request is never parsed, whatever it holds. Scopes are checked later, by the
    routes (``require``, ``authorize``), which find the key here."""

    def __init__(self, app: ASGIApp, ring: KeyRing) -> None:
        self.app = app
        self.ring = ring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.ring and scope["path"].startswith("/v1/"):
            header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            try:
                key = _authenticate(self.ring, header.decode("latin-1") if header else None)
            except Unauthorized as exc:
                refusal = problem(exc.status, exc.code, exc.title, exc.detail, headers=exc.headers)
                await refusal(scope, receive, send)
                return
            scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)
