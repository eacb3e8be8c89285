"""The JSON fast path for rows (app.api.bodies): every body gets exactly the answer the schema-only
path gives (pydantic validates the whole body, the rows become a matrix, scikit-learn runs on
it), to the last bit, and every body the fast path is unsure of gets the schema's own error.
The equivalence and tricky-body tests run with each of the fast path's two parsers: msgspec
(small bodies) and simdjson's buffer (large bodies; here every body, its size limit lowered)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from sklearn.cluster import KMeans

from app.api import bodies
from app.api.schemas import AnomaliesRequest, CriterionRequest, InferenceRequest
from app.main import create_app
from tests.api.contract import BLOBS, assert_problem, new_rows, training_body
from tests.conftest import make_settings

KMEANS_PARAMS = {"n_clusters": 3, "random_state": 0, "n_init": 1}
MIXTURE_PARAMS = {"n_components": 2, "random_state": 0}
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "predict": InferenceRequest,
    "predict_proba": InferenceRequest,
    "transform": InferenceRequest,
    "score_samples": InferenceRequest,
    "score": InferenceRequest,
    "anomalies": AnomaliesRequest,
    "bic": CriterionRequest,
}
# (model, operation) pairs every generated matrix is posted to.
EQUIVALENCE_CALLS = [
    ("blobs", "predict"),
    ("blobs", "transform"),
    ("blobs", "score"),
    ("blobs", "anomalies"),
    ("mixture", "predict_proba"),
    ("mixture", "score_samples"),
    ("mixture", "bic"),
]


@pytest.fixture(params=["msgspec", "buffer"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fast path's parser for every body of the test: msgspec's tuples, or simdjson's
    buffer (normally for bodies from 64 KiB)."""
    if request.param == "buffer":
        monkeypatch.setattr(bodies, "BUFFER_PARSE_MIN_BYTES", 0)
    return request.param


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the module: k-means "blobs" and a Gaussian mixture "mixture", both on BLOBS."""
    settings_ = make_settings(tmp_path_factory.mktemp("fast_rows"))
    with TestClient(create_app(settings_)) as client:
        for body in (
            training_body(params=KMEANS_PARAMS),
            training_body(name="mixture", algorithm="gaussian_mixture", params=MIXTURE_PARAMS),
        ):
            response = client.post("/v1/models", json=body)
            assert response.status_code == 201, response.text
        yield client


@pytest.fixture(scope="module")
def kmeans(served: TestClient) -> KMeans:
    """scikit-learn's own fit of "blobs", checked to be the service's to the last bit."""
    estimator = KMeans(**KMEANS_PARAMS).fit(BLOBS)
    stored = served.get("/v1/models/blobs/versions/1/parameters").json()["parameters"]
    assert same_bits(np.array(stored["cluster_centers"]), estimator.cluster_centers_)
    return estimator


# -- what the schema-only path answers -------------------------------------------------------
def same_bits(a: Any, b: Any) -> bool:
    """Equal float64 arrays, bit for bit (-0.0 is not 0.0; NaN equals the same NaN)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


def pointer(loc: tuple[Any, ...] | list[Any]) -> str:
    """A location inside the body as an RFC 6901 JSON pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in loc)


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    pointers: list[str]


def schema_rows(raw: bytes, operation: str) -> np.ndarray | Refusal:
    """What the all-pydantic path makes of ``raw``: the whole body validated by the operation's
    request model, its instances turned into a matrix (the service then checks, in order:
    rows present, width not zero, not ragged, the model's width), or the refusal."""
    if not raw.strip():  # FastAPI's answer to a missing body, which the service keeps
        return Refusal(422, "validation_error", [""])
    try:
        body = REQUEST_MODELS[operation].model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        pointers = [pointer(e["loc"]) for e in errors]
        if any(e["type"] == "json_invalid" for e in errors):
            return Refusal(400, "malformed_json", pointers)
        return Refusal(422, "validation_error", pointers)
    if body.records is not None:  # neither model was trained with feature names
        return Refusal(422, "invalid_input", ["/records"])
    instances = body.instances
    assert instances is not None
    if not instances:
        return Refusal(422, "invalid_input", ["/instances"])
    if not instances[0]:
        return Refusal(422, "invalid_input", ["/instances/0"])
    for index, row in enumerate(instances):
        if len(row) != len(instances[0]):
            return Refusal(422, "invalid_input", [f"/instances/{index}"])
    X = np.asarray(instances, dtype=np.float64)
    if X.shape[1] != BLOBS.shape[1]:
        return Refusal(422, "invalid_input", ["/instances/0"])
    return X


def sklearn_answer(kmeans: KMeans, operation: str, X: np.ndarray) -> dict[str, Any] | Refusal:
    """scikit-learn's answer for "blobs" on ``X``, or the refusal of a non-finite one."""
    with np.errstate(all="ignore"):
        if operation == "predict":
            return {"model": "blobs", "version": 1, "labels": kmeans.predict(X).tolist()}
        distances = kmeans.transform(X)
    if not np.isfinite(distances).all():
        return Refusal(422, "invalid_input", ["/instances"])
    return {"model": "blobs", "version": 1, "distances": distances}


def post(client: TestClient, name: str, operation: str, raw: bytes) -> Any:
    return client.post(
        f"/v1/models/{name}/{operation}", content=raw, headers={"content-type": "application/json"}
    )


def assert_refused(response: Any, expected: Refusal) -> None:
    problem = assert_problem(response, expected.status, expected.code)
    assert [e["pointer"] for e in problem["errors"]] == expected.pointers, problem


def assert_same_answer(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal documents, every float equal to the bit."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert same_bits(actual[key], value), (key, actual[key], value)
        else:
            assert actual[key] == value, key


# -- equivalence on generated matrices -------------------------------------------------------
SPECIAL_VALUES = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    2.2250738585072009e-308,  # the largest subnormal
    2.2250738585072014e-308,  # the smallest normal
    1e308,
    -1e308,
    1.7976931348623157e308,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 - 1,
    2**64,
    2**64 + 2049,  # above 2**64, rounds up (not to even)
    2**64 + 2048,  # above 2**64, exactly halfway: rounds to even
    -(2**64) - 1,
    3,
]
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-20.0, max_value=20.0),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=-20, max_value=20),
    st.sampled_from(SPECIAL_VALUES),
)
matrices = st.lists(st.lists(values, min_size=2, max_size=2), min_size=1, max_size=4)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    # ``parser`` holds for the whole run of examples, as intended.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rows=matrices)
@example(rows=[[1e308, -1e308], [-0.0, 5e-324]])
@example(rows=[[2**64 + 2049, 2**63], [-(2**64) - 1, 1.5]])
@example(rows=[[-0.0, -0.0], [0, 0], [2.2250738585072009e-308, 3]])
@example(rows=new_rows(BLOBS).tolist())
def test_fast_path_answers_what_the_schema_path_answers(
    served: TestClient, kmeans: KMeans, parser: str, rows: list[list[float | int]]
) -> None:
    raw = json.dumps({"instances": rows}).encode()
    # The escaped key makes the fast path step aside: the same body through pydantic alone.
    escaped = raw.replace(b'"instances"', b'"\\u0069nstances"', 1)
    X = np.array(rows, dtype=np.float64)
    schema_X = schema_rows(raw, "predict")
    assert isinstance(schema_X, np.ndarray)
    assert same_bits(schema_X, X)  # pydantic reads every number as numpy does
    for name, operation in EQUIVALENCE_CALLS:
        fast, slow = post(served, name, operation, raw), post(served, name, operation, escaped)
        assert fast.status_code == slow.status_code, (operation, fast.text, slow.text)
        assert fast.json() == slow.json(), operation
        if operation in ("predict", "transform"):
            expected = sklearn_answer(kmeans, operation, X)
            if isinstance(expected, Refusal):
                assert_refused(fast, expected)
            else:
                assert fast.status_code == 200, fast.text
                assert_same_answer(fast.json(), expected)
        if operation == "anomalies" and fast.status_code == 200:
            with np.errstate(all="ignore"):
                nearest = kmeans.transform(X).min(axis=1)
            assert same_bits(fast.json()["anomaly_scores"], nearest)


# -- bodies the fast path must hand over to the schema -----------------------------------------
def instances(text: str, rest: str = "") -> bytes:
    return f'{{"instances": {text}{rest}}}'.encode()


TRICKY_BODIES = [
    # booleans, alone and among numbers
    pytest.param("predict", instances("[[true, false]]"), id="booleans"),
    pytest.param("predict", instances("[[true]]"), id="one-boolean"),
    pytest.param("predict", instances("[[1.5, true], [2, 3]]"), id="boolean-among-floats"),
    pytest.param("predict", instances("[[1, 2], [3, false]]"), id="false-in-second-row"),
    pytest.param("transform", instances("[[0, 1], [1, 0]]", ', "x": true'), id="true-elsewhere"),
    # strings, null, deeper lists, objects
    pytest.param("predict", instances('[["1.5", 2]]'), id="numeric-string"),
    pytest.param("predict", instances('[[1, 2], [3, "x"]]'), id="string-in-second-row"),
    pytest.param("predict", instances("[[null, 1]]"), id="null"),
    pytest.param("predict", instances("[[1, 2], [3, null]]"), id="null-in-second-row"),
    pytest.param("predict", instances("[[null, null]]"), id="nulls"),
    pytest.param("predict", instances("[[[1, 2]]]"), id="nested-deeper"),
    pytest.param("predict", instances("[[1, [2]]]"), id="list-in-row"),
    pytest.param("predict", instances("[[[]]]"), id="empty-list-in-row"),
    pytest.param("predict", instances("[[{}]]"), id="object-in-row"),
    pytest.param("predict", instances("[[1, 2], 3]"), id="number-as-row"),
    # as many numbers as a rectangle would hold, every row as long as the first
    pytest.param("predict", instances("[[1, [2, 3]], 4]"), id="nested-and-number-rows"),
    pytest.param("predict", instances("[[1, []], [2, [3, 4]]]"), id="nested-empty-and-pair"),
    pytest.param("predict", instances("[[1, 2], [[3, 4]]]"), id="row-holding-a-row"),
    pytest.param("predict", instances("[[1, 2], [3, 4]]", ', "x": [5]'), id="list-elsewhere"),
    pytest.param("predict", instances("[[1, 2], null]"), id="null-as-row"),
    # shapes
    pytest.param("predict", instances("[[1, 2], [3]]"), id="ragged"),
    pytest.param("predict", instances("[[1], [2, 3]]"), id="ragged-first-short"),
    pytest.param("predict", instances("[[1, 2], []]"), id="ragged-empty-row"),
    pytest.param("predict", instances("[[]]"), id="empty-row"),
    pytest.param("predict", instances("[[], []]"), id="empty-rows"),
    pytest.param("predict", instances("[]"), id="no-rows"),
    pytest.param("predict", instances("[[1, 2, 3]]"), id="wider-than-model"),
    pytest.param("transform", instances("[[1]]"), id="narrower-than-model"),
    # instances not a list of lists
    pytest.param("predict", instances("[1, 2]"), id="flat-list"),
    pytest.param("predict", instances("5"), id="number"),
    pytest.param("predict", instances('"[[1, 2]]"'), id="string"),
    pytest.param("predict", instances("{}"), id="object"),
    pytest.param("predict", instances("null"), id="instances-null"),
    # the other fields
    pytest.param("predict", instances("[[1, 2]]", ', "records": [{"a": 1}]'), id="and-records"),
    pytest.param("predict", instances("[[1, 2]]", ', "records": null'), id="records-null"),
    pytest.param("predict", b'{"records": [{"a": 1}]}', id="records-only"),
    pytest.param("predict", instances("[[1, 2]]", ', "extra": 1'), id="unknown-field"),
    pytest.param("predict", instances("[[1, 2]]", ', "extra": "x"'), id="unknown-string-field"),
    pytest.param("predict", b"{}", id="empty-object"),
    pytest.param("predict", b"[[1, 2]]", id="array-body"),
    pytest.param("predict", b"null", id="null-body"),
    pytest.param("predict", b"", id="empty-body"),
    pytest.param("predict", instances("[[1, 2]"), id="malformed"),
    pytest.param("predict", b'{"instances": [[1, 2]],}', id="trailing-comma"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "contamination": 0.2'), id="contamination"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "contamination": null'), id="null-option"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "contamination": 0.9'), id="bad-option"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "contamination": "0.1"'), id="string-opt"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "contamination": true'), id="bool-option"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "threshold": 1e999'), id="inf-option"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "top_features": 2'), id="no-explain"),
    pytest.param("anomalies", instances("[[1, 2]]", ', "explain": false'), id="explain-false"),
    pytest.param(
        "anomalies",
        instances("[[1, 2]]", ', "contamination": 0.1, "threshold": 1'),
        id="two-options",
    ),
    pytest.param("bic", instances("[[1, 2], [3, 4], [5, 6]]"), id="bic"),
    pytest.param("bic", b"", id="bic-no-body"),
    pytest.param("bic", b"{}", id="bic-empty-object"),
    # numbers the schema refuses
    pytest.param("predict", instances("[[1, 1e999]]"), id="overflowing-literal"),
    pytest.param("predict", instances("[[-1e999, 1]]"), id="minus-overflowing-literal"),
    pytest.param("predict", instances("[[1, " + "9" * 400 + "]]"), id="overflowing-integer"),
    pytest.param("predict", instances("[[NaN, 1]]"), id="nan"),
    pytest.param("predict", instances("[[1, Infinity]]"), id="infinity"),
    pytest.param("predict", instances("[[1, 2], [3, 4]]", ', "x": NaN'), id="nan-elsewhere"),
    pytest.param("transform", instances("[[1e308, -1e308]]"), id="overflowing-distances"),
    # escapes in keys, duplicate keys, whitespace
    pytest.param("predict", b'{"\\u0069nstances": [[1, 2]]}', id="escaped-key"),
    pytest.param("predict", b'{"instance\\u0073": [[1, 2], [3, 4]]}', id="escaped-last-char"),
    pytest.param("predict", b'{"\\u0069nstances": [[true, 2]]}', id="escaped-key-boolean"),
    pytest.param("predict", b'{"\\u0069nstances": [[1, 2], [3]]}', id="escaped-key-ragged"),
    pytest.param("predict", b'{"\\u0069nstances": [[1, 2]], "x": 1}', id="escaped-key-extra"),
    pytest.param(
        "predict", b'{"instances": [[1, 2]], "\\u0072ecords": [{"a": 1}]}', id="escaped-records"
    ),
    pytest.param(
        "predict", b'{"instances": [[1, 2, 3]], "\\u0069nstances": [[5, 6]]}', id="escaped-dup"
    ),
    pytest.param(
        "predict", b'{"instances": [[1, 2]], "instances": [[1, 2, 3]]}', id="duplicate-wider-last"
    ),
    pytest.param(
        "predict", b'{"instances": [[1, 2, 3]], "instances": [[7, 8]]}', id="duplicate-valid-last"
    ),
    pytest.param(
        "predict", b'{"instances": [[true]], "instances": [[7, 8]]}', id="duplicate-boolean-first"
    ),
    pytest.param(
        "anomalies",
        b'{"instances": [[1, 2]], "contamination": 0.2, "contamination": 0.9}',
        id="duplicate-option",
    ),
    pytest.param("predict", b' \n{ "instances" :\t[ [ 1 ,2 ] ,[3,4]] }\r\n', id="whitespace"),
    pytest.param("predict", '{"instances": [[1, 2]], "é": 1}'.encode(), id="non-ascii-key"),
    pytest.param("predict", b'\xef\xbb\xbf{"instances": [[1, 2]]}', id="byte-order-mark"),
    pytest.param("predict", b'{"instances": [[1, 2]]}\xff', id="invalid-utf8"),
]


@pytest.mark.parametrize(("operation", "raw"), TRICKY_BODIES)
def test_tricky_bodies_get_the_schema_answer(
    served: TestClient, kmeans: KMeans, parser: str, operation: str, raw: bytes
) -> None:
    name = "mixture" if operation == "bic" else "blobs"
    response = post(served, name, operation, raw)
    if operation == "bic" and not raw:
        assert response.status_code == 200, response.text  # the training-set value
        return
    expected = schema_rows(raw, operation)
    if isinstance(expected, Refusal):
        assert_refused(response, expected)
    elif operation in ("predict", "transform"):
        reference = sklearn_answer(kmeans, operation, expected)
        if isinstance(reference, Refusal):
            assert_refused(response, reference)
        else:
            assert response.status_code == 200, response.text
            assert_same_answer(response.json(), reference)
    else:
        # The same rows and options as a plain body (the fast path's own case) answer the same.
        options = json.loads(raw) if operation == "anomalies" else {}
        body = {k: v for k, v in options.items() if k != "instances"}
        again = served.post(
            f"/v1/models/{name}/{operation}", json=body | {"instances": expected.tolist()}
        )
        assert again.status_code == response.status_code == 200, response.text
        assert response.json() == again.json()


def test_explain_with_valid_rows_answers_with_explanations(
    served: TestClient, kmeans: KMeans
) -> None:
    rows = new_rows(BLOBS)
    plain = served.post("/v1/models/blobs/anomalies", json={"instances": rows.tolist()})
    assert plain.status_code == 200, plain.text
    raw = json.dumps({"instances": rows.tolist(), "explain": True, "top_features": 2}).encode()
    explained = post(served, "blobs", "anomalies", raw)
    assert explained.status_code == 200, explained.text
    answer = explained.json()
    contributions = answer.pop("contributions")
    assert answer.pop("explanation")["method"] == "exact"
    assert answer == plain.json()
    assert len(contributions) == len(rows)
    assert all(len(row) == 2 for row in contributions)
    assert same_bits(answer["anomaly_scores"], kmeans.transform(rows).min(axis=1))


def test_integers_beyond_64_bits_are_rounded_like_the_schema(served: TestClient) -> None:
    """Integer literals that orjson reads as floats (past 2**64) and as exact integers (up to
    2**64 - 1) give numpy's, and pydantic's, correctly rounded float64."""
    literals = [2**64 - 1, 2**64 + 2048, 2**64 + 2049, 2**64 + 4096 * 3 + 2048, 10**30, -(10**25)]
    raw = json.dumps({"instances": [[value, 0] for value in literals]}).encode()
    X = schema_rows(raw, "transform")
    assert isinstance(X, np.ndarray)
    assert same_bits(X[:, 0], [float(value) for value in literals])
    escaped = raw.replace(b'"instances"', b'"\\u0069nstances"', 1)
    fast, slow = (
        post(served, "blobs", "transform", raw),
        post(served, "blobs", "transform", escaped),
    )
    assert fast.status_code == slow.status_code == 200, fast.text
    assert fast.json() == slow.json()


@pytest.mark.parametrize("n_rows", [3_000, 40_000])  # about 110 KiB and 1.5 MiB of JSON
def test_large_bodies_take_the_buffer_and_answer_bit_for_bit(
    served: TestClient, kmeans: KMeans, n_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At their real sizes: from 64 KiB simdjson reads the rows, from 1 MiB in the thread pool;
    the answers are scikit-learn's, and a defect deep inside gets the schema's own error."""
    read: list[int] = []
    real = bodies._rows_by_buffer
    monkeypatch.setattr(bodies, "_rows_by_buffer", lambda raw: read.append(len(raw)) or real(raw))
    X = np.random.default_rng(n_rows).normal(scale=10, size=(n_rows, BLOBS.shape[1]))
    raw = json.dumps({"instances": X.tolist()}).encode()
    assert len(raw) >= bodies.BUFFER_PARSE_MIN_BYTES
    assert (len(raw) >= bodies.THREAD_PARSE_MIN_BYTES) == (n_rows > 10_000)
    response = post(served, "blobs", "transform", raw)
    assert response.status_code == 200, response.text
    assert read == [len(raw)]
    assert_same_answer(response.json(), sklearn_answer(kmeans, "transform", X))
    rows = X.tolist()
    rows[-2] = rows[-2][:1]
    assert_refused(
        post(served, "blobs", "predict", json.dumps({"instances": rows}).encode()),
        Refusal(422, "invalid_input", [f"/instances/{n_rows - 2}"]),
    )
    rows[-2] = [True, 1.0]
    refused = post(served, "blobs", "predict", json.dumps({"instances": rows}).encode())
    assert_refused(refused, schema_rows(json.dumps({"instances": rows}).encode(), "predict"))
