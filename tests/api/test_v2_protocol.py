"""The Open Inference Protocol (/v2) against the real app: health, server and model metadata,
readiness, inference of every output of every family in every datatype, JSON (flat, nested,
large) and binary tensor data in and out, versions by number, alias and latest, keys and
scopes, and every bad request answered in the protocol's error shape with a 4xx. Numbers equal
scikit-learn's called directly on the same data (labels exactly, floats within 1e-9)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose
from sklearn.ensemble import IsolationForest

from app.api.v2.schemas import V2InferenceRequest, V2InputParameters
from app.api.v2.wire import WIRE_FIELDS
from app.api_keys import hash_key
from app.main import create_app
from tests.api.contract import BLOBS, CASE_BY_ALGORITHM, MOONS, OPERATIONS, new_rows, training_body
from tests.api.reference import RTOL, Reference
from tests.api.v2_wire import (
    DATATYPE_OF,
    NUMPY,
    binary_request,
    expected,
    outputs_for,
    read_answer,
    request,
)
from tests.conftest import make_settings

KMEANS = CASE_BY_ALGORITHM["kmeans"]
GMM = CASE_BY_ALGORITHM["gaussian_mixture"]
DBSCAN = CASE_BY_ALGORITHM["dbscan"]
KMEANS_4 = {"n_clusters": 4, "random_state": 0}
FOREST = {"n_estimators": 20, "random_state": 0}
CONTAMINATION = 0.02  # the stored one (the default)
# The module's models: name -> (algorithm, params, rows). "line-7" is the name the OpenAPI
# document's examples use: a Gaussian mixture of two features.
MODELS: dict[str, tuple[str, dict[str, Any], np.ndarray]] = {
    "kmeans": ("kmeans", KMEANS.params, BLOBS),
    "line-7": ("gaussian_mixture", GMM.params, BLOBS),
    "dbscan": ("dbscan", DBSCAN.params, MOONS),
    "forest": ("isolation_forest", FOREST, BLOBS),
}
ROWS = {name: new_rows(X) for name, (_, _, X) in MODELS.items()}
ERROR_TYPE = "application/json"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app with a model of each family; "kmeans" has two versions (1: k=3, alias
    "production"; 2: k=4)."""
    settings = make_settings(tmp_path_factory.mktemp("v2"))
    with TestClient(create_app(settings)) as client:
        for name, (algorithm, params, X) in MODELS.items():
            body = training_body(
                name=name, algorithm=algorithm, params=params, data={"instances": X.tolist()}
            )
            assert client.post("/v1/models", json=body).status_code == 201
        again = training_body(name="kmeans", params=KMEANS_4, data={"instances": BLOBS.tolist()})
        assert client.post("/v1/models", json=again).status_code == 201
        assert client.put("/v1/models/kmeans/aliases/production", json={"version": 1}).is_success
        yield client


class Forest:
    """scikit-learn's IsolationForest fitted on the same rows, as a Reference answers."""

    def __init__(self) -> None:
        self.estimator = IsolationForest(**FOREST).fit(BLOBS)
        self.train = -self.estimator.score_samples(BLOBS)

    def answer(self, operation: str, body: dict[str, Any], *, stored_contamination: float):
        X = np.asarray(body["instances"], dtype=np.float64)
        if operation == "score_samples":
            return {"scores": self.estimator.score_samples(X)}
        scores = -self.estimator.score_samples(X)
        threshold = body.get("threshold")
        if threshold is None:
            share = body.get("contamination", stored_contamination)
            threshold = float(np.quantile(self.train, 1.0 - share))
        return {
            "anomaly_scores": scores,
            "is_anomaly": scores > threshold,
            "percentiles": np.array([100.0 * np.mean(self.train < s) for s in scores]),
        }


@pytest.fixture(scope="module")
def references(fitted) -> dict[str, Any]:
    return {
        "kmeans": fitted(KMEANS),
        "line-7": fitted(GMM),
        "dbscan": fitted(DBSCAN),
        "forest": Forest(),
        "kmeans-4": Reference.fit(type(KMEANS)("kmeans", KMEANS_4, BLOBS)),
    }


def infer(client: TestClient, name: str, body: Any, *, version: str | None = None, **kwargs):
    url = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    if isinstance(body, dict | list):
        return client.post(url, json=body, **kwargs)
    return client.post(url, content=body, **kwargs)


def assert_values(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.dtype.kind in "iub":
        assert got.tolist() == want.tolist(), what
    else:
        assert_allclose(got, want, rtol=RTOL, atol=0, err_msg=what)


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """The protocol's error object, with ``status``, and a message naming ``fragments``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == ERROR_TYPE
    document = response.json()
    assert set(document) == {"error"} and isinstance(document["error"], str), document
    for fragment in fragments:
        assert fragment in document["error"], document["error"]
    return document["error"]


# -- health and metadata -----------------------------------------------------------------------
def test_health_and_server_metadata(served: TestClient) -> None:
    assert served.get("/v2/health/live").json() == {"live": True}
    assert served.get("/v2/health/ready").json() == {"ready": True}
    metadata = served.get("/v2")
    assert metadata.status_code == 200
    assert metadata.json() == {
        "name": "lloyd",
        "version": served.app.version,
        "extensions": ["binary_tensor_data"],
    }


EXPECTED_OUTPUTS = {
    "kmeans": [
        ("predict", "INT64", [-1, 1]),
        ("transform", "FP64", [-1, 4]),
        ("score", "FP64", [1]),
        ("anomaly_scores", "FP64", [-1, 1]),
        ("is_anomaly", "BOOL", [-1, 1]),
        ("percentiles", "FP64", [-1, 1]),
    ],
    "line-7": [
        ("predict", "INT64", [-1, 1]),
        ("predict_proba", "FP64", [-1, 3]),
        ("classes", "INT64", [3]),
        ("score_samples", "FP64", [-1, 1]),
        ("score", "FP64", [1]),
        ("anomaly_scores", "FP64", [-1, 1]),
        ("is_anomaly", "BOOL", [-1, 1]),
        ("percentiles", "FP64", [-1, 1]),
        ("bic", "FP64", [1]),
        ("aic", "FP64", [1]),
    ],
    "forest": [
        ("score_samples", "FP64", [-1, 1]),
        ("anomaly_scores", "FP64", [-1, 1]),
        ("is_anomaly", "BOOL", [-1, 1]),
        ("percentiles", "FP64", [-1, 1]),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUTS))
def test_model_metadata_lists_its_input_outputs_and_versions(served: TestClient, name) -> None:
    metadata = served.get(f"/v2/models/{name}").json()
    assert metadata["name"] == name
    assert metadata["platform"] == "scikit-learn"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 2]}]
    outputs = [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]]
    assert outputs == EXPECTED_OUTPUTS[name]
    default = "is_anomaly" if name == "forest" else "predict"
    assert metadata["parameters"]["default_output"] == default
    assert metadata["parameters"]["algorithm"] == MODELS[name][0]


def test_model_metadata_of_numbered_and_aliased_versions(served: TestClient) -> None:
    latest = served.get("/v2/models/kmeans").json()
    assert latest["versions"] == ["1", "2", "production"]
    assert latest["parameters"]["version"] == "2"
    for ref, number, k in (
        ("1", "1", 3),
        ("production", "1", 3),
        ("2", "2", 4),
        ("latest", "2", 4),
    ):
        metadata = served.get(f"/v2/models/kmeans/versions/{ref}").json()
        assert metadata["parameters"]["version"] == number, ref
        assert metadata["outputs"][1] == {"name": "transform", "datatype": "FP64", "shape": [-1, k]}
        assert metadata["versions"] == latest["versions"]


def test_model_readiness(served: TestClient) -> None:
    for path in ("kmeans", "kmeans/versions/1", "kmeans/versions/production", "forest"):
        response = served.get(f"/v2/models/{path}/ready")
        assert response.status_code == 200, path
        assert response.json() == {"name": path.split("/")[0], "ready": True}
    assert_error(served.get("/v2/models/nope/ready"), 404, "nope")
    assert_error(served.get("/v2/models/kmeans/versions/7/ready"), 404, "no version 7")
    assert_error(served.get("/v2/models/kmeans/versions/staging/ready"), 404, "staging")


@pytest.mark.parametrize(
    "path", ["/v2/models/nope", "/v2/models/kmeans/versions/3", "/v2/models/kmeans/versions/x"]
)
def test_metadata_of_what_does_not_exist_is_a_404(served: TestClient, path: str) -> None:
    assert_error(served.get(path), 404)


# -- inference: every output, against scikit-learn ---------------------------------------------
ALGORITHM_OPERATIONS = OPERATIONS | {"isolation_forest": ["score_samples", "anomalies"]}
CALLS = [
    (name, output)
    for name, (algorithm, _, _) in MODELS.items()
    for output in outputs_for(ALGORITHM_OPERATIONS[algorithm])
]


@pytest.mark.parametrize(("name", "output"), CALLS, ids=[f"{n}-{o}" for n, o in CALLS])
def test_every_output_equals_scikit_learn(served, references, name: str, output: str) -> None:
    X = ROWS[name]
    document, arrays = read_answer(infer(served, name, request(X, [output], id="row-1")))
    assert document["model_name"] == name
    assert document["model_version"] == ("2" if name == "kmeans" else "1")
    assert document["id"] == "row-1"
    reference = references["kmeans-4" if name == "kmeans" else name]
    assert_values(arrays[output], expected(reference, output, X), output)
    [tensor] = document["outputs"]
    assert tensor["datatype"] == DATATYPE_OF.get(output, "FP64")
    assert tensor["parameters"] == {"content_type": "np"}


def test_several_outputs_in_the_order_asked(served, references) -> None:
    X = ROWS["line-7"]
    names = ["percentiles", "predict_proba", "predict", "is_anomaly", "classes", "score"]
    document, arrays = read_answer(infer(served, "line-7", request(X, names)))
    assert [o["name"] for o in document["outputs"]] == names
    for output in names:
        assert_values(arrays[output], expected(references["line-7"], output, X), output)
    # The anomalies' single values go to the answer's parameters.
    assert document["parameters"]["threshold_source"] == "stored"
    assert document["parameters"]["contamination"] == CONTAMINATION
    assert document["parameters"]["score_direction"] == "higher is more anomalous"


def test_without_outputs_predict_or_a_detectors_is_anomaly(served, references) -> None:
    for name, output in (("kmeans", "predict"), ("dbscan", "predict"), ("forest", "is_anomaly")):
        X = ROWS[name]
        _document, arrays = read_answer(infer(served, name, request(X)))
        assert list(arrays) == [output]
        reference = references["kmeans-4" if name == "kmeans" else name]
        assert_values(arrays[output], expected(reference, output, X), name)


@pytest.mark.parametrize(
    ("options", "source"),
    [({"contamination": 0.25}, "contamination"), ({"threshold": 0.5}, "threshold")],
)
def test_threshold_parameters(served, references, options, source) -> None:
    for name in ("line-7", "forest", "dbscan"):
        X = ROWS[name]
        body = request(X, ["is_anomaly", "anomaly_scores"], parameters=options)
        document, arrays = read_answer(infer(served, name, body))
        want = expected(references[name], "is_anomaly", X, **options)
        assert_values(arrays["is_anomaly"], want, name)
        assert document["parameters"]["threshold_source"] == source
        if source == "threshold":
            assert document["parameters"]["threshold"] == options["threshold"]


def test_versions_by_number_alias_and_latest(served, references) -> None:
    X = ROWS["kmeans"]
    for ref, number, reference in (
        (None, "2", "kmeans-4"),
        ("latest", "2", "kmeans-4"),
        ("2", "2", "kmeans-4"),
        ("1", "1", "kmeans"),
        ("production", "1", "kmeans"),
    ):
        response = infer(served, "kmeans", request(X, ["transform"]), version=ref)
        document, arrays = read_answer(response)
        assert document["model_version"] == number, ref
        assert_values(arrays["transform"], expected(references[reference], "transform", X), ref)


def test_the_id_is_echoed_or_the_request_id(served) -> None:
    response = infer(served, "kmeans", request(ROWS["kmeans"]))
    assert read_answer(response)[0]["id"] == response.headers["x-request-id"]
    response = infer(served, "kmeans", request(ROWS["kmeans"]), headers={"X-Request-ID": "r-9"})
    assert read_answer(response)[0]["id"] == "r-9"


# -- datatypes, layouts, sizes ------------------------------------------------------------------
INTEGER_ROWS = np.array([[0, 1], [3, 4], [-2, 7], [9, 9], [1, -1]])
DATATYPES = ["FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8"]
UNSIGNED = ["UINT64", "UINT32", "UINT16", "UINT8"]


def rows_of(datatype: str) -> np.ndarray:
    """Rows the datatype holds, and the float64 values the model sees."""
    if datatype.startswith("FP"):
        return ROWS["line-7"].astype(NUMPY[datatype])
    return np.abs(INTEGER_ROWS) if datatype.startswith("U") else INTEGER_ROWS


@pytest.mark.parametrize("datatype", DATATYPES + UNSIGNED)
@pytest.mark.parametrize("wire", ["flat", "nested", "binary"])
def test_every_datatype_and_layout(served, references, datatype: str, wire: str) -> None:
    X = rows_of(datatype)
    outputs = ["predict_proba", "score_samples"]
    if wire == "binary":
        content, headers = binary_request(X, outputs, datatype=datatype)
        response = infer(served, "line-7", content, headers=headers)
    else:
        body = request(X, outputs, datatype=datatype, nested=wire == "nested")
        response = infer(served, "line-7", body)
    _, arrays = read_answer(response)
    seen = np.asarray(X).astype(NUMPY[datatype]).astype(np.float64)
    for output in outputs:
        assert_values(arrays[output], expected(references["line-7"], output, seen), output)


@pytest.mark.parametrize("rows", [3_000, 40_000], ids=["64-KiB", "1-MiB"])
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_large_json_equals_binary_and_scikit_learn(served, references, rows, nested) -> None:
    X = np.random.default_rng(rows).normal(0.0, 3.0, size=(rows, 2))
    body = json.dumps(request(X, ["predict", "percentiles"], nested=nested)).encode()
    assert len(body) > (1 << 16 if rows < 10_000 else 1 << 20)
    _, as_json = read_answer(infer(served, "line-7", body))
    content, headers = binary_request(X, ["predict", "percentiles"], binary_outputs=True)
    _, as_binary = read_answer(infer(served, "line-7", content, headers=headers))
    for output in ("predict", "percentiles"):
        assert_values(as_json[output], expected(references["line-7"], output, X), output)
        assert as_json[output].tobytes() == as_binary[output].tobytes()


LARGE = 20_000
WRONG_LARGE = [
    ("string", [15_001, 2], "[" + "1.5," * 30_001 + '"x"]', "got `str`"),
    (
        "ragged",
        [LARGE + 2, 2],
        "[[1.5, 2.5, 3.5]," + "[1.5, 2.5]," * LARGE + "[1.5]]",
        "do not match shape",
    ),
    ("deeper", [LARGE + 1, 2], "[" + "[1.5, [2.5]]," * LARGE + "[1.5, 2.5]]", "got `array`"),
]


@pytest.mark.parametrize(
    ("shape", "data", "fragment"), [w[1:] for w in WRONG_LARGE], ids=[w[0] for w in WRONG_LARGE]
)
def test_large_json_that_is_wrong_is_refused_as_a_small_one(served, shape, data, fragment) -> None:
    """Large data are read by simdjson when certainly right, else as small ones are."""
    body = f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "FP64", "data": {data}}}]}}'
    assert len(body) > 1 << 16
    assert_error(infer(served, "line-7", body.encode()), 400, fragment)


def test_large_float32_json_beyond_its_range_is_refused(served) -> None:
    values = [1.5] * 39_999 + [1e39]  # a float64, not a float32
    body = request(np.zeros((20_000, 2)), datatype="FP32")
    body["inputs"][0]["data"] = values
    assert_error(infer(served, "line-7", json.dumps(body).encode()), 400, "finite")


def test_whitespace_in_data_is_json(served, references) -> None:
    X = ROWS["line-7"]
    rows = ",".join("[" + " " * 70 + f"{a!r}, {b!r}]" for a, b in X.tolist())
    data = "[" + " " * 100 + "\n" + rows + "]"
    tensor = f'{{"name": "x", "shape": {list(X.shape)}, "datatype": "FP64", "data": {data}}}'
    body = f'{{"inputs": [{tensor}]}}'
    _, arrays = read_answer(infer(served, "line-7", body.encode()))
    assert_values(arrays["predict"], expected(references["line-7"], "predict", X))


# -- binary tensor data ------------------------------------------------------------------------
def test_binary_in_and_out_is_the_json_answer(served) -> None:
    X = ROWS["line-7"]
    names = ["predict", "predict_proba", "is_anomaly", "score"]
    as_json, json_arrays = read_answer(infer(served, "line-7", request(X, names)))
    content, headers = binary_request(X, names, binary_outputs=True)
    response = infer(served, "line-7", content, headers=headers)
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    document, arrays = read_answer(response)
    assert len(response.content) == length + sum(
        o["parameters"]["binary_data_size"] for o in document["outputs"]
    )
    for output in document["outputs"]:
        assert "data" not in output
        assert output["parameters"]["binary_data_size"] == arrays[output["name"]].nbytes
    for name in names:
        assert arrays[name].dtype == json_arrays[name].dtype
        assert arrays[name].tobytes() == json_arrays[name].tobytes(), name
    assert {k: v for k, v in document.items() if k not in ("outputs", "id")} == {
        k: v for k, v in as_json.items() if k not in ("outputs", "id")
    }


def test_binary_data_output_and_the_outputs_own_choice(served) -> None:
    X = ROWS["kmeans"]
    # Every output binary by the request's parameter, but one that says otherwise.
    body = request(X, parameters={"binary_data_output": True})
    body["outputs"] = [
        {"name": "predict"},
        {"name": "transform", "parameters": {"binary_data": False}},
    ]
    document, _ = read_answer(infer(served, "kmeans", body))
    predict, transform = document["outputs"]
    assert "data" not in predict and "binary_data_size" in predict["parameters"]
    assert "data" in transform and "binary_data_size" not in transform["parameters"]
    # No outputs named, binary_data_output: the default output, binary (tritonclient's way).
    content, headers = binary_request(X, parameters={"binary_data_output": True})
    document, _arrays = read_answer(infer(served, "kmeans", content, headers=headers))
    assert [o["name"] for o in document["outputs"]] == ["predict"]
    assert "binary_data_size" in document["outputs"][0]["parameters"]
    # JSON input, binary output; binary input, JSON output.
    body = request(X, ["predict"])
    body["outputs"][0]["parameters"] = {"binary_data": True}
    _, binary_out = read_answer(infer(served, "kmeans", body))
    content, headers = binary_request(X, ["predict"])
    response = infer(served, "kmeans", content, headers=headers)
    assert response.headers["content-type"] == "application/json"
    assert read_answer(response)[1]["predict"].tolist() == binary_out["predict"].tolist()


# -- keys and scopes ---------------------------------------------------------------------------
READER, WRITER = "v2-reader-key", "v2-writer-key"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    keys = f"{hash_key(READER)}:read,{hash_key(WRITER)}:write"
    settings = make_settings(tmp_path_factory.mktemp("v2-keyed"), api_keys=keys)
    with TestClient(create_app(settings)) as client:
        body = training_body(name="m", params={"n_clusters": 2, "n_init": 1})
        assert client.post("/v1/models", json=body, headers=bearer(WRITER)).status_code == 201
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


KEYED_CALLS = [
    ("GET", "/v2", None),
    ("GET", "/v2/models/m", None),
    ("GET", "/v2/models/m/versions/1", None),
    ("GET", "/v2/models/m/ready", None),
    ("GET", "/v2/models/m/versions/1/ready", None),
    ("POST", "/v2/models/m/infer", request(BLOBS[:2])),
    ("POST", "/v2/models/m/versions/latest/infer", request(BLOBS[:2])),
    ("GET", "/v2/models/unknown", None),  # no 404 tells a stranger which names exist
    ("POST", "/v2/models/unknown/infer", {"not": "even valid"}),
]


@pytest.mark.parametrize(("method", "path", "body"), KEYED_CALLS)
def test_keys_and_scopes_as_on_v1(keyed: TestClient, method, path, body) -> None:
    def call(headers: dict[str, str]) -> httpx.Response:
        return keyed.request(method, path, json=body, headers=headers)

    response = call({})
    assert_error(response, 401, "API key")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_error(call(bearer("not-a-key")), 401, "not valid")
    assert_error(call(bearer(WRITER)), 403, "'read' scope")
    allowed = call(bearer(READER))
    assert allowed.status_code == (404 if "unknown" in path else 200), allowed.text


def test_health_is_open_with_keys(keyed: TestClient) -> None:
    assert keyed.get("/v2/health/live").status_code == 200
    assert keyed.get("/v2/health/ready").status_code == 200


# -- bad requests: the protocol's error object, a 4xx, never a 5xx ------------------------------
def body_with(**input_fields: Any) -> dict[str, Any]:
    tensor = {"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}
    return {"inputs": [tensor | input_fields]}


GOOD = body_with()
SIZED = {"parameters": {"binary_data_size": 32}}
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("1-D shape", body_with(shape=[4]), "[rows, features]"),
    ("3-D shape", body_with(shape=[1, 2, 2]), "[rows, features]"),
    ("no rows", body_with(shape=[0, 2], data=[]), "at least one row"),
    ("negative shape", body_with(shape=[-2, 2]), "at least one row"),
    ("width", body_with(shape=[1, 4]), "trained on 2"),
    ("BOOL", body_with(datatype="BOOL", data=[True, False, True, False]), "'BOOL'"),
    ("BYTES", body_with(datatype="BYTES", data=["a", "b", "c", "d"]), "'BYTES'"),
    ("unknown datatype", body_with(datatype="FLOAT64"), "'FLOAT64'"),
    ("too few values", body_with(data=[1.0, 2.0, 3.0]), "needs 4"),
    ("too many values", body_with(data=[1.0, 2.0, 3.0, 4.0, 5.0]), "needs 4"),
    ("ragged rows", body_with(data=[[1.0, 2.0, 3.0], [4.0]]), "do not match shape"),
    ("rows for another shape", body_with(data=[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), "shape"),
    ("deeper nesting", body_with(data=[[[1.0, 2.0]], [[3.0, 4.0]]]), "got `array`"),
    ("a string", body_with(data=[1.0, "2", 3.0, 4.0]), "got `str`"),
    ("a boolean", body_with(data=[1.0, True, 3.0, 4.0]), "got `bool`"),
    ("null", body_with(data=[1.0, None, 3.0, 4.0]), "got `null`"),
    ("data not an array", body_with(data={"a": 1}), "array"),
    ("no data", {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64"}]}, "no data"),
    ("INT32 of floats", body_with(datatype="INT32", data=[1, 2.5, 3, 4]), "integers"),
    ("INT8 out of range", body_with(datatype="INT8", data=[1, 200, 3, 4]), "range of INT8"),
    ("UINT8 negative", body_with(datatype="UINT8", data=[1, -1, 3, 4]), "range of UINT8"),
    ("INT64 beyond", body_with(datatype="INT64", data=[1, 2**64, 3, 4]), "range of INT64"),
    ("FP32 beyond", body_with(datatype="FP32", data=[1.0, 1e39, 3.0, 4.0]), "finite"),
    ("FP16 beyond", body_with(datatype="FP16", data=[1.0, 70000.0, 3.0, 4.0]), "finite"),
    ("no inputs", {"inputs": []}, "one input"),
    ("inputs missing", {"outputs": [{"name": "predict"}]}, "inputs"),
    ("two inputs", {"inputs": GOOD["inputs"] * 2}, "one input"),
    ("no name", {"inputs": [{"shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, "name"),
    ("shape of strings", body_with(shape=["2", "2"]), "shape"),
    ("unknown output", GOOD | {"outputs": [{"name": "labels"}]}, "no output 'labels'"),
    ("unsupported output", GOOD | {"outputs": [{"name": "predict_proba"}]}, "no output"),
    ("sample", GOOD | {"outputs": [{"name": "sample"}]}, "no output 'sample'"),
    ("output twice", GOOD | {"outputs": [{"name": "score"}, {"name": "score"}]}, "twice"),
    ("unknown parameter", GOOD | {"parameters": {"priority": 1}}, "priority"),
    ("contamination range", GOOD | {"parameters": {"contamination": 0.9}}, "contamination"),
    ("contamination string", GOOD | {"parameters": {"contamination": "0.1"}}, "contamination"),
    (
        "both thresholds",
        GOOD | {"parameters": {"contamination": 0.1, "threshold": 1.0}},
        "at most one",
    ),
    ("threshold for predict", GOOD | {"parameters": {"threshold": 1.0}}, "anomaly_scores"),
    ("binary_data_output not bool", GOOD | {"parameters": {"binary_data_output": 1}}, "bool"),
    (
        "binary_data not bool",
        GOOD | {"outputs": [{"name": "predict", "parameters": {"binary_data": "yes"}}]},
        "bool",
    ),
    ("unknown input parameter", body_with(parameters={"shm_region": "a"}), "shm_region"),
    (
        "classification",
        GOOD | {"outputs": [{"name": "predict", "parameters": {"classification": 3}}]},
        "classification",
    ),
    (
        "binary size without binary data",
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64"} | SIZED]},
        "the body holds 0 bytes",
    ),
    ("parameters not an object", GOOD | {"parameters": [1]}, "parameters"),
    ("an array", [GOOD], "object"),
    ("null body", b"null", "object"),
]


@pytest.mark.parametrize(("label", "body", "fragment"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_requests_get_the_protocols_400(served, label, body, fragment) -> None:
    assert_error(infer(served, "kmeans", body), 400, fragment)
    assert_error(infer(served, "kmeans", body, version="1"), 400, fragment)


@pytest.mark.parametrize(
    "content",
    [b"{", b"", b"\xff\xfe", b'{"inputs": [NaN]}', b"[1, 2", b'{"inputs": [{"data": Infinity}]}'],
    ids=["truncated", "empty", "not utf-8", "NaN", "unclosed", "Infinity"],
)
def test_bad_json_gets_a_400(served, content: bytes) -> None:
    assert_error(infer(served, "kmeans", content), 400)


def test_non_finite_binary_values_get_a_400(served) -> None:
    for value in (np.nan, np.inf, -np.inf):
        X = np.array([[1.0, 2.0], [value, 3.0]])
        content, headers = binary_request(X)
        assert_error(infer(served, "kmeans", content, headers=headers), 400, "finite")
    X = np.array([[1.0, 2.0], [np.inf, 3.0]], dtype=np.float32)
    content, headers = binary_request(X, datatype="FP32")
    assert_error(infer(served, "kmeans", content, headers=headers), 400, "finite")


def binary_with(size: Any, binary: bytes, length: str | bytes | None = None, **extra: Any):
    parameters = {} if size is None else {"parameters": {"binary_data_size": size}}
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64"} | parameters | extra]}
    ).encode()
    headers = (
        {} if length == "none" else {"Inference-Header-Content-Length": length or str(len(header))}
    )
    return header + binary, headers


DATA = np.arange(4.0).tobytes()
BAD_BINARY = [
    ("size too small", *binary_with(24, DATA), "binary_data_size is 24"),
    ("size too large", *binary_with(40, DATA), "binary_data_size is 40"),
    ("size not of the shape", *binary_with(24, DATA[:24]), "needs 32"),
    ("size negative", *binary_with(-8, DATA), "binary_data_size"),
    ("size a string", *binary_with("32", DATA), "binary_data_size"),
    ("bytes but no size", *binary_with(None, DATA), "no binary_data_size"),
    ("size and data", *binary_with(32, DATA, data=[1.0, 2.0, 3.0, 4.0]), "no data in JSON"),
    ("no header length", *binary_with(32, DATA, "none"), ""),
    ("header length beyond the body", *binary_with(32, DATA, "100000"), "between 1 and"),
    ("header length zero", *binary_with(32, DATA, "0"), "between 1 and"),
    ("header length not a number", *binary_with(32, DATA, "twelve"), "Inference-Header"),
    ("header length not ASCII", *binary_with(32, DATA, b"\xb2"), "Inference-Header"),
    ("header length cuts the JSON", *binary_with(32, DATA, "10"), "JSON"),
]


@pytest.mark.parametrize(
    ("label", "content", "headers", "fragment"), BAD_BINARY, ids=[b[0] for b in BAD_BINARY]
)
def test_bad_binary_data_gets_a_400(served, label, content, headers, fragment) -> None:
    assert_error(infer(served, "kmeans", content, headers=headers), 400, fragment)


def test_unknown_models_versions_and_paths(served) -> None:
    assert_error(infer(served, "nope", GOOD), 404, "nope")
    assert_error(infer(served, "kmeans", GOOD, version="9"), 404, "no version 9")
    assert_error(infer(served, "kmeans", GOOD, version="staging"), 404, "staging")
    assert_error(served.get("/v2/models/kmeans/infer"), 405)
    assert_error(served.get("/v2/repository/index"), 404)
    assert_error(served.delete("/v2"), 405)


def test_a_compressed_body_is_refused(served) -> None:
    content = gzip.compress(json.dumps(GOOD).encode())
    response = infer(served, "kmeans", content, headers={"Content-Encoding": "gzip"})
    assert_error(response, 415, "Content-Encoding")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("v2-limits"), max_body_bytes=4096, max_inference_rows=5
    )
    with TestClient(create_app(settings)) as client:
        body = training_body(name="m", params={"n_clusters": 2, "n_init": 1})
        body["data"] = {"instances": BLOBS[:40].tolist()}
        assert client.post("/v1/models", json=body).status_code == 201
        yield client


def test_limits_answer_413_in_the_protocols_shape(limited: TestClient) -> None:
    assert_error(infer(limited, "m", request(BLOBS[:6])), 413, "LLOYD_MAX_INFERENCE_ROWS")
    big = json.dumps(request(BLOBS[:300])).encode()
    assert_error(infer(limited, "m", big), 413, "LLOYD_MAX_BODY_BYTES")  # declared length
    streamed = infer(limited, "m", iter([big[:3000], big[3000:]]))  # no length: as it arrives
    assert_error(streamed, 413, "LLOYD_MAX_BODY_BYTES")
    assert read_answer(infer(limited, "m", request(BLOBS[:5])))[1]["predict"].shape == (5, 1)
    # /v1 keeps its problem documents.
    problem = limited.post("/v1/models/m/predict", content=big)
    assert problem.status_code == 413
    assert problem.headers["content-type"] == "application/problem+json"


def test_an_error_is_logged_once(served, caplog) -> None:
    with caplog.at_level("INFO", logger="app.errors"):
        infer(served, "kmeans", body_with(shape=[1, 4]))
    logged = [r for r in caplog.records if r.name == "app.errors"]
    assert len(logged) == 1 and logged[0].getMessage().startswith("400 invalid_input")


# -- the OpenAPI document ----------------------------------------------------------------------
def test_the_openapi_document_shows_the_protocol(served) -> None:
    document = served.get("/openapi.json").json()
    paths = {p: ops for p, ops in document["paths"].items() if p.startswith("/v2")}
    assert set(paths) == {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
    for path, operations in paths.items():
        for operation in operations.values():
            assert operation["tags"] == ["open inference protocol v2"], path
            assert ("security" in operation) == ("/health/" not in path), path
            for status, response in operation["responses"].items():
                if status[0] == "4" and response.get("content"):
                    assert list(response["content"]) == ["application/json"], (path, status)
                    schema = response["content"]["application/json"]["schema"]["$ref"]
                    assert schema.endswith(("V2ErrorResponse", "V2Ready")), (path, status)
    infer_post = paths["/v2/models/{name}/infer"]["post"]
    assert set(infer_post["requestBody"]["content"]) == {
        "application/json",
        "application/octet-stream",
    }
    assert set(infer_post["responses"]["200"]["content"]) == {
        "application/json",
        "application/octet-stream",
    }


def test_the_documented_examples_run_as_they_are(served) -> None:
    examples = V2InferenceRequest.model_json_schema()["examples"]
    assert len(examples) == 3
    for example in examples:
        _document, arrays = read_answer(infer(served, "line-7", example))
        names = [o["name"] for o in example.get("outputs", [{"name": "predict"}])]
        assert list(arrays) == names


def test_the_wire_reads_the_fields_the_document_shows() -> None:
    assert WIRE_FIELDS["request"] == set(V2InferenceRequest.model_fields)
    assert WIRE_FIELDS["input"] == {"name", "shape", "datatype", "parameters", "data"}
    assert set(V2InputParameters.model_fields) == {"binary_data_size", "content_type"}


def test_fields_the_protocol_does_not_know_are_ignored(served, references) -> None:
    body = request(ROWS["kmeans"], ["predict"], model_name="kmeans")
    body["inputs"][0]["parameters"] = {"content_type": "np"}
    body["parameters"] = {"content_type": "np"}
    _, arrays = read_answer(infer(served, "kmeans", body))
    assert_values(arrays["predict"], expected(references["kmeans-4"], "predict", ROWS["kmeans"]))
