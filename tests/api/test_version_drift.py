"""Library drift through the API: a version trained with another scikit-learn (its row edited in
the real SQLite file) answers 409 `version_drift` with both versions, the other models still
answer, LLOYD_ALLOW_VERSION_DRIFT serves it with scikit-learn's own answers, and the version
document shows both the training and the serving versions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sklearn
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.main import create_app
from app.registry.orm import ModelRow, VersionRow
from app.services.training import library_versions
from tests.api.contract import (
    CASE_BY_ALGORITHM,
    assert_problem,
    call,
    case_body,
    new_rows,
)
from tests.api.reference import assert_same
from tests.conftest import make_settings

OLD_SCIKIT_LEARN = "1.5.0"
RUNNING = {"scikit-learn": sklearn.__version__, "numpy": np.__version__}
MIXTURE = CASE_BY_ALGORITHM["gaussian_mixture"]
KMEANS = CASE_BY_ALGORITHM["kmeans"]
ROWS = new_rows(MIXTURE.X).tolist()
# Every operation of the mixture that reads its artifact, with a body it accepts.
MIXTURE_CALLS: dict[str, dict[str, Any]] = {
    "predict": {"instances": ROWS},
    "predict_proba": {"instances": ROWS},
    "score_samples": {"instances": ROWS},
    "score": {"instances": ROWS},
    "anomalies": {"instances": ROWS},
    "sample": {"n_samples": 6, "random_state": 0},
    "bic": {"instances": ROWS},
    "aic": {"instances": ROWS},
}


def train_both(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """`line-7` (a Gaussian mixture) and `line-8` (k-means), each version 1."""
    docs = []
    for name, case in (("line-7", MIXTURE), ("line-8", KMEANS)):
        response = client.post("/v1/models", json=case_body(case, name=name))
        assert response.status_code == 201, response.text
        docs.append(response.json())
    return docs[0], docs[1]


def record_training_versions(database_url: str, name: str, **libraries: str) -> None:
    """Edit version 1 of ``name`` in the database, as if another scikit-learn had trained it."""
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            row = connection.execute(
                sa.select(VersionRow.id, VersionRow.library_versions)
                .join(ModelRow, ModelRow.id == VersionRow.model_id)
                .where(ModelRow.name == name, VersionRow.version == 1)
            ).one()
            connection.execute(
                sa.update(VersionRow)
                .where(VersionRow.id == row.id)
                .values(library_versions=dict(row.library_versions) | libraries)
            )
    finally:
        engine.dispose()


@pytest.fixture
def drifted(client, settings) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Both models trained, then `line-7` recorded as trained with scikit-learn 1.5.0."""
    mixture, kmeans = train_both(client)
    record_training_versions(settings.database_url, "line-7", **{"scikit-learn": OLD_SCIKIT_LEARN})
    yield mixture, kmeans


def assert_version_drift(response) -> dict[str, Any]:
    problem = assert_problem(response, 409, "version_drift")
    assert problem["type"] == "urn:lloyd:problem:version_drift"
    assert "'line-7' version 1" in problem["detail"]
    assert f"scikit-learn {OLD_SCIKIT_LEARN}" in problem["detail"]
    assert f"scikit-learn {sklearn.__version__}" in problem["detail"]
    assert "LLOYD_ALLOW_VERSION_DRIFT" in problem["detail"]
    assert problem["trained_with"] == {"scikit-learn": OLD_SCIKIT_LEARN, "numpy": np.__version__}
    assert problem["running"] == RUNNING
    return problem


# -- refused -----------------------------------------------------------------------------------
def test_drifted_version_answers_409_and_the_others_still_serve(client, settings, drifted, fitted):
    _, kmeans = drifted
    kmeans_expected = fitted(KMEANS).answer("predict", {"instances": ROWS}, stored_contamination=0)

    # The process that trained it has it in memory: refused all the same, at every address.
    for version in (None, 1, "latest"):
        assert_version_drift(call(client, "line-7", "predict", {"instances": ROWS[:1]}, version))

    # A new process on the same database and store: nothing is cached.
    with TestClient(create_app(settings)) as fresh:
        for operation, body in MIXTURE_CALLS.items():
            assert_version_drift(call(fresh, "line-7", operation, body))
        assert_version_drift(fresh.get("/v1/models/line-7/versions/1/parameters"))

        other = call(fresh, "line-8", "predict", {"instances": ROWS})
        assert other.status_code == 200, other.text
        assert_same(other.json(), kmeans_expected)
        assert fresh.get("/v1/models/line-8/versions/1").json() == kmeans

        # The drifted version stays readable and deletable, and a retraining serves.
        assert fresh.get("/v1/models/line-7").status_code == 200
        deleted = fresh.delete("/v1/models/line-7/versions/1")
        assert deleted.json() == {"name": "line-7", "deleted_versions": [1]}
        retrained = fresh.post("/v1/models", json=case_body(MIXTURE, name="line-7"))
        assert retrained.status_code == 201, retrained.text
        assert retrained.json()["version_drift"] is False
        assert call(fresh, "line-7", "predict", {"instances": ROWS}).status_code == 200


def test_large_requests_are_refused_like_small_ones(tmp_path, fitted):
    """Small work on a cached model runs inline, the rest in a thread: both refuse alike."""
    settings = make_settings(tmp_path, inline_work_limit=0)
    with TestClient(create_app(settings)) as client:
        train_both(client)
        record_training_versions(
            settings.database_url, "line-7", **{"scikit-learn": OLD_SCIKIT_LEARN}
        )
        assert_version_drift(call(client, "line-7", "predict", {"instances": ROWS}))
        assert call(client, "line-8", "predict", {"instances": ROWS}).status_code == 200


def test_other_numpy_major_is_refused(client, settings):
    train_both(client)
    numpy_major = int(np.__version__.split(".")[0])
    other = "1.26.4" if numpy_major >= 2 else "2.0.0"
    record_training_versions(settings.database_url, "line-7", numpy=other)
    record_training_versions(settings.database_url, "line-8", numpy=f"{numpy_major}.999.0")
    with TestClient(create_app(settings)) as fresh:
        problem = assert_problem(
            call(fresh, "line-7", "predict", {"instances": ROWS}), 409, "version_drift"
        )
        assert problem["trained_with"] == {"scikit-learn": sklearn.__version__, "numpy": other}
        assert f"numpy {other}" in problem["detail"]
        # Another minor version of the same numpy major is no drift.
        assert call(fresh, "line-8", "predict", {"instances": ROWS}).status_code == 200
        assert fresh.get("/v1/models/line-8/versions/1").json()["version_drift"] is False


# -- allowed -----------------------------------------------------------------------------------
def test_allowed_drift_serves_scikit_learns_answers(tmp_path, fitted, caplog):
    settings = make_settings(tmp_path, allow_version_drift=True)
    reference = fitted(MIXTURE)
    with TestClient(create_app(settings)) as client:
        mixture, _ = train_both(client)
    record_training_versions(settings.database_url, "line-7", **{"scikit-learn": OLD_SCIKIT_LEARN})

    contamination = mixture["anomaly"]["contamination"]
    with (
        caplog.at_level(logging.WARNING, logger="app.registry.model_registry"),
        TestClient(create_app(settings)) as fresh,
    ):
        for operation, body in MIXTURE_CALLS.items():
            for version in (None, 1):
                response = call(fresh, "line-7", operation, body, version)
                assert response.status_code == 200, (operation, response.text)
                answer = response.json()
                assert (answer["model"], answer["version"]) == ("line-7", 1)
                expected = reference.answer(operation, body, stored_contamination=contamination)
                assert_same(answer, expected)
        doc = fresh.get("/v1/models/line-7/versions/1").json()
    assert doc["version_drift"] is True
    warnings = [r for r in caplog.records if "LLOYD_ALLOW_VERSION_DRIFT" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert OLD_SCIKIT_LEARN in warnings[0].getMessage()


# -- the version document ----------------------------------------------------------------------
def test_version_document_shows_training_and_serving_versions(client, drifted):
    mixture, kmeans = drifted
    serving = library_versions()
    # Freshly trained here: the same versions, no drift.
    for doc in (mixture, kmeans):
        assert doc["library_versions"] == serving
        assert doc["serving_library_versions"] == serving
        assert doc["version_drift"] is False

    doc = client.get("/v1/models/line-7/versions/1").json()
    assert doc["library_versions"] == serving | {"scikit-learn": OLD_SCIKIT_LEARN}
    assert doc["serving_library_versions"] == serving
    assert doc["version_drift"] is True
    assert {k: v for k, v in doc.items() if k not in ("library_versions", "version_drift")} == {
        k: v for k, v in mixture.items() if k not in ("library_versions", "version_drift")
    }
    # Everywhere a version document is returned.
    listed = client.get("/v1/models/line-7/versions").json()["items"]
    assert listed == [doc]
    aliased = client.put("/v1/models/line-7/aliases/production", json={"version": 1}).json()
    assert aliased == doc | {"aliases": ["production"]}
    assert client.get("/v1/models/line-8/versions/1").json()["version_drift"] is False


def test_openapi_documents_the_fields_and_the_409(client):
    spec = client.get("/openapi.json").json()
    version = spec["components"]["schemas"]["VersionOut"]["properties"]
    for field in ("library_versions", "serving_library_versions", "version_drift"):
        assert version[field].get("description"), field
    assert version["version_drift"]["type"] == "boolean"
    for path in ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict"):
        conflict = spec["paths"][path]["post"]["responses"]["409"]["description"]
        assert "version_drift" in conflict and "artifact_integrity" in conflict
