"""Schemathesis over every operation of /openapi.json of the real app: no 5xx, and every
response conforms to the schema (documented status code, content type and body)."""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sklearn.datasets import make_blobs

from app.api.schemas import TrainRequest
from app.errors import ModelNotFound
from app.main import create_app
from app.registry.records import NewVersion
from app.services import training
from app.services.fitting_tasks import fit_for_training
from tests.conftest import make_settings

X, _ = make_blobs(n_samples=40, n_features=2, centers=2, cluster_std=0.5, random_state=5)
ROWS = X.tolist()
# "line-7" is the name the schema's examples use: version 1 k-means (alias "production"),
# latest a Gaussian mixture, so examples reach both families' operations; "line-8" is k-means.
MODELS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "line-7": [
        ("kmeans", {"n_clusters": 2, "random_state": 0}),
        ("gaussian_mixture", {"n_components": 2, "random_state": 0}),
    ],
    "line-8": [("kmeans", {"n_clusters": 3, "random_state": 0})],
}
VERSION_REFS = ["latest", "1", "2", "production"]
VALID_ROWS = [[0.5, 1.5], [-2.0, 3.0], [10.0, -4.0]]
ROW_OPERATIONS = {"predict", "predict_proba", "transform", "score_samples", "score", "anomalies"}
ROW_OPERATIONS |= {"bic", "aic"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Schemathesis parametrizes at collection, so the app is built at import: only built, since
# create_app opens nothing; its folder is created by the lifespan and removed after the module.
# (schemathesis.pytest.from_fixture would allow a per-test app, but fails on pytest 9.)
FOLDER = Path(tempfile.gettempdir()) / f"lloyd-schemathesis-{uuid.uuid4().hex}"
APP = create_app(make_settings(FOLDER))


def train_models(client: Any, names: list[str]) -> None:
    """Train the known models through the API."""
    for name in names:
        for algorithm, params in MODELS[name]:
            response = client.post(
                "/v1/models",
                json={
                    "name": name,
                    "algorithm": algorithm,
                    "params": params,
                    "data": {"instances": ROWS},
                },
            )
            assert response.status_code == 201, response.text
    if "line-7" in names:
        response = client.put("/v1/models/line-7/aliases/production", json={"version": 1})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module", autouse=True)
def trained_models() -> Iterator[None]:
    with TestClient(APP) as client:
        train_models(client, list(MODELS))
    yield
    shutil.rmtree(FOLDER, ignore_errors=True)


@functools.cache
def fitted(name: str) -> list[tuple[NewVersion, Any]]:
    """The versions of a known model, fitted once, in this process, by the function a worker
    process runs for a training."""
    out = []
    for algorithm, params in MODELS[name]:
        spec = TrainRequest.model_validate(
            {"name": name, "algorithm": algorithm, "params": params, "data": {"instances": ROWS}}
        )
        prepared = training.prepare(spec, APP.state.settings)
        result = fit_for_training(
            algorithm=algorithm,
            params=params,
            preprocessing=[],
            X=prepared.X,
            feature_names=None,
            contamination=spec.anomaly.contamination,
            refit_without_outliers=False,
        )
        new = training.new_version(prepared, result, description=None, tags={})
        out.append((new, result.model))
    return out


def retrain(name: str) -> None:
    """A generated DELETE removed a known model, version or alias: store it again from scratch
    so that later requests still find what the hooks below name. (Through the registry: a
    training through the API starts a worker process, too slow to repeat this often.)"""
    registry = APP.state.registry
    with contextlib.suppress(ModelNotFound):
        registry.delete_model(name)
    for new, model in fitted(name):
        registry.register(name, new, model)
    if name == "line-7":
        registry.set_alias(name, "production", 1)


schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP  # requests go to the app in-process, its lifespan run by schemathesis


def known_or_generated(generated: Any, known: list[str]) -> st.SearchStrategy:
    # Known values first: Hypothesis draws the first element of sampled_from most often.
    return st.sampled_from([*known, generated])


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict[str, Any]) -> st.SearchStrategy:
    """Most generated requests name a model (and a version) that exists."""
    if not path_parameters or "name" not in path_parameters:
        return st.just(path_parameters)
    known_names = (
        ["kmeans", "gaussian_mixture"]
        if context.operation.path.startswith("/v1/algorithms")
        else list(MODELS)
    )
    parts = {"name": known_or_generated(path_parameters["name"], known_names)}
    if "version" in path_parameters:
        parts["version"] = known_or_generated(path_parameters["version"], VERSION_REFS)
    return st.fixed_dictionaries({**{k: st.just(v) for k, v in path_parameters.items()}, **parts})


@schema.hook
def flatmap_body(context, body: Any) -> st.SearchStrategy:
    """Rows of the models' width in most inference bodies, so that generated requests reach the
    operations' answers and not only their 422s."""
    operation = context.operation.path.rsplit("/", 1)[-1]
    if operation not in ROW_OPERATIONS or not isinstance(body, dict):
        return st.just(body)
    rows = {"instances": VALID_ROWS}
    return st.sampled_from([rows, {**body, **rows}, body])


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case):
    response = case.call_and_validate(checks=CHECKS)
    name = (case.path_parameters or {}).get("name")
    if case.method == "DELETE" and response.status_code < 300 and name in MODELS:
        retrain(name)


VALID = {"instances": VALID_ROWS}
TRAIN_LINE_9 = {
    "name": "line-9",
    "algorithm": "kmeans",
    "params": {"n_clusters": 2},
    "data": {"instances": ROWS},
}
SELECTION = {
    "algorithm": "kmeans",
    "params": {"n_init": 1},
    "grid": {"n_clusters": {"min": 2, "max": 4}},
    "data": {"instances": ROWS},
}
# A selection that is still running when it is cancelled: 200 candidates of 20 fits each.
LONG_SELECTION = SELECTION | {
    "params": {"n_init": 20},
    "grid": {"random_state": list(range(200))},
    "silhouette_diagrams": False,
    "wait": False,
}


def request(method: str, path: str, *, status: int = 200, query=None, body=None, **path_parameters):
    """One valid request; ``name`` defaults to "line-7" and ``version`` to "latest"."""
    if "{name}" in path and not path.startswith("/v1/algorithms"):
        path_parameters.setdefault("name", "line-7")
    if "{version}" in path:
        path_parameters.setdefault("version", "latest")
    label = " ".join([method, path, *(f"{k}={v}" for k, v in path_parameters.items())])
    return pytest.param(method, path, path_parameters, query, body, status, id=label)


# One valid request per operation, each answered with a success whose body must conform to the
# schema too: the fuzzing above reaches these only by chance. "scratch" is a throwaway model
# trained for the deleting requests; job ids are looked up (or a job started) when the test runs.
SUCCESSES = [
    request("GET", "/healthz"),
    request("GET", "/readyz"),
    request("GET", "/metrics"),
    request("GET", "/v1/algorithms"),
    request("GET", "/v1/algorithms/{name}", name="dbscan"),
    request("GET", "/v1/models", query={"offset": 1, "limit": 1}),
    request("GET", "/v1/models/{name}"),
    request("GET", "/v1/models/{name}/versions", query={"limit": 1}),
    request("GET", "/v1/models/{name}/versions/{version}", version="production"),
    request("GET", "/v1/models/{name}/versions/{version}/parameters", version="1"),
    request("GET", "/v1/models/{name}/versions/{version}/parameters", version="2"),
    request("PUT", "/v1/models/{name}/aliases/{alias}", alias="candidate", body={"version": 2}),
    request("DELETE", "/v1/models/{name}/aliases/{alias}", name="scratch", alias="a", status=204),
    request("DELETE", "/v1/models/{name}/versions/{version}", name="scratch", version="1"),
    request("DELETE", "/v1/models/{name}", name="scratch"),
    request("POST", "/v1/models", body=TRAIN_LINE_9, status=201),
    request("POST", "/v1/model-selection", body=SELECTION),
    request("GET", "/v1/jobs", query={"kind": "training", "limit": 2}),
    request("GET", "/v1/jobs/{job_id}", job_id="latest"),
    request("DELETE", "/v1/jobs/{job_id}", job_id="running"),
    request("POST", "/v1/models/{name}/predict", name="line-8", body=VALID),
    request("POST", "/v1/models/{name}/versions/{version}/predict", version="1", body=VALID),
    request("POST", "/v1/models/{name}/predict_proba", body=VALID),
    request("POST", "/v1/models/{name}/versions/{version}/predict_proba", version="2", body=VALID),
    request("POST", "/v1/models/{name}/transform", name="line-8", body=VALID),
    request("POST", "/v1/models/{name}/versions/{version}/transform", version="1", body=VALID),
    request("POST", "/v1/models/{name}/score_samples", body=VALID),
    request("POST", "/v1/models/{name}/versions/{version}/score_samples", body=VALID),
    request("POST", "/v1/models/{name}/score", name="line-8", body=VALID),
    request("POST", "/v1/models/{name}/versions/{version}/score", version="2", body=VALID),
    request("POST", "/v1/models/{name}/anomalies", body=VALID | {"contamination": 0.1}),
    request(
        "POST",
        "/v1/models/{name}/versions/{version}/anomalies",
        version="1",
        body=VALID | {"threshold": 1.0},
    ),
    request("POST", "/v1/models/{name}/sample", body={"n_samples": 3, "random_state": 0}),
    request("POST", "/v1/models/{name}/versions/{version}/sample", version="2"),
    request("POST", "/v1/models/{name}/bic", body=VALID),
    request("POST", "/v1/models/{name}/versions/{version}/bic"),
    request("POST", "/v1/models/{name}/aic", body=VALID),
    request("POST", "/v1/models/{name}/versions/{version}/aic", version="2"),
]


def train_scratch() -> None:
    with schemathesis.python.asgi.get_client(APP) as client:
        client.delete("/v1/models/scratch")
        response = client.post("/v1/models", json=TRAIN_LINE_9 | {"name": "scratch"})
        assert response.status_code == 201, response.text
        response = client.put("/v1/models/scratch/aliases/a", json={"version": 1})
        assert response.status_code == 200, response.text


def job_id(which: str) -> str:
    """The id of the latest job, or of a job started now that is still running."""
    with schemathesis.python.asgi.get_client(APP) as client:
        if which == "running":
            response = client.post("/v1/model-selection", json=LONG_SELECTION)
            assert response.status_code == 202, response.text
            return response.json()["id"]
        return client.get("/v1/jobs", params={"limit": 1}).json()["items"][0]["id"]


@pytest.mark.parametrize(
    ("method", "path", "path_parameters", "query", "body", "status"), SUCCESSES
)
def test_successful_answers_conform_to_the_schema(
    method, path, path_parameters, query, body, status
):
    if path_parameters.get("name") == "scratch":
        train_scratch()
    if "job_id" in path_parameters:
        path_parameters = path_parameters | {"job_id": job_id(path_parameters["job_id"])}
    extra = {} if body is None else {"body": body}
    case = schema[path][method].Case(path_parameters=path_parameters, query=query, **extra)
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == status, response.text


def test_every_operation_has_a_successful_request():
    documented = {(m.upper(), p) for p, ops in APP.openapi()["paths"].items() for m in ops}
    assert documented == {tuple(param.values[:2]) for param in SUCCESSES}
