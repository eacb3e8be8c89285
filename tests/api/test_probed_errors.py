"""What fuzzing and probing found answering 500, now answering 4xx or 409: an offset past int64,
and a version whose artifact path in the store is a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.api.contract import assert_problem, training_body

HUGE = "97459919124040656663609344"


def test_an_offset_past_int64_is_a_validation_error_or_an_empty_page(client):
    assert_problem(client.get("/v1/jobs", params={"offset": HUGE}), 422, "validation_error")
    assert client.post("/v1/models", json=training_body(name="line-7")).status_code == 201
    for url in ("/v1/models", "/v1/models/line-7/versions"):
        page = client.get(url, params={"offset": HUGE})
        assert page.status_code == 200, page.text
        assert page.json()["items"] == [] and page.json()["total"] == 1


def test_a_version_whose_artifact_is_a_folder_is_409_and_can_be_deleted(client, settings):
    trained = client.post("/v1/models", json=training_body(name="line-7"))
    assert trained.status_code == 201, trained.text
    [artifact] = (Path(settings.models_store) / "artifacts").glob("*.joblib")
    client.app.state.registry.cache.evict(lambda key: True)
    artifact.unlink()
    artifact.mkdir()  # an operator's mistake, or a restore gone wrong

    for operation in ("predict", "transform"):
        response = client.post(f"/v1/models/line-7/{operation}", json={"instances": [[0, 0]]})
        problem = assert_problem(response, 409, "artifact_integrity")
        assert "not a file" in problem["detail"]
    deleted = client.delete("/v1/models/line-7/versions/1")
    assert deleted.status_code == 200, deleted.text
    assert_problem(client.get("/v1/models/line-7/versions/1"), 404, "version_not_found")
    assert artifact.is_dir()  # a folder is never removed by the service
    shutil.rmtree(artifact)
