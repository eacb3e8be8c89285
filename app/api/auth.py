"""Authentication: the dependencies that require an API key with the ``read`` or ``write`` scope.

With no key configured every dependency lets the request through (the service is open, and
says so at start-up). Routers declare what they need; nothing else in the code checks keys.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.schemas import Problem
from app.api_keys import ApiKey
from app.errors import Forbidden, Unauthorized

# Documents the Bearer scheme in OpenAPI (the Authorize button of /docs); errors are ours.
bearer = HTTPBearer(
    auto_error=False,
    description="An API key, when the service has keys configured (LLOYD_API_KEYS).",
)


def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
    ring = request.app.state.settings.key_ring
    if credentials is None:
        raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    key = ring.authenticate(credentials.credentials)
    if key is None:
        raise Unauthorized("the API key is not valid")
    request.state.key_id = key.key_id
    return key


def require(scope: str):
    """A dependency that lets a request through when keys are off, or when it carries a valid
    key holding ``scope``: 401 without a (valid) key, 403 with a key lacking the scope. Async,
    so that it costs no hop to the thread pool: it only hashes a few bytes."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if not request.app.state.settings.key_ring:
            return
        key = _authenticate(request, credentials)
        if scope not in key.scopes:
            raise Forbidden(
                f"the API key {key.key_id} lacks the {scope!r} scope this endpoint needs",
                extra={"required_scope": scope, "key_scopes": sorted(key.scopes)},
            )

    check.__name__ = f"require_{scope}"
    return check


async def require_any_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Any valid key, whatever its scopes (``/metrics`` when LLOYD_METRICS_REQUIRE_KEY is on)."""
    settings = request.app.state.settings
    if settings.metrics_require_key and settings.key_ring:
        _authenticate(request, credentials)


READ = Depends(require("read"))
WRITE = Depends(require("write"))
ANY_KEY = Depends(require_any_key)

AUTH_ERRORS: dict[int | str, dict] = {
    401: {"model": Problem, "description": "No API key, or not a valid one (keys configured)."},
    403: {"model": Problem, "description": "The API key lacks the scope this endpoint needs."},
}
