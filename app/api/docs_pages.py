"""The documentation pages (/docs: Swagger UI, /redoc: ReDoc) and the assets they load, served by
Lloyd itself from the pinned fastapi-offline package: no request of theirs leaves for a CDN,
Google Fonts or any other host, so the docs work in a container without internet access."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

ASSETS_PACKAGE = "fastapi_offline"
ASSETS_PATH = "/static/docs"
# name -> media type: the whole of what is served under ASSETS_PATH.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Asset URLs carry the package's version (?v=), so a browser may keep an asset for a year and
# still fetch the new one after an upgrade.
CACHE_CONTROL = "public, max-age=31536000, immutable"
# What the pages may load, and from where: this origin only (the browser refuses anything else
# without sending a request: ReDoc's sidebar asks cdn.redoc.ly for its logo, which then hides).
# Scripts: the assets, and the page's own inline script by its hash. Styles: Swagger UI and
# ReDoc set inline ones. ReDoc's search runs in a worker made from a blob.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    # Swagger UI's standalone layout shows a badge drawn by validator.swagger.io (FastAPI's page
    # uses the base layout, which does not; a layout set in the app's swagger_ui_parameters
    # might): null turns it off.
    "validatorUrl": None,
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None where compressing gains nothing (a PNG)
    media_type: str
    etag: str


@cache
def load_asset(name: str) -> Asset:
    """An asset of the package's ``static`` folder, read (and compressed) once per process."""
    body = (files(ASSETS_PACKAGE) / "static" / name).read_bytes()
    media_type = ASSETS[name]
    gzipped = gzip.compress(body, mtime=0) if media_type.startswith("text/") else None
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    return Asset(body, gzipped, media_type, etag)


@cache
def assets_version() -> str:
    return version("fastapi-offline")


async def serve_asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in ASSETS:
        raise HTTPException(404, f"no documentation asset {name!r}")
    asset = await run_in_threadpool(load_asset, name)  # a file read, once: not on the loop
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=asset.media_type, headers=headers)


def with_policy(page: HTMLResponse) -> HTMLResponse:
    """``page`` with its Content-Security-Policy: its inline scripts allowed by their hashes."""
    hashes = (
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in INLINE_SCRIPT.findall(page.body)
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(
        scripts=" ".join(("'self'", *hashes))
    )
    return page


class DocsRoute(Route):
    """A GET route out of the document that names itself in the scope, as FastAPI's own routes
    do: Edge labels a request's metrics with ``scope["route"]``'s template, and FastAPI's router
    sets it for its routes only (a plain Starlette route would count as ``unmatched``)."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(path, endpoint, methods=["GET"], include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def install(app: FastAPI) -> None:
    """Serve /docs, /docs/oauth2-redirect, /redoc and their assets, open to anyone as
    /openapi.json is, and out of the document (the app is built with ``docs_url=None`` and
    ``redoc_url=None``, so that FastAPI's own pages, which load from a CDN, are not there)."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url
    stamp = assets_version()

    def asset_url(root: str, name: str) -> str:
        return f"{root}{ASSETS_PATH}/{name}?v={stamp}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset_url(root, "swagger-ui-bundle.js"),
            swagger_css_url=asset_url(root, "swagger-ui.css"),
            swagger_favicon_url=asset_url(root, "favicon.png"),
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS | (app.swagger_ui_parameters or {}),
        )
        return with_policy(page)

    async def oauth2_redirect(_: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset_url(root, "redoc.standalone.js"),
            redoc_favicon_url=asset_url(root, "favicon.png"),
            with_google_fonts=False,
        )
        return with_policy(page)

    routes = [
        DocsRoute("/docs", swagger_ui),
        DocsRoute("/redoc", redoc),
        # One template for every asset: one metrics label, whatever name a request asks for.
        DocsRoute(f"{ASSETS_PATH}/{{asset}}", serve_asset),
    ]
    if redirect_url:
        routes.append(DocsRoute(redirect_url, oauth2_redirect))
    app.router.routes.extend(routes)
