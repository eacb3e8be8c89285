"""Schemathesis over every operation of /openapi.json of the real app, open and with API keys:
no 5xx, and every response as documented (status code, content type and body). Without a key,
or with a read-only key, only the documented 401 and 403 problems. A stateful run chains a
training to the operations on the version it created. The generated requests call every
operation and get successes from the main ones, not only refusals."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import secrets
import shutil
import tempfile
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import get_client, shutdown_lifespans
from sklearn.datasets import make_blobs

from app.api_keys import hash_key
from app.errors import ModelNotFound
from app.main import create_app
from app.ml.catalog import ALGORITHMS
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
VALID_ROWS = [[0.5, 1.5], [-2.0, 3.0], [10.0, -4.0]]
# The same rows as an Open Inference Protocol request (/v2), for the model's default output.
V2_TENSOR = {"name": "input-0", "shape": [3, 2], "datatype": "FP64"}
V2_BODY = {"inputs": [V2_TENSOR | {"data": [value for row in VALID_ROWS for value in row]}]}
ROW_OPERATIONS = {"predict", "predict_proba", "transform", "score_samples", "score", "anomalies"}
ROW_OPERATIONS |= {"bic", "aic"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
READ_WRITE_KEY, READ_KEY = "schemathesis-read-write", "schemathesis-read-only"
API_KEYS = f"{hash_key(READ_WRITE_KEY)}:read+write,{hash_key(READ_KEY)}:read"
READ_WRITE = {"Authorization": f"Bearer {READ_WRITE_KEY}"}

# Schemathesis parametrizes at collection, so the apps are built at import: only built, since
# create_app opens nothing; their folders are created by the lifespans (which schemathesis runs
# once per app) and removed after the module.
# (schemathesis.pytest.from_fixture would allow a per-test app, but fails on pytest 9.)
FOLDER = Path(tempfile.gettempdir()) / f"lloyd-schemathesis-{uuid.uuid4().hex}"
OPEN_APP = create_app(make_settings(FOLDER / "open"))
KEYED_APP = create_app(make_settings(FOLDER / "keyed", api_keys=API_KEYS))

# Status codes per pass and operation, as generated requests got them.
CALLS: defaultdict[str, defaultdict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))


def config(max_examples: int, seed: int = 20261123, **phases: Any) -> SchemathesisConfig:
    """A fixed seed, so that CI runs the same requests every time (the fuzz passes below add
    others). The two operations that fit
    models in a worker process get their examples and a few generated requests, without the
    coverage phase, whose dozens of valid variations of the examples would each fit models.
    Schemathesis generates no Authorization header of its own (it would drop the one a test
    sends): the tests choose the key."""
    expensive = ["POST /v1/models", "POST /v1/model-selection"]
    return SchemathesisConfig.from_dict(
        {
            "seed": seed,
            "generation": {
                "max-examples": max_examples,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": phases,
            "operations": [
                {
                    "include-name": name,
                    "generation": {"max-examples": 3},
                    "phases": {"coverage": {"enabled": False}},
                }
                for name in expensive
            ],
        }
    )


@functools.cache
def fitted(name: str) -> list[tuple[NewVersion, Any]]:
    """The versions of a known model, fitted once, in this process, by the function a worker
    process runs for a training."""
    out = []
    for algorithm, params in MODELS[name]:
        spec = training.TrainSpec(name=name, algorithm=algorithm, params=params)
        prepared = training.prepare(spec, np.asarray(ROWS, dtype=float), OPEN_APP.state.settings)
        result = fit_for_training(
            algorithm=algorithm,
            params=params,
            preprocessing=[],
            X=prepared.X,
            feature_names=None,
            contamination=spec.contamination,
            refit_without_outliers=False,
        )
        new = training.new_version(prepared, result, description=None, tags={})
        out.append((new, result.model))
    return out


def retrain(app: Any, name: str) -> None:
    """Store a known model from scratch: at the start, and after a generated DELETE removed it,
    a version or an alias, so that later requests still find what the hooks below name.
    (Through the registry: a training through the API starts a worker process, too slow to
    repeat this often.)"""
    registry = app.state.registry
    with contextlib.suppress(ModelNotFound):
        registry.delete_model(name)
    for new, model in fitted(name):
        registry.register(name, new, model)
    if name == "line-7":
        registry.set_alias(name, "production", 1)


@pytest.fixture(scope="module", autouse=True)
def trained_models() -> Iterator[None]:
    for app in (OPEN_APP, KEYED_APP):
        with get_client(app):  # starts the app's lifespan, kept for the module
            for name in MODELS:
                retrain(app, name)
    yield
    shutdown_lifespans()
    shutil.rmtree(FOLDER, ignore_errors=True)


# The algorithm behind each known version reference (the seeded models, as MODELS lists them).
SERVED_BY = {
    ("line-7", "1"): "kmeans",
    ("line-7", "production"): "kmeans",
    ("line-7", "2"): "gaussian_mixture",
    ("line-7", "latest"): "gaussian_mixture",
    ("line-8", "1"): "kmeans",
    ("line-8", "latest"): "kmeans",
}


def flatmap_path_parameters(context, path_parameters: dict[str, Any]) -> st.SearchStrategy:
    """Most generated requests name a model (and a version) that exists and, for an operation
    on a version, one whose algorithm supports it, so that they reach its answers."""
    if not path_parameters or "name" not in path_parameters:
        return st.just(path_parameters)
    if context.operation.path.startswith("/v1/algorithms"):
        known = [{"name": "kmeans"}, {"name": "gaussian_mixture"}]
    else:
        operation = context.operation.path.rsplit("/", 1)[-1]
        known = [
            {"name": name, "version": version}
            for (name, version), algorithm in SERVED_BY.items()
            if operation not in ROW_OPERATIONS | {"sample"}
            or operation in ALGORITHMS[algorithm].operations
        ]
        if "version" not in path_parameters:
            known = [{"name": k["name"]} for k in known if k["version"] == "latest"]
    # Known values first: Hypothesis draws the first element of sampled_from most often.
    return st.sampled_from([*(path_parameters | k for k in known), path_parameters])


def flatmap_body(context, body: Any) -> st.SearchStrategy:
    """Rows of the models' width in most inference bodies, so that generated requests reach the
    operations' answers and not only their 422s (on /v2, their 400s)."""
    operation = context.operation.path.rsplit("/", 1)[-1]
    if operation == "infer" and isinstance(body, dict):
        return st.sampled_from([V2_BODY, {**body, **V2_BODY}, body])
    if operation not in ROW_OPERATIONS or not isinstance(body, dict):
        return st.just(body)
    rows = {"instances": VALID_ROWS}
    return st.sampled_from([rows, {**body, **rows}, body])


# Generated `.npy` bodies go as they are drawn: bytes, mostly not an array at all.
schemathesis.serializer.alias("application/x-npy", "application/octet-stream")


def schema_of(app: Any, openapi: dict[str, Any], configured: SchemathesisConfig, body_hook=None):
    schema = schemathesis.openapi.from_dict(openapi, config=configured)
    schema.app = app  # requests go to the app in-process
    schema.hook("flatmap_path_parameters")(flatmap_path_parameters)
    schema.hook("flatmap_body")(body_hook or flatmap_body)
    return schema


open_schema = schema_of(OPEN_APP, OPEN_APP.openapi(), config(10))
keyed_schema = schema_of(KEYED_APP, KEYED_APP.openapi(), config(10))
# Refusals cost little to check: a few requests per operation, without the coverage phase's
# hundreds of variations.
refused_schema = schema_of(KEYED_APP, KEYED_APP.openapi(), config(3, coverage={"enabled": False}))


def record(pass_name: str, case, response) -> None:
    CALLS[pass_name][case.operation.label][response.status_code] += 1


def after_delete(app: Any, case, response) -> None:
    name = (case.path_parameters or {}).get("name")
    if case.method == "DELETE" and response.status_code < 300 and name in MODELS:
        retrain(app, name)


@open_schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_open_api_conforms_to_its_schema(case):
    """The service without keys: every operation's answers as documented, never a 5xx."""
    response = case.call_and_validate(checks=CHECKS)
    record("open", case, response)
    after_delete(OPEN_APP, case, response)


@keyed_schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_a_read_write_key_conforms_to_its_schema(case):
    """The service with keys, called with a read-write key: the same, and never a 401/403."""
    response = case.call_and_validate(headers=READ_WRITE, checks=CHECKS)
    assert response.status_code not in (401, 403), response.text
    record("read-write key", case, response)
    after_delete(KEYED_APP, case, response)


# Fuzzing beyond the fixed seed: no 5xx from requests drawn with other seeds, two fixed and one
# new every run (LLOYD_FUZZ_SEED sets it, to replay a failure; a failure names its seed).
FUZZ_SEEDS = (7, 20261203, int(os.environ.get("LLOYD_FUZZ_SEED") or secrets.randbits(32)))


def fuzz_test(seed: int) -> Any:
    schema = schema_of(OPEN_APP, OPEN_APP.openapi(), config(4, seed, coverage={"enabled": False}))

    @schema.parametrize()
    @settings(deadline=None, suppress_health_check=list(HealthCheck))
    def test(case: Any) -> None:
        try:
            response = case.call_and_validate(checks=[not_a_server_error])
        except AssertionError as exc:
            raise AssertionError(f"seed {seed} (LLOYD_FUZZ_SEED={seed} replays it): {exc}") from exc
        record(f"fuzz seed {seed}", case, response)
        after_delete(OPEN_APP, case, response)

    test.__doc__ = f"No 5xx from the requests seed {seed} draws, without keys."
    return test


test_no_server_error_first_seed = fuzz_test(FUZZ_SEEDS[0])
test_no_server_error_second_seed = fuzz_test(FUZZ_SEEDS[1])
test_no_server_error_new_seed = fuzz_test(FUZZ_SEEDS[2])


def required_scopes(openapi: dict[str, Any]) -> dict[tuple[str, str], str | None]:
    """The scope each operation needs, as app/main.py and the models router declare it (and
    tests/api/test_auth.py checks): the training and jobs routers, and the models router's
    PUT and DELETE, write; every other operation documented with the bearer scheme reads;
    health and /metrics (LLOYD_METRICS_REQUIRE_KEY off) are open."""
    scopes: dict[tuple[str, str], str | None] = {}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if "security" not in operation or path == "/metrics":
                scope = None
            elif {"training", "jobs"} & set(operation["tags"]) or method in ("put", "delete"):
                scope = "write"
            else:
                scope = "read"
            scopes[(method.upper(), path)] = scope
    return scopes


SCOPES = required_scopes(refused_schema.raw_schema)
# Operations with a body read it only after their key and scope checks.
BODY_AFTER_KEY = [("POST", "/v1/model-selection"), ("PUT", "/v1/models/{name}/aliases/{alias}")]
CREDENTIALS = {"no key": {}, "read-only key": {"Authorization": f"Bearer {READ_KEY}"}}


@refused_schema.parametrize()
@pytest.mark.parametrize("credentials", list(CREDENTIALS))
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_without_a_valid_key_answers_only_401_or_403(case, credentials):
    """No key: 401 from every /v1 and /v2 operation but health; a read-only key: 403 from the
    operations that write; health stays open. Every answer as documented, never a 5xx."""
    response = case.call_and_validate(headers=CREDENTIALS[credentials], checks=CHECKS)
    record(credentials, case, response)
    scope = SCOPES[(case.method.upper(), case.path)]
    if scope is None:
        assert response.status_code not in (401, 403), response.text
    elif credentials != "read-only key":
        assert response.status_code == 401, response.text
        if case.path.startswith("/v2"):  # the Open Inference Protocol's own error object
            assert set(response.json()) == {"error"}, response.text
        else:
            assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"][0].startswith("Bearer")
    elif scope == "write":
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"
        assert response.json()["required_scope"] == "write"
    else:
        assert response.status_code not in (401, 403), response.text
        after_delete(KEYED_APP, case, response)


@pytest.mark.parametrize(("method", "path"), BODY_AFTER_KEY)
def test_a_body_that_is_not_json_gets_403_with_a_read_only_key(method, path):
    with get_client(KEYED_APP) as client:
        response = client.request(
            method,
            path.format(name="line-7", alias="candidate"),
            data=b"\x00",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {READ_KEY}"},
        )
    assert response.status_code == 403, response.text


# -- stateful: train, then work on the version the training created -----------------------------
CHAIN_NAMES = ["chain-a", "chain-b"]
CHAIN_TRAININGS = [
    {"algorithm": "kmeans", "params": {"n_clusters": 2, "n_init": 1, "random_state": 0}},
    {"algorithm": "gaussian_mixture", "params": {"n_components": 2, "random_state": 0}},
    {"algorithm": "dbscan", "params": {"eps": 1.0}},
]
# What a training's answer leads to: the version, and every operation on it.
CHAIN_TARGETS = [
    ("GET", "/v1/models/{name}/versions"),
    ("GET", "/v1/models/{name}/versions/{version}"),
    ("GET", "/v1/models/{name}/versions/{version}/parameters"),
]
CHAIN_TARGETS += [
    ("POST", f"/v1/models/{{name}}/versions/{{version}}/{operation}")
    for operation in sorted(ROW_OPERATIONS | {"sample"})
]


def json_only(operation: dict[str, Any]) -> dict[str, Any]:
    """The operation with its JSON request body only: the chain is about what follows a
    training, the `.npy` bodies get their fuzzing above."""
    operation = copy.deepcopy(operation)
    content = operation.get("requestBody", {}).get("content", {})
    for media_type in [m for m in content if m != "application/json"]:
        del content[media_type]
    parameters = [p for p in operation.get("parameters", []) if p["name"] != "Lloyd-Request"]
    return operation | {"parameters": parameters}


def chained_openapi(openapi: dict[str, Any]) -> dict[str, Any]:
    """The schema restricted to a training and what follows it, with OpenAPI links from the
    training's answer (its ``name`` and ``version``) to each of those operations."""
    training = json_only(openapi["paths"]["/v1/models"]["post"])
    paths: dict[str, dict[str, Any]] = {"/v1/models": {"post": training}}
    links = {}
    for method, path in CHAIN_TARGETS:
        operation = json_only(openapi["paths"][path][method.lower()])
        paths.setdefault(path, {})[method.lower()] = operation
        parameters = {"path.name": "$response.body#/name"}
        if "{version}" in path:
            parameters["path.version"] = "$response.body#/version"
        links[operation["operationId"]] = {
            "operationId": operation["operationId"],
            "parameters": parameters,
        }
    training["responses"]["201"]["links"] = links
    return openapi | {"paths": paths}


def chain_training_bodies(context, body: Any) -> st.SearchStrategy:
    """Valid trainings (of names the seeded models do not use) in most generated ones."""
    if context.operation.label != "POST /v1/models":
        if context.operation.path.rsplit("/", 1)[-1] in ROW_OPERATIONS:
            return st.sampled_from([{"instances": VALID_ROWS}] * 3 + [body])
        return st.just(body)
    valid = st.builds(
        lambda name, spec: {"name": name, **spec, "data": {"instances": ROWS}},
        st.sampled_from(CHAIN_NAMES),
        st.sampled_from(CHAIN_TRAININGS),
    )
    return st.one_of(valid, valid, valid, st.just(body))


chain_schema = schema_of(
    KEYED_APP,
    chained_openapi(KEYED_APP.openapi()),
    config(10, stateful={"inference": {"algorithms": []}, "generation": {"mode": "positive"}}),
    body_hook=chain_training_bodies,
)


class TrainThenUse(chain_schema.as_state_machine()):
    """Schemathesis's state machine over the links above, with the read-write key."""

    def get_call_kwargs(self, case) -> dict[str, Any]:
        return {"headers": READ_WRITE}

    def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
        case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    def step(self, input):
        output = super().step(input)
        chained = input.transition is not None and input.is_applied
        record("stateful, chained" if chained else "stateful", input.case, output.response)
        return output


def test_stateful_training_then_operations_on_its_version():
    """Scenarios of a training, then requests on the version it created (and more trainings),
    with the read-write key; every answer as documented."""
    TrainThenUse.run(
        settings=settings(
            max_examples=8,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # Links carried a trained version's name and number to requests that then succeeded.
    # (Which operations the derandomized exploration reaches, and with rows of the right width,
    # changes with any change of the app, even of a module the schema does not show; that
    # some inference through a link succeeds, not.)
    chained = CALLS["stateful, chained"]
    inference = {f"{m} {p}" for m, p in CHAIN_TARGETS if m == "POST"}
    assert inference & succeeded(chained), chained


def succeeded(calls: dict[str, Counter[int]]) -> set[str]:
    return {label for label, statuses in calls.items() if any(200 <= s < 300 for s in statuses)}


# The main operations: generated requests must get their successes, not only refusals.
MAIN_OPERATIONS = {
    "POST /v1/models",
    "GET /v1/models/{name}/versions",
    "GET /v1/models/{name}/versions/{version}",
    "DELETE /v1/models/{name}",
    "DELETE /v1/models/{name}/versions/{version}",
}
MAIN_OPERATIONS |= {
    f"POST /v1/models/{{name}}{version}/{operation}"
    for operation in (
        "predict",
        "predict_proba",
        "transform",
        "score_samples",
        "anomalies",
        "sample",
    )
    for version in ("", "/versions/{version}")
}
MAIN_OPERATIONS |= {
    "POST /v2/models/{name}/infer",
    "POST /v2/models/{name}/versions/{version}/infer",
    "GET /v2/models/{name}",
}


def test_generated_requests_called_every_operation_and_got_successes():
    """After the passes above (pytest runs a module's tests in order): each called every
    operation of the schema; open and with a read-write key, the main ones succeeded."""
    documented = {f"{m.upper()} {p}" for p, ops in OPEN_APP.openapi()["paths"].items() for m in ops}
    passes = ["open", "read-write key", *CREDENTIALS, *(f"fuzz seed {s}" for s in FUZZ_SEEDS)]
    if not all(CALLS[name] for name in passes):
        pytest.skip("run with the whole module: the schemathesis passes did not all run")
    for name in passes:
        never_called = documented - set(CALLS[name])
        assert not never_called, (name, never_called)
    for name in ("open", "read-write key"):
        never_succeeded = MAIN_OPERATIONS - succeeded(CALLS[name])
        assert not never_succeeded, (name, never_succeeded)


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
    request("GET", "/v2/health/live"),
    request("GET", "/v2/health/ready"),
    request("GET", "/v2"),
    request("GET", "/v2/models/{name}"),
    request("GET", "/v2/models/{name}/versions/{version}", version="production"),
    request("GET", "/v2/models/{name}/ready", name="line-8"),
    request("GET", "/v2/models/{name}/versions/{version}/ready", version="1"),
    request(
        "POST", "/v2/models/{name}/infer", body=V2_BODY | {"outputs": [{"name": "predict_proba"}]}
    ),
    request(
        "POST",
        "/v2/models/{name}/versions/{version}/infer",
        version="1",
        body=V2_BODY | {"id": "k", "outputs": [{"name": "transform"}, {"name": "is_anomaly"}]},
    ),
]


def train_scratch() -> None:
    with get_client(OPEN_APP) as client:
        client.delete("/v1/models/scratch")
        response = client.post("/v1/models", json=TRAIN_LINE_9 | {"name": "scratch"})
        assert response.status_code == 201, response.text
        response = client.put("/v1/models/scratch/aliases/a", json={"version": 1})
        assert response.status_code == 200, response.text


def job_id(which: str) -> str:
    """The id of the latest job, or of a job started now that is still running."""
    with get_client(OPEN_APP) as client:
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
    extra = {} if body is None else {"body": body, "media_type": "application/json"}
    case = open_schema[path][method].Case(path_parameters=path_parameters, query=query, **extra)
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == status, response.text


def test_every_operation_has_a_successful_request():
    documented = {(m.upper(), p) for p, ops in OPEN_APP.openapi()["paths"].items() for m in ops}
    assert documented == {tuple(param.values[:2]) for param in SUCCESSES}
