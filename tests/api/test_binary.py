"""The ``.npy`` content type (app.api.binary): rows posted as NumPy arrays and answers sent as
them give exactly the JSON API's numbers; every array that is not a finite 2-D numeric matrix is
refused without being unpickled; content negotiation; training from ``.npy``; the OpenAPI
document."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans

from app.api.binary import request_fields
from app.errors import InvalidInput
from app.main import create_app
from app.settings import Settings
from tests.api.contract import (
    ALL_OPERATIONS,
    BLOBS,
    MOONS,
    OPERATIONS,
    PROBLEM_MEDIA_TYPE,
    assert_problem,
    new_rows,
    stored_state,
    training_body,
)
from tests.conftest import make_settings

NPY = "application/x-npy"
KMEANS_PARAMS = {"n_clusters": 3, "random_state": 0, "n_init": 1}
# name -> the training request's algorithm, params and rows: one model of each family.
MODELS: dict[str, tuple[str, dict[str, Any], np.ndarray]] = {
    "kmeans": ("kmeans", KMEANS_PARAMS, BLOBS),
    "gaussian-mixture": ("gaussian_mixture", {"n_components": 3, "random_state": 0}, BLOBS),
    "dbscan": ("dbscan", {"eps": 0.2, "min_samples": 5}, MOONS),
    "isolation-forest": ("isolation_forest", {"n_estimators": 20, "random_state": 0}, BLOBS),
}
SUPPORTED = {
    "kmeans": OPERATIONS["kmeans"],
    "gaussian-mixture": OPERATIONS["gaussian_mixture"],
    "dbscan": OPERATIONS["dbscan"],
    "isolation-forest": ["score_samples", "anomalies"],
}
# The documented per-row results of each operation, in the order of a structured array's
# fields, with the dtype each has in a .npy answer.
ROW_RESULTS: dict[str, tuple[str, ...]] = {
    "predict": ("labels",),
    "predict_proba": ("probabilities",),
    "transform": ("distances",),
    "score_samples": ("scores",),
    "score": ("score",),
    "anomalies": ("anomaly_scores", "is_anomaly", "percentiles"),
    "sample": ("instances", "components"),
    "bic": ("bic",),
    "aic": ("aic",),
}
DTYPE_KINDS = {"labels": "i", "is_anomaly": "b", "components": "i"}  # every other one: '<f8'
SAMPLE_BODY = {"n_samples": 5, "random_state": 0}


def npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def loaded(response: httpx.Response) -> tuple[np.ndarray, dict[str, Any]]:
    """A .npy answer: its array (read without pickle) and its Lloyd-Response header."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == NPY
    array = np.load(io.BytesIO(response.content), allow_pickle=False)
    return array, json.loads(response.headers["lloyd-response"])


def post_npy(
    client: TestClient,
    url: str,
    array: np.ndarray | bytes,
    fields: dict[str, Any] | str | None = None,
    *,
    accept: str | None = None,
) -> httpx.Response:
    """POST ``array`` as a .npy body, ``fields`` (a dict, or the header's text) in Lloyd-Request."""
    headers = {"content-type": NPY}
    if fields is not None:
        headers["lloyd-request"] = fields if isinstance(fields, str) else json.dumps(fields)
    if accept is not None:
        headers["accept"] = accept
    body = array if isinstance(array, bytes) else npy(array)
    return client.post(url, content=body, headers=headers)


def same_bits(a: Any, b: Any) -> bool:
    """Equal float64 arrays, bit for bit."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


@pytest.fixture(scope="module")
def served_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("binary"))


@pytest.fixture(scope="module")
def served(served_settings: Settings) -> Iterator[TestClient]:
    """One app for the module with one model of each family trained from JSON."""
    with TestClient(create_app(served_settings)) as client:
        for name, (algorithm, params, X) in MODELS.items():
            body = training_body(
                name=name, algorithm=algorithm, params=params, data={"instances": X.tolist()}
            )
            response = client.post("/v1/models", json=body)
            assert response.status_code == 201, response.text
        yield client


@pytest.fixture(scope="module")
def kmeans(served: TestClient) -> KMeans:
    """scikit-learn's own fit of "kmeans", checked to be the service's to the last bit."""
    estimator = KMeans(**KMEANS_PARAMS).fit(BLOBS)
    stored = served.get("/v1/models/kmeans/versions/1/parameters").json()["parameters"]
    assert same_bits(stored["cluster_centers"], estimator.cluster_centers_)
    return estimator


# -- .npy answers equal JSON answers -----------------------------------------------------------
def assert_npy_is_json(array: np.ndarray, header: dict[str, Any], answer: dict[str, Any], op: str):
    """The .npy answer (array and header) holds exactly the JSON answer ``answer``."""
    names = ROW_RESULTS[op]
    assert header == {key: value for key, value in answer.items() if key not in names}
    if len(names) > 1:
        assert array.dtype.names == names
        assert array.shape == (len(answer[names[0]]),)
        columns = {name: array[name] for name in names}
    elif op in ("score", "bic", "aic"):
        assert array.shape == ()
        columns = {names[0]: array}
    else:
        columns = {names[0]: array}
    for name, column in columns.items():
        expected = np.asarray(answer[name])
        assert column.shape == expected.shape, name
        kind = DTYPE_KINDS.get(name)
        if kind is None:
            assert column.dtype == np.dtype("<f8"), (name, column.dtype)
            assert same_bits(column, expected), name
        else:
            assert column.dtype.kind == kind, (name, column.dtype)
            assert column.tolist() == answer[name], name


CALLS = [(name, op) for name in MODELS for op in SUPPORTED[name]]


@pytest.mark.parametrize(("name", "op"), CALLS, ids=[f"{n}-{o}" for n, o in CALLS])
def test_npy_in_and_out_equal_json_in_and_out(served: TestClient, name: str, op: str) -> None:
    url = f"/v1/models/{name}/{op}"
    rows = new_rows(MODELS[name][2])
    body = SAMPLE_BODY if op == "sample" else {"instances": rows.tolist()}
    as_json = served.post(url, json=body)
    assert as_json.status_code == 200, as_json.text
    answer = as_json.json()
    json_in_npy_out = served.post(url, json=body, headers={"accept": NPY})
    array, header = loaded(json_in_npy_out)
    assert_npy_is_json(array, header, answer, op)
    if op == "sample":
        assert array.dtype["instances"].shape == (rows.shape[1],)
        return
    npy_in_npy_out = post_npy(served, url, rows, accept=NPY)
    loaded(npy_in_npy_out)
    assert npy_in_npy_out.content == json_in_npy_out.content
    assert npy_in_npy_out.headers["lloyd-response"] == json_in_npy_out.headers["lloyd-response"]
    npy_in_json_out = post_npy(served, url, rows, accept="application/json")
    assert npy_in_json_out.status_code == 200, npy_in_json_out.text
    assert npy_in_json_out.headers["content-type"] == "application/json"
    assert npy_in_json_out.json() == answer
    # The named version's route answers the same.
    versioned = post_npy(served, f"/v1/models/{name}/versions/1/{op}", rows, accept=NPY)
    assert versioned.content == npy_in_npy_out.content


@pytest.mark.parametrize("op", ["bic", "aic"])
def test_training_criteria_without_a_body_as_npy(served: TestClient, op: str) -> None:
    as_json = served.post(f"/v1/models/gaussian-mixture/{op}")
    array, header = loaded(
        served.post(f"/v1/models/gaussian-mixture/{op}", headers={"accept": NPY})
    )
    assert_npy_is_json(array, header, as_json.json(), op)
    assert header["n_samples"] == len(BLOBS)


# -- .npy inputs -------------------------------------------------------------------------------
INTEGER_ROWS = np.array([[0, 4], [2, 1], [255, 3], [1, 0], [-3, 7]])


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(new_rows(BLOBS).astype(np.float32), id="float32"),
        pytest.param(new_rows(BLOBS).astype(np.float16), id="float16"),
        pytest.param(INTEGER_ROWS.astype(np.int64), id="int64"),
        pytest.param(INTEGER_ROWS.astype(np.int32), id="int32"),
        pytest.param(np.abs(INTEGER_ROWS).astype(np.uint8), id="uint8"),
        pytest.param(np.array([[2**64 - 1, 2**63], [0, 1]], dtype=np.uint64), id="uint64-huge"),
        pytest.param(np.asfortranarray(new_rows(BLOBS)), id="fortran-order"),
        pytest.param(new_rows(BLOBS).astype(">f8"), id="big-endian-float64"),
        pytest.param(np.asfortranarray(INTEGER_ROWS.astype(">i4")), id="big-endian-int-fortran"),
        pytest.param(np.array([[-0.0, 5e-324], [2.2250738585072009e-308, 3.0]]), id="subnormals"),
    ],
)
def test_numeric_arrays_are_read_as_their_float64_values(
    served: TestClient, kmeans: KMeans, array: np.ndarray
) -> None:
    X = array.astype(np.float64)
    for op, expected in (("predict", kmeans.predict(X)), ("transform", kmeans.transform(X))):
        response = post_npy(served, f"/v1/models/kmeans/{op}", array, accept=NPY)
        result, _ = loaded(response)
        if op == "predict":
            assert result.tolist() == expected.tolist()
        else:
            assert same_bits(result, expected)
        as_json = served.post(f"/v1/models/kmeans/{op}", json={"instances": X.tolist()})
        assert post_npy(served, f"/v1/models/kmeans/{op}", array).json() == as_json.json()


def header_bytes(header: str, *, version: bytes = b"\x01\x00") -> bytes:
    """A .npy file's magic, version and header dict, padded as numpy pads it."""
    text = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY" + version + len(text).to_bytes(2, "little") + text.encode("latin-1")


def _refused_bodies() -> list[Any]:
    rows = new_rows(BLOBS)
    valid = npy(rows)
    zipped = io.BytesIO()
    np.savez(zipped, rows=rows)
    with_nan, with_inf, with_minus_inf = rows.copy(), rows.copy(), rows.copy()
    with_nan[3, 1] = np.nan
    with_inf[0, 0] = np.inf
    with_minus_inf[9, 1] = -np.inf
    structured = np.zeros((3,), dtype=[("a", "<f8"), ("b", "<f8")])
    cases = [
        (npy(rows > 0), "", "bool"),
        (npy(rows.astype(np.complex128)), "", "complex"),
        (npy(rows.astype(str)), "", "strings"),
        (npy(rows.astype(bytes)), "", "bytes"),
        (npy(structured), "", "structured"),
        (npy(np.zeros((3, 1), dtype=[("a", "<f8"), ("b", "<f8")])), "", "structured-2d"),
        (npy(np.zeros((3, 2), dtype="datetime64[s]")), "", "datetime"),
        (npy(rows[0]), "", "one-dimensional"),
        (npy(np.float64(1.0)), "", "zero-dimensional"),
        (npy(rows.reshape(2, 5, 2)), "", "three-dimensional"),
        (npy(np.empty((0, 2))), "", "zero-rows"),
        (npy(np.empty((3, 0))), "", "zero-features"),
        (valid[:-5], "", "truncated-data"),
        (valid[:40], "", "truncated-header"),
        (valid[:7], "", "truncated-magic"),
        (valid + b"\x00", "", "trailing-byte"),
        (valid + valid, "", "two-arrays"),
        (b"not a numpy file at all", "", "garbage"),
        (b"", "", "empty"),
        (zipped.getvalue(), "", "npz"),
        (json.dumps({"instances": rows.tolist()}).encode(), "", "json"),
        (valid[:6] + b"\x03\x00" + valid[8:], "", "format-version-3"),
        (
            header_bytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 2), }"
            ),
            "",
            "huge",
        ),
        (header_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 2), }"), "", "neg"),
        (header_bytes("{'descr': '<f8', 'shape': (1, 2), }") + bytes(16), "", "no-order"),
        (header_bytes("__import__('os').getcwd()") + bytes(16), "", "code-header"),
        (npy(with_nan), "/3/1", "nan"),
        (npy(with_inf), "/0/0", "infinity"),
        (npy(with_minus_inf.astype(np.float32)), "/9/1", "minus-infinity-float32"),
        (npy(np.array([[1.0, 2.0], [np.inf, 1.0]], dtype=np.float16)), "/1/0", "inf-float16"),
    ]
    return [pytest.param(body, at, id=name) for body, at, name in cases]


@pytest.mark.parametrize(("body", "pointer"), _refused_bodies())
def test_bad_arrays_are_refused_with_422(
    served: TestClient, served_settings: Settings, body: bytes, pointer: str
) -> None:
    before = stored_state(served, served_settings)
    for op in ("predict", "anomalies"):
        response = post_npy(served, f"/v1/models/kmeans/{op}", body, accept=NPY)
        problem = assert_problem(response, 422, "invalid_input")
        assert [e["pointer"] for e in problem["errors"]] == [pointer], problem
    assert post_npy(served, "/v1/models/kmeans/predict", new_rows(BLOBS)).status_code == 200
    assert stored_state(served, served_settings) == before


class _Trap:
    """Unpickling this opens (creates) the file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_object_arrays_are_refused_without_being_unpickled(
    served: TestClient, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    trap = np.empty((2, 2), dtype=object)
    trap[:] = [[_Trap(marker), 1.0], [2.0, 3.0]]
    body = npy(trap, allow_pickle=True)
    with pytest.raises(ValueError):  # numpy itself would only read it with allow_pickle
        np.load(io.BytesIO(body), allow_pickle=False)
    pickle.loads(pickle.dumps(_Trap(tmp_path / "trap-works"))).close()
    assert (tmp_path / "trap-works").exists()  # the trap springs when unpickled
    for url in ("/v1/models/kmeans/predict", "/v1/models/gaussian-mixture/bic"):
        response = post_npy(served, url, body)
        problem = assert_problem(response, 422, "invalid_input")
        assert "dtype |O" in problem["detail"]
    fields = {"name": "trapped", "algorithm": "kmeans", "params": {"n_clusters": 1}}
    assert_problem(post_npy(served, "/v1/models", body, fields), 422, "invalid_input")
    assert not marker.exists()
    assert served.get("/v1/models/trapped").status_code == 404


def test_a_width_other_than_the_models_is_refused(served: TestClient) -> None:
    for width in (1, 3):
        response = post_npy(served, "/v1/models/kmeans/predict", np.ones((4, width)))
        problem = assert_problem(response, 422, "invalid_input")
        assert f"rows have {width} features" in problem["detail"]


def test_a_width_error_points_into_the_npy_body(served: TestClient) -> None:
    """A .npy body has no ``instances``: the error's pointer must not name one (every other
    error of a .npy body points into the array itself, e.g. ``/3/1`` for a NaN)."""
    response = post_npy(served, "/v1/models/kmeans/predict", np.ones((4, 3)))
    problem = assert_problem(response, 422, "invalid_input")
    assert "instances" not in problem["errors"][0]["pointer"], problem


# -- the Lloyd-Request header ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "code", "loc"),
    [
        pytest.param("{nope", "invalid_input", ["header", "lloyd-request"], id="not-json"),
        pytest.param(
            '{"contamination": 0.1', "invalid_input", ["header", "lloyd-request"], id="cut"
        ),
        pytest.param("[0.1]", "invalid_input", ["header", "lloyd-request"], id="array"),
        pytest.param("0.1", "invalid_input", ["header", "lloyd-request"], id="number"),
        pytest.param("null", "invalid_input", ["header", "lloyd-request"], id="null"),
        pytest.param(
            '{"extra": 1}', "validation_error", ["header", "lloyd-request", "extra"], id="unknown"
        ),
        pytest.param(
            '{"contamination": 0.9}',
            "validation_error",
            ["header", "lloyd-request", "contamination"],
            id="bad-option",
        ),
        pytest.param(
            '{"contamination": "0.1"}',
            "validation_error",
            ["header", "lloyd-request", "contamination"],
            id="string-option",
        ),
        pytest.param(
            '{"instances": [[1, 2]]}', "invalid_input", ["header", "lloyd-request"], id="instances"
        ),
        pytest.param(
            '{"records": [{"a": 1}]}', "invalid_input", ["header", "lloyd-request"], id="records"
        ),
        pytest.param('{"data": {}}', "invalid_input", ["header", "lloyd-request"], id="data"),
    ],
)
def test_bad_lloyd_request_headers_are_refused_with_their_location(
    served: TestClient, header: str, code: str, loc: list[str]
) -> None:
    response = post_npy(served, "/v1/models/kmeans/anomalies", new_rows(BLOBS), header)
    problem = assert_problem(response, 422, code)
    assert problem["errors"][0]["loc"] == loc, problem
    assert problem["errors"][0]["pointer"] == "/" + "/".join(loc)


def test_a_header_that_is_not_utf8_is_refused() -> None:
    """Starlette hands header bytes over as Latin-1 text; bytes that are not UTF-8 are not JSON.
    (The test client re-encodes header text as UTF-8, so this is checked on the reader.)"""
    latin1 = b'{"contamination": 0.1, "\xff": 1}'.decode("latin-1")
    with pytest.raises(InvalidInput) as refused:
        request_fields(latin1)
    assert refused.value.errors == [
        {"loc": ["header", "lloyd-request"], "msg": refused.value.detail, "type": "value_error"}
    ]
    utf8 = '{"contamination": 0.1, "é": 1}'.encode().decode("latin-1")
    assert request_fields(utf8) == {"contamination": 0.1, "é": 1}


def test_options_in_the_header_act_as_in_a_json_body(served: TestClient) -> None:
    rows = new_rows(BLOBS)
    stored = served.post("/v1/models/kmeans/anomalies", json={"instances": rows.tolist()}).json()
    as_json = served.post(
        "/v1/models/kmeans/anomalies", json={"instances": rows.tolist(), "contamination": 0.2}
    ).json()
    response = post_npy(served, "/v1/models/kmeans/anomalies", rows, {"contamination": 0.2})
    assert response.json() == as_json
    assert as_json["threshold"] != stored["threshold"]
    assert as_json["threshold_source"] == "contamination"
    array, header = loaded(
        post_npy(served, "/v1/models/kmeans/anomalies", rows, {"threshold": 0.5}, accept=NPY)
    )
    assert header["threshold"] == 0.5
    assert array["is_anomaly"].tolist() == (array["anomaly_scores"] > 0.5).tolist()
    # A blank header is no fields at all.
    assert post_npy(served, "/v1/models/kmeans/anomalies", rows, " ").json() == stored


def test_explanations_come_as_json_only(served: TestClient) -> None:
    rows = new_rows(BLOBS)
    fields = {"explain": True, "top_features": 1}
    explained = post_npy(served, "/v1/models/kmeans/anomalies", rows, fields)
    assert explained.status_code == 200, explained.text
    assert [len(row) for row in explained.json()["contributions"]] == [1] * len(rows)
    refused = post_npy(served, "/v1/models/kmeans/anomalies", rows, fields, accept=NPY)
    assert_problem(refused, 406, "not_acceptable")
    as_json = served.post(
        "/v1/models/kmeans/anomalies",
        json={"instances": rows.tolist(), "explain": True},
        headers={"accept": NPY},
    )
    assert_problem(as_json, 406, "not_acceptable")


# -- negotiation and content types -------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "is_npy"),
    [
        (NPY, True),
        (None, False),
        ("", False),
        ("application/json", False),
        ("*/*", False),
        ("application/json;q=0.5, application/x-npy", True),
        ("application/x-npy;q=0.5, application/json", False),
        ("application/x-npy, application/json", False),  # a tie goes to JSON
        ("application/x-npy;q=0.9, */*;q=0.1", True),
        ("text/html, application/x-npy;q=0.8", True),
        ("application/x-npy;q=0", False),
        ("APPLICATION/X-NPY", True),
    ],
)
def test_accept_chooses_the_answers_format(
    served: TestClient, kmeans: KMeans, accept: str | None, is_npy: bool
) -> None:
    rows = new_rows(BLOBS)
    headers = {} if accept is None else {"accept": accept}
    response = served.post(
        "/v1/models/kmeans/predict", json={"instances": rows.tolist()}, headers=headers
    )
    assert response.status_code == 200, response.text
    if is_npy:
        array, header = loaded(response)
        assert array.tolist() == kmeans.predict(rows).tolist()
        assert header == {"model": "kmeans", "version": 1}
    else:
        assert response.headers["content-type"] == "application/json"
        assert "lloyd-response" not in response.headers
        assert response.json()["labels"] == kmeans.predict(rows).tolist()


def test_errors_are_problems_whatever_the_accept(served: TestClient) -> None:
    response = served.post(
        "/v1/models/kmeans/predict", json={"instances": [[1.0]]}, headers={"accept": NPY}
    )
    assert_problem(response, 422, "invalid_input")
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    missing = post_npy(served, "/v1/models/nope/predict", new_rows(BLOBS), accept=NPY)
    assert_problem(missing, 404, "model_not_found")


@pytest.mark.parametrize(
    ("url", "content_type", "status", "code"),
    [
        ("/v1/models/kmeans/predict", "text/plain", 415, "unsupported_media_type"),
        ("/v1/models/kmeans/predict", "application/x-www-form-urlencoded", 415, None),
        ("/v1/models/kmeans/predict", "application/octet-stream", 415, None),
        ("/v1/models/kmeans/predict", "application/json; charset=utf-8", 200, None),
        ("/v1/models/kmeans/predict", "Application/JSON", 200, None),
        ("/v1/models/gaussian-mixture/sample", "text/plain", 415, None),
        ("/v1/models", "text/plain", 415, None),
    ],
)
def test_content_types(
    served: TestClient, url: str, content_type: str, status: int, code: str | None
) -> None:
    body = {"instances": new_rows(BLOBS).tolist()}
    if url.endswith("sample"):
        body = SAMPLE_BODY
    elif url == "/v1/models":
        body = training_body(name="never")
    response = served.post(url, content=json.dumps(body), headers={"content-type": content_type})
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_problem(response, status, code or "unsupported_media_type")


def test_model_selection_answers_415_as_documented(served: TestClient) -> None:
    """Like every route reading rows, model selection refuses a body neither JSON nor .npy."""
    document = served.get("/openapi.json").json()
    assert "415" in document["paths"]["/v1/model-selection"]["post"]["responses"]
    body = json.dumps({"algorithm": "kmeans", "data": {"instances": BLOBS[:20].tolist()}})
    response = served.post(
        "/v1/model-selection", content=body, headers={"content-type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported_media_type")


def test_sample_takes_no_npy_body(served: TestClient) -> None:
    response = post_npy(served, "/v1/models/gaussian-mixture/sample", new_rows(BLOBS))
    problem = assert_problem(response, 415, "unsupported_media_type")
    # A .npy body is not offered where there are no rows.
    assert f"or {NPY}" not in problem["detail"], problem


# -- training from .npy ------------------------------------------------------------------------
def comparable(version: dict[str, Any]) -> dict[str, Any]:
    """A version document without what differs between two trainings of the same thing."""
    volatile = {"name", "created_at", "training_seconds", "artifact", "aliases"}
    return {key: value for key, value in version.items() if key not in volatile}


def test_training_from_npy_equals_training_from_json(served: TestClient, kmeans: KMeans) -> None:
    fields = {"name": "kmeans-npy", "algorithm": "kmeans", "params": KMEANS_PARAMS}
    response = post_npy(served, "/v1/models", BLOBS, fields)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/v1/models/kmeans-npy/versions/1"
    from_json = served.get("/v1/models/kmeans/versions/1").json()
    assert comparable(response.json()) == comparable(from_json)
    parameters = served.get("/v1/models/kmeans-npy/versions/1/parameters").json()["parameters"]
    assert same_bits(parameters["cluster_centers"], kmeans.cluster_centers_)
    rows = new_rows(BLOBS)
    labels = post_npy(served, "/v1/models/kmeans-npy/predict", rows).json()["labels"]
    assert labels == kmeans.predict(rows).tolist()


def test_training_from_float32_npy_with_feature_names(served: TestClient) -> None:
    X32 = BLOBS[:60].astype(np.float32)
    fields = {
        "name": "float32",
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "random_state": 0, "n_init": 1},
        "feature_names": ["temperature", "pressure"],
        "description": "from .npy",
        "tags": {"line": "7"},
    }
    response = post_npy(served, "/v1/models", X32, fields)
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["feature_names"] == ["temperature", "pressure"]
    assert (version["n_samples"], version["n_features"]) == (60, 2)
    assert (version["description"], version["tags"]) == ("from .npy", {"line": "7"})
    expected = KMeans(n_clusters=2, random_state=0, n_init=1).fit(X32.astype(np.float64))
    parameters = served.get("/v1/models/float32/versions/1/parameters").json()["parameters"]
    assert same_bits(parameters["cluster_centers"], expected.cluster_centers_)
    records = [{"pressure": 1.0, "temperature": 2.0}]
    labels = served.post("/v1/models/float32/predict", json={"records": records}).json()
    assert labels["labels"] == expected.predict(np.array([[2.0, 1.0]])).tolist()


def test_a_utf8_lloyd_request_header_is_read_as_utf8(served: TestClient) -> None:
    """JSON is UTF-8: a header sent as UTF-8 bytes (not only \\u escapes) keeps its text."""
    fields = {
        "name": "utf8",
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "random_state": 0, "n_init": 1},
        "feature_names": ["température", "pressure"],
    }
    header = json.dumps(fields, ensure_ascii=False).encode("utf-8")
    response = served.post(
        "/v1/models",
        content=npy(BLOBS[:30]),
        headers={"content-type": NPY, "lloyd-request": header},
    )
    assert response.status_code == 201, response.text
    assert response.json()["feature_names"] == ["température", "pressure"]


@pytest.mark.parametrize(
    ("fields", "code", "loc"),
    [
        pytest.param(None, "validation_error", ["header", "lloyd-request", "name"], id="no-header"),
        pytest.param(
            {"name": "x", "algorithm": "kmeans", "data": {"instances": [[1, 2]]}},
            "invalid_input",
            ["header", "lloyd-request"],
            id="data-in-header",
        ),
        pytest.param(
            {"name": "x", "algorithm": "kmeans", "wait2": True},
            "validation_error",
            ["header", "lloyd-request", "wait2"],
            id="unknown-field",
        ),
        pytest.param(
            {"name": "x", "algorithm": "kmeans", "feature_names": ["a", "b", "c"]},
            "invalid_input",
            None,
            id="feature-names-wrong-width",
        ),
        pytest.param(
            {"name": "x", "algorithm": "kmedoids"},
            "unknown_algorithm",
            None,
            id="unknown-algorithm",
        ),
        pytest.param(
            {"name": "x", "algorithm": "kmeans", "params": {"n_jobs": 2}},
            "invalid_parameter",
            None,
            id="refused-parameter",
        ),
    ],
)
def test_bad_npy_trainings_are_refused_and_store_nothing(
    served: TestClient,
    served_settings: Settings,
    fields: dict[str, Any] | None,
    code: str,
    loc: Any,
) -> None:
    before = stored_state(served, served_settings)
    response = post_npy(served, "/v1/models", BLOBS[:20], fields)
    problem = assert_problem(response, 422, code)
    if loc is not None:
        assert problem["errors"][0]["loc"] == loc, problem
    assert served.get("/v1/models/x").status_code == 404
    assert stored_state(served, served_settings) == before


def test_feature_names_of_the_wrong_width_point_at_the_header(served: TestClient) -> None:
    """The names came in the Lloyd-Request header, so the error is located there, as every
    other error of a field of that header is."""
    fields = {"name": "x", "algorithm": "kmeans", "feature_names": ["a", "b", "c"]}
    problem = assert_problem(
        post_npy(served, "/v1/models", BLOBS[:20], fields), 422, "invalid_input"
    )
    assert problem["errors"][0]["loc"] == ["header", "lloyd-request", "feature_names"], problem


def test_npy_trainings_over_the_limits_are_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_training_cells=100, max_body_bytes=4096)
    fields = {"name": "limited", "algorithm": "kmeans", "params": {"n_clusters": 1}}
    with TestClient(create_app(settings)) as client:
        cells = post_npy(client, "/v1/models", np.ones((51, 2)), fields)
        assert_problem(cells, 413, "payload_too_large")
        body = npy(np.ones((300, 2)))
        assert len(body) > 4096
        assert_problem(post_npy(client, "/v1/models", body, fields), 413, "payload_too_large")
        streamed = client.post(
            "/v1/models",
            content=iter([body[:2000], body[2000:]]),
            headers={"content-type": NPY, "lloyd-request": json.dumps(fields)},
        )
        assert_problem(streamed, 413, "payload_too_large")
        assert stored_state(client, settings) == {"files": set(), "total": 0, "models": []}


# -- OpenAPI -----------------------------------------------------------------------------------
def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


BODY_MODELS = {
    "predict": "InferenceRequest",
    "predict_proba": "InferenceRequest",
    "transform": "InferenceRequest",
    "score_samples": "InferenceRequest",
    "score": "InferenceRequest",
    "anomalies": "AnomaliesRequest",
    "sample": "SampleRequest",
    "bic": "CriterionRequest",
    "aic": "CriterionRequest",
}


def test_openapi_documents_npy_bodies_and_answers(served: TestClient) -> None:
    document = served.get("/openapi.json").json()
    components = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in components, ref
    for op in ALL_OPERATIONS:
        for path in (f"/v1/models/{{name}}/{op}", f"/v1/models/{{name}}/versions/{{version}}/{op}"):
            operation = document["paths"][path]["post"]
            content = operation["requestBody"]["content"]
            schema_ref = content["application/json"]["schema"]["$ref"]
            assert schema_ref == f"#/components/schemas/{BODY_MODELS[op]}", path
            answers = operation["responses"]["200"]["content"]
            assert {"application/json", NPY} <= answers.keys(), path
            assert "Lloyd-Response" in operation["responses"]["200"]["headers"], path
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            if op == "sample":
                assert NPY not in content, path
                assert "Lloyd-Request" not in headers, path
            else:
                assert content[NPY]["schema"] == {"type": "string", "format": "binary"}, path
                assert "Lloyd-Request" in headers, path
    training = document["paths"]["/v1/models"]["post"]
    content = training["requestBody"]["content"]
    assert content["application/json"]["schema"]["$ref"] == "#/components/schemas/TrainRequest"
    assert content[NPY]["schema"] == {"type": "string", "format": "binary"}
    assert "Lloyd-Request" in {p["name"] for p in training["parameters"]}
    for name in ("InferenceRequest", "AnomaliesRequest", "CriterionRequest", "SampleRequest"):
        assert components[name]["type"] == "object", name
    train_request = components["TrainRequest"]
    assert {"name", "algorithm", "data"} <= set(train_request["required"])
    assert "instances" in components["AnomaliesRequest"]["properties"]
    assert "contamination" in components["AnomaliesRequest"]["properties"]
