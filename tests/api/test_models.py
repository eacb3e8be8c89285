"""Models, versions and aliases: numbering, listing, moving, deleting, and what the store keeps."""

from __future__ import annotations

import pytest

from tests.api.contract import BLOBS, artifact_hashes, assert_problem, call, store_files, train

ROWS = {"instances": BLOBS[:5].tolist()}


def train_versions(client, name: str, count: int) -> list[dict]:
    """``count`` versions of ``name``, each with another seed (so another artifact)."""
    return [
        train(client, name=name, params={"n_clusters": 3, "random_state": seed})
        for seed in range(count)
    ]


def test_repeated_trainings_number_versions_1_2_3(client):
    docs = train_versions(client, "line-7", 3)
    assert [d["version"] for d in docs] == [1, 2, 3]
    model = client.get("/v1/models/line-7").json()
    assert (model["latest_version"], model["n_versions"]) == (3, 3)
    versions = client.get("/v1/models/line-7/versions").json()
    assert versions["total"] == 3
    assert [v["version"] for v in versions["items"]] == [1, 2, 3]
    page = client.get("/v1/models/line-7/versions", params={"offset": 1, "limit": 1}).json()
    assert (page["total"], page["offset"], page["limit"]) == (3, 1, 1)
    assert [v["version"] for v in page["items"]] == [2]
    assert call(client, "line-7", "predict", ROWS).json()["version"] == 3
    assert call(client, "line-7", "predict", ROWS, "latest").json()["version"] == 3


def test_models_are_listed_by_name_a_page_at_a_time(client):
    for name in ("charlie", "alpha", "bravo", "delta"):
        train(client, name=name, data={"instances": BLOBS[:20].tolist()})
    pages = [
        client.get("/v1/models", params={"offset": offset, "limit": 3}).json()
        for offset in (0, 3, 6)
    ]
    assert [p["total"] for p in pages] == [4, 4, 4]
    assert [[m["name"] for m in p["items"]] for p in pages] == [
        ["alpha", "bravo", "charlie"],
        ["delta"],
        [],
    ]
    assert_problem(client.get("/v1/models", params={"limit": 0}), 422, "validation_error")
    assert_problem(client.get("/v1/models", params={"offset": -1}), 422, "validation_error")


def test_an_alias_is_set_moved_and_removed(client):
    train_versions(client, "m", 2)
    first = client.put("/v1/models/m/aliases/production", json={"version": 1})
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["aliases"]) == (1, ["production"])
    assert call(client, "m", "predict", ROWS, "production").json()["version"] == 1

    moved = client.put("/v1/models/m/aliases/production", json={"version": 2})
    assert (moved.json()["version"], moved.json()["aliases"]) == (2, ["production"])
    assert client.get("/v1/models/m/versions/1").json()["aliases"] == []
    assert client.get("/v1/models/m").json()["aliases"] == {"production": 2}
    assert call(client, "m", "predict", ROWS, "production").json()["version"] == 2

    removed = client.delete("/v1/models/m/aliases/production")
    assert removed.status_code == 204
    assert removed.content == b""
    assert client.get("/v1/models/m").json()["aliases"] == {}
    assert_problem(client.get("/v1/models/m/versions/production"), 404, "version_not_found")
    assert_problem(call(client, "m", "predict", ROWS, "production"), 404, "version_not_found")
    assert_problem(client.delete("/v1/models/m/aliases/production"), 404, "alias_not_found")
    # The version it pointed at stays.
    assert client.get("/v1/models/m/versions/2").status_code == 200


@pytest.mark.parametrize(
    ("name", "version", "status", "code"),
    [
        pytest.param("m", 9, 404, "version_not_found", id="missing-version"),
        pytest.param("nope", 1, 404, "model_not_found", id="missing-model"),
    ],
)
def test_alias_on_something_missing_is_404(client, name, version, status, code):
    train(client, name="m")
    response = client.put(f"/v1/models/{name}/aliases/production", json={"version": version})
    assert_problem(response, status, code)
    assert client.get("/v1/models/m").json()["aliases"] == {}


@pytest.mark.parametrize("alias", ["latest", "1abc", "2", "-x", "a" * 65])
def test_alias_that_could_be_mistaken_or_is_malformed_is_422(client, alias):
    train(client, name="m")
    response = client.put(f"/v1/models/m/aliases/{alias}", json={"version": 1})
    assert_problem(response, 422, "invalid_input")
    assert client.get("/v1/models/m").json()["aliases"] == {}


def test_deleting_a_version_removes_its_artifact_and_aliases_only(client, settings):
    docs = train_versions(client, "m", 3)
    shas = [d["artifact"]["sha256"] for d in docs]
    assert artifact_hashes(settings) == set(shas)
    client.put("/v1/models/m/aliases/candidate", json={"version": 2})
    client.put("/v1/models/m/aliases/production", json={"version": 3})

    deleted = client.delete("/v1/models/m/versions/candidate")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"name": "m", "deleted_versions": [2]}

    assert artifact_hashes(settings) == {shas[0], shas[2]}
    assert_problem(client.get("/v1/models/m/versions/2"), 404, "version_not_found")
    assert_problem(client.get("/v1/models/m/versions/candidate"), 404, "version_not_found")
    assert client.get("/v1/models/m").json()["aliases"] == {"production": 3}
    assert [v["version"] for v in client.get("/v1/models/m/versions").json()["items"]] == [1, 3]
    for version in (1, 3, "production", None):
        response = call(client, "m", "predict", ROWS, version)
        assert response.status_code == 200, response.text
    assert_problem(call(client, "m", "predict", ROWS, 2), 404, "version_not_found")
    assert_problem(client.delete("/v1/models/m/versions/2"), 404, "version_not_found")


def test_deleting_a_model_removes_every_artifact_of_it(client, settings):
    train_versions(client, "m", 3)
    other = train(client, name="other")
    client.put("/v1/models/m/aliases/production", json={"version": 1})

    deleted = client.delete("/v1/models/m")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"name": "m", "deleted_versions": [1, 2, 3]}

    assert artifact_hashes(settings) == {other["artifact"]["sha256"]}
    assert len(store_files(settings)) == 1
    assert [m["name"] for m in client.get("/v1/models").json()["items"]] == ["other"]
    for response in (
        client.get("/v1/models/m"),
        client.get("/v1/models/m/versions"),
        client.get("/v1/models/m/versions/1"),
        call(client, "m", "predict", ROWS),
        call(client, "m", "predict", ROWS, "production"),
        client.delete("/v1/models/m"),
    ):
        assert_problem(response, 404, "model_not_found")
    assert call(client, "other", "predict", ROWS).status_code == 200


def test_a_deleted_version_number_is_never_given_again(client):
    train_versions(client, "m", 2)
    client.delete("/v1/models/m/versions/2")
    assert train(client, name="m")["version"] == 3
