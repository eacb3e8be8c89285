"""Every limit is configurable and answered with a clear 413 or 422, leaving nothing behind;
no model name can reach outside the models store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.api.contract import (
    BLOBS,
    assert_error_at,
    assert_problem,
    stored_state,
    train,
    training_body,
)
from tests.conftest import make_settings

LIMITS = {
    "max_body_bytes": 200_000,
    "max_inference_rows": 10,
    "max_training_cells": 400,
    "max_sample_rows": 5,
    "max_grid_candidates": 3,
    "max_name_length": 12,
    "max_description_length": 20,
    "max_tags": 2,
    "max_tag_length": 8,
}


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(tmp_path, **LIMITS)
    with TestClient(create_app(settings)) as client:
        train(
            client,
            name="m",
            algorithm="gaussian_mixture",
            params={"n_components": 2, "random_state": 0},
            data={"instances": BLOBS[:100].tolist()},
        )
        yield client, settings


def npy(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows)
    return buffer.getvalue()


def test_body_bytes(limited) -> None:
    client, settings = limited
    before = stored_state(client, settings)
    big = {"instances": np.zeros((20_000, 2)).tolist()}
    problem = assert_problem(
        client.post("/v1/models/m/predict", json=big), 413, "payload_too_large"
    )
    assert "LLOYD_MAX_BODY_BYTES" in problem["detail"]
    body = training_body(name="big", data={"instances": np.ones((20_000, 2)).tolist()})
    assert_problem(client.post("/v1/models", json=body), 413, "payload_too_large")
    # A body that lies about its length, or sends none, is refused the same way.
    assert_problem(
        client.post("/v1/models", content=npy(np.ones((20_000, 2)))), 413, "payload_too_large"
    )
    assert stored_state(client, settings) == before


@pytest.mark.parametrize("as_npy", [False, True])
def test_rows_per_inference_request(limited, as_npy: bool) -> None:
    client, _ = limited
    rows = BLOBS[:11]
    if as_npy:
        response = client.post(
            "/v1/models/m/predict",
            content=npy(rows),
            headers={"content-type": "application/x-npy"},
        )
    else:
        response = client.post("/v1/models/m/predict", json={"instances": rows.tolist()})
    problem = assert_problem(response, 413, "payload_too_large")
    assert "LLOYD_MAX_INFERENCE_ROWS" in problem["detail"]
    ok = client.post("/v1/models/m/predict", json={"instances": BLOBS[:10].tolist()})
    assert ok.status_code == 200


@pytest.mark.parametrize("as_npy", [False, True])
def test_training_cells(limited, as_npy: bool) -> None:
    client, settings = limited
    before = stored_state(client, settings)
    rows = np.random.default_rng(0).normal(size=(201, 2))  # 402 cells
    if as_npy:
        response = client.post(
            "/v1/models",
            content=npy(rows),
            headers={
                "content-type": "application/x-npy",
                "lloyd-request": '{"name": "cells", "algorithm": "kmeans"}',
            },
        )
    else:
        response = client.post(
            "/v1/models", json=training_body(name="cells", data={"instances": rows.tolist()})
        )
    problem = assert_problem(response, 413, "payload_too_large")
    assert "LLOYD_MAX_TRAINING_CELLS" in problem["detail"]
    assert stored_state(client, settings) == before


def test_sample_rows(limited) -> None:
    client, _ = limited
    problem = assert_problem(
        client.post("/v1/models/m/sample", json={"n_samples": 6}), 422, "invalid_input"
    )
    assert_error_at(problem, "body", "n_samples")
    assert "LLOYD_MAX_SAMPLE_ROWS" in problem["detail"]
    assert client.post("/v1/models/m/sample", json={"n_samples": 5}).status_code == 200


def test_grid_size(limited) -> None:
    client, settings = limited
    before = stored_state(client, settings)
    body = {
        "algorithm": "kmeans",
        "grid": {"n_clusters": [2, 3, 4, 5]},
        "data": {"instances": BLOBS[:50].tolist()},
        "register": {"name": "sel", "criterion": "silhouette"},
    }
    problem = assert_problem(client.post("/v1/model-selection", json=body), 422, "invalid_input")
    assert "LLOYD_MAX_GRID_CANDIDATES" in problem["detail"]
    assert stored_state(client, settings) == before


@pytest.mark.parametrize(
    ("overrides", "loc", "setting"),
    [
        ({"name": "a" * 13}, ["body", "name"], "LLOYD_MAX_NAME_LENGTH"),
        ({"description": "d" * 21}, ["body", "description"], "LLOYD_MAX_DESCRIPTION_LENGTH"),
        ({"tags": {"a": "1", "b": "2", "c": "3"}}, ["body", "tags"], "LLOYD_MAX_TAGS"),
        ({"tags": {"line": "123456789"}}, ["body", "tags", "line"], "LLOYD_MAX_TAG_LENGTH"),
    ],
)
def test_text_limits(limited, overrides, loc, setting) -> None:
    client, settings = limited
    before = stored_state(client, settings)
    problem = assert_problem(
        client.post("/v1/models", json=training_body(**{"name": "t"} | overrides)),
        422,
        "invalid_input",
    )
    assert_error_at(problem, *loc)
    assert setting in problem["detail"]
    assert stored_state(client, settings) == before


def test_text_limits_of_a_registered_selection(limited) -> None:
    client, _ = limited
    body = {
        "algorithm": "kmeans",
        "grid": {"n_clusters": [2, 3]},
        "data": {"instances": BLOBS[:50].tolist()},
        "register": {"name": "sel", "criterion": "silhouette", "description": "x" * 21},
    }
    problem = assert_problem(client.post("/v1/model-selection", json=body), 422, "invalid_input")
    assert_error_at(problem, "body", "register", "description")


def test_schema_ceilings_hold_whatever_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Settings(max_name_length=129)
    with pytest.raises(ValueError):
        Settings(max_description_length=5000)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        problem = assert_problem(
            client.post("/v1/models", json=training_body(name="n" * 129)),
            422,
            "validation_error",
        )
        assert_error_at(problem, "body", "name")


@pytest.mark.parametrize(
    "name",
    [
        "../escape",
        "..",
        "a/b",
        "a\\b",
        "/etc/passwd",
        ".hidden",
        "-dash",
        "spaced name",
        "nul\u0000",
        "caf\u00e9",
        "",
        "%2e%2e",
    ],
)
def test_unsafe_model_names_are_refused(tmp_path: Path, name: str) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        before = stored_state(client, settings)
        problem = assert_problem(
            client.post("/v1/models", json=training_body(name=name)), 422, "validation_error"
        )
        assert_error_at(problem, "body", "name")
        assert stored_state(client, settings) == before
    # Nothing was written anywhere but the store and the database.
    assert {p.name for p in tmp_path.iterdir()} <= {
        "lloyd.db",
        "lloyd.db-shm",
        "lloyd.db-wal",
        "models_store",
    }


def test_artifact_paths_never_come_from_names(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        # Dots and dashes are allowed inside a name; they still never reach a path.
        version = train(client, name="m..-_1")
        assert version["name"] == "m..-_1"
        store = Path(settings.models_store).resolve()
        files = [p for p in store.rglob("*") if p.is_file()]
        assert files and all(store in p.resolve().parents for p in files)
        assert all("m.-_1" not in str(p) for p in files)
