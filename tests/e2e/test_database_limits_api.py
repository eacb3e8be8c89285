"""Input the databases treat differently (PostgreSQL refuses NUL in text, integers have a width)
gets the same clear 4xx on SQLite and on PostgreSQL, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings

ROWS = [[0.0, 0.1], [0.2, 0.0], [5.0, 5.1], [5.2, 4.9], [0.1, 0.1], [5.1, 5.0]]
TRAIN = {
    "name": "line-7",
    "algorithm": "kmeans",
    "params": {"n_clusters": 2, "random_state": 0},
    "data": {"instances": ROWS},
}


@pytest.fixture
def api(tmp_path, database_url) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, database_url=database_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/v1/models", json=TRAIN).status_code == 201
        yield client


@pytest.mark.parametrize(
    ("extra", "pointer"),
    [
        ({"description": "week\x0047"}, "/description"),
        ({"tags": {"line": "7\x00"}}, "/tags/line"),
        ({"feature_names": ["temperature\x00", "pressure"]}, "/feature_names/0"),
        (
            {"data": {"records": [{"t\x00": 1.0, "p": 2.0}, {"t\x00": 1.5, "p": 2.5}]}},
            "/data/records",
        ),
    ],
)
def test_nul_in_stored_text_is_a_422(api, extra, pointer):
    response = api.post("/v1/models", json=TRAIN | extra)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_input"
    assert "NUL" in problem["detail"]
    assert problem["errors"][0]["pointer"] == pointer
    assert api.get("/v1/models/line-7").json()["n_versions"] == 1


@pytest.mark.parametrize(
    "url",
    [
        "/v1/models/line-7/versions/2147483648",
        "/v1/models/line-7/versions/99999999999999999999",
        "/v1/models/line-7/versions/%C2%B2",  # "²": a digit to str.isdigit(), not to int()
        "/v1/models/line-7/versions/a%00b",
        "/v1/models/line%00-7",
    ],
)
def test_refs_past_what_the_database_holds_are_404(api, url):
    response = api.get(url)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_alias_to_a_huge_version_is_404(api):
    response = api.put("/v1/models/line-7/aliases/production", json={"version": 2**70})
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "version_not_found"


def test_huge_offsets_give_empty_pages(api):
    for url in ("/v1/models", "/v1/models/line-7/versions"):
        response = api.get(url, params={"offset": 2**64})
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []
        assert response.json()["total"] == 1
