"""The documentation pages in a real headless browser (Debian's chromium, driven by Playwright)
against a real server, with every request to any other host aborted and recorded: /docs lists
every operation and runs a prediction ("Try it out"), /redoc renders and searches, and on a
server with keys the Authorize dialog takes a key. No request leaves for another host (the one
a page asks for, ReDoc's logo, its Content-Security-Policy refuses inside the browser).

Needs chromium (scripts/test installs it when missing). LLOYD_SKIP_BROWSER=1 skips these tests;
without it, a missing chromium fails them: CI must run them."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Request,
    Route,
    sync_playwright,
)

from app.api_keys import hash_key
from tests.e2e.server import free_port, running_process, server_env, uvicorn_command

CHROMIUM = os.environ.get("LLOYD_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
KEY = "docs-browser-key"
# The README's example session: k-means on two clusters of parts.
TRAINING = {
    "name": "press-3",
    "algorithm": "kmeans",
    "params": {"n_clusters": 2, "random_state": 0},
    "data": {
        "instances": [
            [0.1, 2.3], [0.2, 2.1], [0.15, 2.2], [0.12, 2.25], [0.18, 2.32], [0.09, 2.18],
            [5.1, 0.3], [5.0, 0.4], [5.2, 0.35], [5.05, 0.32], [4.95, 0.28], [5.12, 0.41],
        ]
    },
    "feature_names": ["temperature", "pressure"],
}  # fmt: skip
PREDICT = "predict (latest version)"
# ReDoc's sidebar shows Redocly's logo from their CDN (in its bundle, with no option to turn it
# off): the page's Content-Security-Policy refuses it, and the logo hides itself.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if os.environ.get("LLOYD_SKIP_BROWSER") == "1":
        pytest.skip("LLOYD_SKIP_BROWSER=1: the documentation's browser tests are skipped")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no chromium at {CHROMIUM} (LLOYD_TEST_CHROMIUM): `apt-get install -y chromium` "
            "(scripts/test does), or set LLOYD_SKIP_BROWSER=1 to skip these tests"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def start_server(tmp_path: Path, **env: str) -> Iterator[str]:
    """A real server (uvicorn, the app factory) with a model trained over HTTP; its base URL."""
    port = free_port()
    environment = server_env(f"sqlite:///{tmp_path / 'lloyd.db'}", tmp_path / "store", **env)
    command = uvicorn_command(port)
    with running_process(command, environment, port, tmp_path / "server.log") as (_, base_url):
        headers = {"Authorization": f"Bearer {KEY}"} if env else {}
        trained = httpx.post(f"{base_url}/v1/models", json=TRAINING, headers=headers, timeout=60)
        assert trained.status_code == 201, trained.text
        yield base_url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An open server (no API keys)."""
    yield from start_server(tmp_path_factory.mktemp("open"))


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose /v1 needs a key: KEY, with both scopes."""
    yield from start_server(
        tmp_path_factory.mktemp("keyed"), LLOYD_API_KEYS=f"{hash_key(KEY)}:read+write"
    )


@dataclass
class Offline:
    """A browser context's network, cut off from every host but the server's: each request to
    another host is aborted and recorded. Also recorded: requests the page's own policy (its
    Content-Security-Policy) refused, which never leave the browser, and the page's errors."""

    origin: str  # host:port
    aborted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # every request to another host, seen
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def elsewhere(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != self.origin

    def route(self, route: Route) -> None:
        if self.elsewhere(route.request.url):
            self.aborted.append(route.request.url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    def requested(self, request: Request) -> None:
        if self.elsewhere(request.url):
            self.foreign.append(request.url)

    def failed(self, request: Request) -> None:
        if self.elsewhere(request.url) and request.failure == "csp":
            self.refused.append(request.url)

    def watch(self, context: BrowserContext) -> None:
        context.route("**/*", self.route)
        context.on("request", self.requested)
        context.on("requestfailed", self.failed)

    def watch_page(self, page: Page) -> None:
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else 0)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def assert_nothing_left(
        self, *, refusable: frozenset[str] = frozenset(), errors: tuple[str, ...] = ()
    ) -> None:
        """No request reached for another host; none was even asked for but the ``refusable``
        ones, which the page's policy refused (they never left the browser); and the page raised
        nothing, and logged no error but those refusals and the expected ``errors``."""
        assert self.aborted == []
        assert sorted(self.foreign) == sorted(self.refused)
        assert set(self.refused) <= refusable
        assert self.page_errors == []
        unexplained = [
            text
            for text in self.console_errors
            if not any(url in text and "Content Security Policy" in text for url in self.refused)
            and not any(expected in text for expected in errors)
        ]
        assert unexplained == []


@pytest.fixture
def offline_page(
    browser: Browser, request: pytest.FixtureRequest
) -> Iterator[tuple[Page, Offline]]:
    """A fresh page (its own context: no cache, no credentials) of the server named by the
    test's ``base_url`` parameter fixture, offline but for it."""
    base_url: str = request.getfixturevalue(request.param)
    context = browser.new_context(base_url=base_url)
    offline = Offline(urlsplit(base_url).netloc)
    offline.watch(context)
    page = context.new_page()
    offline.watch_page(page)
    try:
        yield page, offline
    finally:
        context.close()


def operation(page: Page, summary: str) -> Locator:
    return page.locator(".opblock").filter(has=page.get_by_text(summary, exact=True))


def execute(block: Locator) -> tuple[str, str]:
    """Click Execute of an expanded operation in "Try it out": the status and body the page
    shows of that answer (not of an earlier one: it shows the answer's request id)."""
    with block.page.expect_response(lambda response: response.request.method == "POST") as sent:
        block.get_by_role("button", name="Execute").click()
    answer = block.locator(".live-responses-table .response")
    answer.get_by_text(sent.value.headers["x-request-id"]).wait_for()
    return (
        answer.locator(".response-col_status").inner_text().strip(),
        answer.locator(".response-col_description pre").first.inner_text(),
    )


def documented_operations(base_url: str) -> tuple[int, dict]:
    document = httpx.get(f"{base_url}/openapi.json").json()
    count = sum(len(operations) for operations in document["paths"].values())
    return count, document["components"]["schemas"]["InferenceRequest"]["examples"][0]


@pytest.mark.parametrize("offline_page", ["server"], indirect=True)
def test_swagger_ui_lists_every_operation_and_runs_a_prediction(
    offline_page: tuple[Page, Offline], server: str
) -> None:
    page, offline = offline_page
    count, example = documented_operations(server)
    expected = httpx.post(f"{server}/v1/models/press-3/predict", json=example).json()

    page.goto("/docs")
    predict = operation(page, PREDICT)
    predict.wait_for()
    assert page.locator(".opblock").count() == count
    predict.locator(".opblock-summary-control").click()
    predict.get_by_role("button", name="Try it out").click()
    predict.get_by_placeholder("name", exact=True).fill("press-3")
    status, body = execute(predict)

    assert status == "200"
    assert json.loads(body) == expected
    assert expected["labels"] == [1, 1, 0]
    offline.assert_nothing_left()


@pytest.mark.parametrize("offline_page", ["server"], indirect=True)
def test_redoc_renders_and_searches(offline_page: tuple[Page, Offline]) -> None:
    page, offline = offline_page
    page.goto("/redoc")
    page.get_by_role("heading", name=re.compile(r"^Lloyd \(")).wait_for()
    page.get_by_role("heading", name=PREDICT).wait_for()
    # The search runs in a worker the page makes from a blob (its policy allows it).
    page.get_by_placeholder("Search...").fill("anomalies")
    results = page.locator("[data-role='search:results']")
    results.get_by_role("menuitem", name="anomalies (latest version)").wait_for()
    offline.assert_nothing_left(refusable=frozenset({REDOC_LOGO}))


@pytest.mark.parametrize("offline_page", ["keyed_server"], indirect=True)
def test_swagger_ui_authorizes_with_an_api_key(offline_page: tuple[Page, Offline]) -> None:
    page, offline = offline_page
    page.goto("/docs")  # open without a key, as /openapi.json is
    predict = operation(page, PREDICT)
    predict.locator(".opblock-summary-control").click()
    predict.get_by_role("button", name="Try it out").click()
    predict.get_by_placeholder("name", exact=True).fill("press-3")
    assert execute(predict)[0] == "401"

    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".modal-ux")
    dialog.get_by_label("auth-bearer-value").fill(KEY)
    dialog.get_by_role("button", name="Apply credentials").click()
    dialog.get_by_role("button", name="Close").click()
    status, body = execute(predict)

    assert status == "200"
    assert json.loads(body)["labels"] == [1, 1, 0]
    # (Chromium logs each answer of 4xx as an error: the 401, as it should be.)
    offline.assert_nothing_left(errors=("the server responded with a status of 401",))
