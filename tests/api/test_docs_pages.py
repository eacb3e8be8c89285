"""The documentation pages and their assets, over HTTP: /docs and /redoc load nothing but from
the server itself (its own copies of Swagger UI's and ReDoc's assets, cached for a year), say
so in their Content-Security-Policy, are open when keys are configured, stay out of the
document, and count in the metrics under bounded route templates. (A real browser renders and
uses them offline: tests/e2e/test_docs_browser.py.)"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.docs_pages import ASSETS, CACHE_CONTROL
from app.api_keys import hash_key
from app.main import create_app
from tests.conftest import make_settings

PAGES = ("/docs", "/redoc")
# Every URL a page names: src and href attributes, and the spec's URL in Swagger UI's script.
URLS = re.compile(r"""(?:src|href|spec-url)="([^"]*)"|url: '([^']*)'""")


def urls_of(page: str) -> list[str]:
    return [first or second for first, second in URLS.findall(page)]


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, api_keys=f"{hash_key('a-key')}:read+write")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", PAGES)
def test_a_page_names_only_this_server_and_its_policy_allows_nothing_else(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = urls_of(page.text)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "http://" not in page.text and "https://" not in page.text
    assert "fonts.googleapis.com" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self';" in policy
    assert "https:" not in policy and "http:" not in policy and "*" not in policy
    for script in re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy


@pytest.mark.parametrize("path", PAGES)
def test_every_asset_a_page_names_is_served_and_cached_for_a_year(client, path):
    assets = [url for url in urls_of(client.get(path).text) if url.startswith("/static/docs/")]
    assert len(assets) >= 2  # the script (and the stylesheet) and the icon
    for url in assets:
        name = url.split("?")[0].rsplit("/", 1)[1]
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"] == ASSETS[name]
        assert answer.headers["cache-control"] == CACHE_CONTROL
        assert len(answer.content) > 1000
        again = client.get(url, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_text_assets_are_compressed_for_clients_that_accept_it(client):
    url = "/static/docs/swagger-ui-bundle.js"
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    assert zipped.content == plain.content  # (httpx decodes it)
    icon = client.get("/static/docs/favicon.png", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in icon.headers  # a PNG is compressed already


def test_an_unknown_asset_is_a_404_problem(client):
    answer = client.get("/static/docs/nothing.js")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


def test_the_oauth2_redirect_page_is_served(client):
    answer = client.get("/docs/oauth2-redirect")
    assert answer.status_code == 200
    assert "swaggerUIRedirectOauth2" in answer.text


def test_the_pages_are_out_of_the_document_and_only_answer_get(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc", "/static"))]
    assert client.post("/docs").status_code == 405
    assert client.head("/redoc").status_code == 200


def test_the_pages_and_assets_are_open_when_keys_are_configured(keyed):
    for path in (*PAGES, "/docs/oauth2-redirect", "/openapi.json", "/static/docs/favicon.png"):
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/v1/models").status_code == 401


def test_the_pages_follow_the_root_path(settings):
    with TestClient(create_app(settings), root_path="/lloyd") as client:
        for path in PAGES:
            urls = urls_of(client.get(path).text)
            assert all(url.startswith("/lloyd/") for url in urls), urls


def test_metrics_count_pages_and_assets_by_route_template(client):
    for name in (*ASSETS, "nothing.js", "x" * 40):
        client.get(f"/static/docs/{name}")
    client.get("/docs")
    client.get("/static/docs/a/b")  # no route: unmatched
    routes = {
        (sample.labels["route"], sample.labels["status"])
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "lloyd_http_requests_total"
    }
    assert ("/static/docs/{asset}", "200") in routes
    assert ("/static/docs/{asset}", "404") in routes
    assert ("/docs", "200") in routes
    assert ("unmatched", "404") in routes
    assert not [route for route, _ in routes if "nothing" in route or "xxx" in route]
