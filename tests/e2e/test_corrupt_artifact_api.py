"""A damaged artifact through the API: 409 artifact_integrity for that version only, the other
models still answer, and the damaged version can be deleted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs

from app.main import create_app
from app.settings import Settings

X, _ = make_blobs(n_samples=60, n_features=2, centers=3, cluster_std=0.5, random_state=3)
ROWS = X.tolist()
PROBLEM = "application/problem+json"


def train(client: TestClient, name: str, algorithm: str, params: dict) -> dict:
    response = client.post(
        "/v1/models",
        json={"name": name, "algorithm": algorithm, "params": params, "data": {"instances": ROWS}},
    )
    assert response.status_code == 201, response.text
    return response.json()


def artifact_file(settings: Settings, sha256: str) -> Path:
    """The one file under the store whose content hashes to ``sha256``."""
    folder = Path(settings.models_store) / "artifacts"
    matches = [p for p in folder.iterdir() if hashlib.sha256(p.read_bytes()).hexdigest() == sha256]
    assert len(matches) == 1, matches
    return matches[0]


@pytest.fixture
def two_models(client: TestClient) -> tuple[dict, dict]:
    kmeans = train(client, "line-7", "kmeans", {"n_clusters": 3, "random_state": 0})
    mixture = train(client, "line-8", "gaussian_mixture", {"n_components": 3, "random_state": 0})
    return kmeans, mixture


def predict(client: TestClient, name: str) -> object:
    return client.post(f"/v1/models/{name}/predict", json={"instances": ROWS})


def test_corrupted_artifact_answers_409_and_others_still_predict(client, settings, two_models):
    kmeans, _ = two_models
    mixture_labels = predict(client, "line-8").json()["labels"]
    path = artifact_file(settings, kmeans["artifact"]["sha256"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    # A new process on the same database and store: nothing is cached.
    with TestClient(create_app(settings)) as fresh:
        for url in (
            "/v1/models/line-7/predict",
            "/v1/models/line-7/versions/1/predict",
            "/v1/models/line-7/versions/latest/transform",
        ):
            response = fresh.post(url, json={"instances": ROWS})
            assert response.status_code == 409, response.text
            assert response.headers["content-type"] == PROBLEM
            problem = response.json()
            assert problem["code"] == "artifact_integrity"
            assert problem["status"] == 409
            assert problem["type"] == "urn:lloyd:problem:artifact_integrity"
            assert "'line-7' version 1" in problem["detail"]
            assert "does not match its recorded sha256" in problem["detail"]
            assert problem["expected_sha256"] == kmeans["artifact"]["sha256"]
            assert problem["actual_sha256"] == hashlib.sha256(data).hexdigest()

        parameters = fresh.get("/v1/models/line-7/versions/1/parameters")
        assert parameters.status_code == 409
        assert parameters.json()["code"] == "artifact_integrity"
        # The metadata stays readable, so an operator can see the version and delete it.
        assert fresh.get("/v1/models/line-7/versions/1").json() == kmeans

        other = predict(fresh, "line-8")
        assert other.status_code == 200
        assert other.json()["labels"] == mixture_labels

        deleted = fresh.delete("/v1/models/line-7/versions/1")
        assert deleted.status_code == 200
        assert deleted.json() == {"name": "line-7", "deleted_versions": [1]}
        assert not path.exists()
        gone = predict(fresh, "line-7")
        assert gone.status_code == 404
        assert gone.json()["code"] == "version_not_found"
        assert predict(fresh, "line-8").status_code == 200


def test_missing_artifact_answers_409(client, settings, two_models):
    kmeans, _ = two_models
    artifact_file(settings, kmeans["artifact"]["sha256"]).unlink()
    with TestClient(create_app(settings)) as fresh:
        response = predict(fresh, "line-7")
        assert response.status_code == 409
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "artifact_integrity"
        assert "missing from the store" in response.json()["detail"]
        assert predict(fresh, "line-8").status_code == 200
        assert fresh.delete("/v1/models/line-7").json() == {
            "name": "line-7",
            "deleted_versions": [1],
        }


@pytest.mark.parametrize("damage", ["other_model", "truncated", "emptied"])
def test_tampered_artifact_answers_409_and_others_still_predict(
    client, settings, two_models, damage
):
    """A file swapped for another model's valid artifact (it would unpickle and answer), cut
    short or emptied: 409 artifact_integrity at every address that loads it, never a 500."""
    kmeans, mixture = two_models
    mixture_labels = predict(client, "line-8").json()["labels"]
    path = artifact_file(settings, kmeans["artifact"]["sha256"])
    data = path.read_bytes()
    if damage == "other_model":
        path.write_bytes(artifact_file(settings, mixture["artifact"]["sha256"]).read_bytes())
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")

    with TestClient(create_app(settings)) as fresh:
        for response in (
            predict(fresh, "line-7"),
            fresh.post("/v1/models/line-7/versions/1/transform", json={"instances": ROWS}),
            fresh.post("/v1/models/line-7/anomalies", json={"instances": ROWS}),
            fresh.get("/v1/models/line-7/versions/1/parameters"),
        ):
            assert response.status_code == 409, response.text
            assert response.headers["content-type"] == PROBLEM
            problem = response.json()
            assert problem["code"] == "artifact_integrity"
            assert "does not match its recorded sha256" in problem["detail"]
            assert problem["expected_sha256"] == kmeans["artifact"]["sha256"]
            assert problem["actual_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

        other = predict(fresh, "line-8")
        assert other.status_code == 200
        assert other.json()["labels"] == mixture_labels
        assert fresh.get("/v1/models/line-7/versions/1").json() == kmeans
