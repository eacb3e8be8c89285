"""Authentication: what each route requires of the API key, declared once per route and checked
once, by the route class every router uses (``GuardedRoute``).

With no key configured every route lets the request through (the service is open, and says so
at start-up). Routes declare what they need (``READ``, ``WRITE``); a ``/v1`` route that declares
nothing still needs a valid key.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

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


@dataclass(frozen=True)
class Requirement:
    """What a route needs of the request's API key: ``scope`` (any valid key when None), and
    only while the setting ``when`` is on, if one is named. A route declares it as a dependency
    (``READ``, ``WRITE``, ``ANY_KEY``), which documents the Bearer scheme in OpenAPI;
    ``GuardedRoute`` enforces it, before anything reads the body."""

    scope: str | None
    when: str | None = None

    async def __call__(self, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        return None  # enforced by GuardedRoute, ahead of the body and the dependencies

    def check(self, request: Request) -> None:
        """``check_header`` of the request's (first) ``Authorization`` header."""
        header = next((v for k, v in request.scope["headers"] if k == b"authorization"), None)
        self.check_header(request.app.state, header)

    def check_header(self, state: Any, header: bytes | None) -> None:
        """Nothing when keys are off (or the setting ``when`` is), or ``header`` (the request's
        ``Authorization``) carries a valid key holding the scope; else 401 without a (valid)
        key, 403 without the scope. ``state``: the app's, with its key ring and settings."""
        if self.when is not None and not getattr(state.settings, self.when):
            return
        ring: KeyRing = state.key_ring
        if not ring:
            return
        key = _authenticate(ring, header.decode("latin-1") if header is not None else None)
        if self.scope is not None and self.scope not in key.scopes:
            raise Forbidden(
                f"the API key {key.key_id} lacks the {self.scope!r} scope this endpoint needs",
                extra={"required_scope": self.scope, "key_scopes": sorted(key.scopes)},
            )


READ = Depends(Requirement("read"))
WRITE = Depends(Requirement("write"))
# /metrics: any valid key, when LLOYD_METRICS_REQUIRE_KEY is on.
ANY_KEY = Depends(Requirement(None, when="metrics_require_key"))
# What a /v1 route that declares no scope needs: a valid key.
A_VALID_KEY = Requirement(None)


def requirement_of(route: APIRoute) -> Requirement | None:
    """The requirement a route declares (the last one, when a router adds its own), or
    ``A_VALID_KEY`` for a /v1 route that declares none; None for an open route."""
    declared = [d.dependency for d in route.dependencies if isinstance(d.dependency, Requirement)]
    if declared:
        return declared[-1]
    return A_VALID_KEY if route.path.startswith("/v1/") else None


class GuardedRoute(APIRoute):
    """The route class of every router: checks the route's ``Requirement`` before FastAPI's
    own handler (body, dependencies, the endpoint), so that a stranger's request is never
    parsed, whatever it holds, and no 404 tells it which names exist. (The operations' routes,
    a subclass that serves by itself, check the same ``Requirement`` first too.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        serve = super().get_route_handler()
        requirement = requirement_of(self)
        if requirement is None:
            return serve

        async def guarded(request: Request) -> Response:
            requirement.check(request)
            return await serve(request)

        return guarded


AUTH_ERRORS: dict[int | str, dict] = {
    401: {"model": Problem, "description": "No API key, or not a valid one (keys configured)."},
    403: {"model": Problem, "description": "The API key lacks the scope this endpoint needs."},
}
