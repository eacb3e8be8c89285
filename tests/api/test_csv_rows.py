"""The ``text/csv`` content type (app.api.csv_rows): rows posted as CSV give exactly the JSON
API's answers, and scikit-learn's; with a header row or without; a header's names map to a
model's feature names as records' keys do; training and model selection from CSV; every bad
body is a 4xx problem located at its row and column; the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest

from app.api.bodies import THREAD_PARSE_MIN_BYTES
from app.api.operations import OPERATIONS as TABLE
from app.main import create_app
from tests.api.contract import (
    BLOBS,
    CASE_BY_ALGORITHM,
    OPERATIONS,
    assert_error_at,
    assert_problem,
    case_body,
    new_rows,
    training_body,
)
from tests.api.reference import Reference, assert_same
from tests.conftest import make_settings

CSV = "text/csv"
NAMES = ["temperature", "pressure"]
CONTAMINATION = 0.05
FOREST_PARAMS = {"n_estimators": 20, "random_state": 0}
# name -> (the case it was trained from, or None for the isolation forest; its feature names)
MODELS: dict[str, tuple[str | None, list[str] | None]] = {
    "kmeans": ("kmeans", None),
    "gaussian-mixture": ("gaussian_mixture", NAMES),
    "dbscan": ("dbscan", None),
    "isolation-forest": (None, None),
}
SUPPORTED = {
    "kmeans": OPERATIONS["kmeans"],
    "gaussian-mixture": [op for op in OPERATIONS["gaussian_mixture"] if op != "sample"],
    "dbscan": OPERATIONS["dbscan"],
    "isolation-forest": ["score_samples", "anomalies"],
}
CALLS = [(name, op) for name in MODELS for op in SUPPORTED[name]]


def csv_bytes(X: np.ndarray, names: list[str] | None = None, *, end: str = "\n") -> bytes:
    """``X`` as CSV, every number written as the shortest text that reads back as it."""
    lines = [",".join(names)] if names is not None else []
    lines += [",".join(repr(float(value)) for value in row) for row in X]
    return (end.join(lines) + end).encode()


def post_csv(
    client: TestClient,
    url: str,
    body: bytes | str,
    fields: dict[str, Any] | str | None = None,
    *,
    content_type: str = CSV,
) -> httpx.Response:
    """POST ``body`` as CSV, ``fields`` (a dict, or the header's text) in Lloyd-Request."""
    headers = {"content-type": content_type}
    if fields is not None:
        headers["lloyd-request"] = fields if isinstance(fields, str) else json.dumps(fields)
    content = body.encode() if isinstance(body, str) else body
    return client.post(url, content=content, headers=headers)


def rows_of(name: str) -> np.ndarray:
    case = MODELS[name][0]
    return CASE_BY_ALGORITHM[case].X if case is not None else BLOBS


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the module with one model of each family, trained from JSON."""
    settings = make_settings(tmp_path_factory.mktemp("csv"))
    with TestClient(create_app(settings)) as client:
        for name, (case_name, names) in MODELS.items():
            anomaly = {"contamination": CONTAMINATION}
            if case_name is None:
                body = training_body(
                    name=name,
                    algorithm="isolation_forest",
                    params=FOREST_PARAMS,
                    anomaly=anomaly,
                )
            else:
                body = case_body(CASE_BY_ALGORITHM[case_name], name=name, anomaly=anomaly)
            if names is not None:
                body["feature_names"] = names
            response = client.post("/v1/models", json=body)
            assert response.status_code == 201, response.text
        yield client


def expected_answer(fitted: Any, name: str, op: str, X: np.ndarray, **options: Any) -> Any:
    """What scikit-learn, called directly, answers: the Reference of the model's case, or, for
    the isolation forest, IsolationForest itself (its scores only)."""
    case_name = MODELS[name][0]
    if case_name is not None:
        reference: Reference = fitted(CASE_BY_ALGORITHM[case_name])
        body = {"instances": X.tolist(), **options}
        return reference.answer(op, body, stored_contamination=CONTAMINATION)
    if op != "score_samples":
        return None
    forest = IsolationForest(**FOREST_PARAMS).fit(BLOBS)
    return {"scores": forest.score_samples(X)}


# -- CSV answers equal JSON answers and scikit-learn's -------------------------------------------
@pytest.mark.parametrize(("name", "op"), CALLS, ids=[f"{n}-{o}" for n, o in CALLS])
def test_csv_rows_answer_as_json_rows_and_as_scikit_learn(
    served: TestClient, fitted: Any, name: str, op: str
) -> None:
    url = f"/v1/models/{name}/{op}"
    X = new_rows(rows_of(name))
    as_json = served.post(url, json={"instances": X.tolist()})
    assert as_json.status_code == 200, as_json.text
    as_csv = post_csv(served, url, csv_bytes(X))
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"] == "application/json"
    assert as_csv.json() == as_json.json()
    expected = expected_answer(fitted, name, op, X)
    if expected is not None:
        assert_same(as_csv.json(), expected)
    versioned = post_csv(served, f"/v1/models/{name}/versions/1/{op}", csv_bytes(X))
    assert versioned.json() == as_json.json()


@pytest.mark.parametrize("options", [{"contamination": 0.25}, {"threshold": 0.5}, {}])
def test_anomaly_options_go_in_the_lloyd_request_header(
    served: TestClient, fitted: Any, options: dict[str, Any]
) -> None:
    X = new_rows(BLOBS)
    url = "/v1/models/kmeans/anomalies"
    as_csv = post_csv(served, url, csv_bytes(X), options)
    as_json = served.post(url, json={"instances": X.tolist(), **options})
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.json() == as_json.json()
    assert_same(as_csv.json(), expected_answer(fitted, "kmeans", "anomalies", X, **options))


def test_explanations_from_csv_rows(served: TestClient) -> None:
    X = new_rows(BLOBS)
    fields = {"explain": True, "top_features": 1}
    url = "/v1/models/gaussian-mixture/anomalies"
    as_csv = post_csv(served, url, csv_bytes(X, NAMES), fields)
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.json() == served.post(url, json={"instances": X.tolist(), **fields}).json()
    assert as_csv.json()["contributions"][0][0]["feature"] in NAMES


# -- header rows ---------------------------------------------------------------------------------
def _variants() -> list[Any]:
    X = new_rows(BLOBS)
    quoted = "\n".join(
        [",".join(f'"{n}"' for n in NAMES), *(",".join(f'"{v!r}"' for v in r) for r in X.tolist())]
    )
    reversed_header = csv_bytes(X[:, ::-1], NAMES[::-1])
    return [
        pytest.param(CSV, csv_bytes(X), id="no-header"),
        pytest.param(CSV, csv_bytes(X, NAMES), id="header"),
        pytest.param(CSV, reversed_header, id="header-in-another-order"),
        pytest.param(f"{CSV}; header=present", csv_bytes(X, NAMES), id="header=present"),
        pytest.param(f"{CSV}; header=absent", csv_bytes(X), id="header=absent"),
        pytest.param("Text/CSV; Header=Present; charset=UTF-8", csv_bytes(X, NAMES), id="case"),
        pytest.param(CSV, csv_bytes(X, NAMES, end="\r\n"), id="crlf"),
        pytest.param(CSV, b"\xef\xbb\xbf" + csv_bytes(X, NAMES, end="\r\n"), id="excel-bom"),
        pytest.param(CSV, csv_bytes(X, NAMES).rstrip(b"\n"), id="no-final-line-break"),
        pytest.param(CSV, b"\n" + csv_bytes(X, NAMES).replace(b"\n", b"\n\n"), id="blank-lines"),
        pytest.param(CSV, quoted.encode(), id="quoted-cells"),
        pytest.param(CSV, csv_bytes(X, NAMES).replace(b",", b", "), id="spaces-after-commas"),
        pytest.param(
            f"{CSV}; charset=utf-16", csv_bytes(X, NAMES).decode().encode("utf-16"), id="utf-16"
        ),
    ]


@pytest.mark.parametrize(("content_type", "body"), _variants())
def test_every_way_of_writing_the_rows_answers_alike(
    served: TestClient, fitted: Any, content_type: str, body: bytes
) -> None:
    """The model has feature names: a header in any order maps to them, as records do; without
    a header, the columns are taken in order, as instances are."""
    X = new_rows(BLOBS)
    url = "/v1/models/gaussian-mixture/predict_proba"
    response = post_csv(served, url, body, content_type=content_type)
    assert response.status_code == 200, response.text
    assert response.json() == served.post(url, json={"instances": X.tolist()}).json()
    assert_same(response.json(), expected_answer(fitted, "gaussian-mixture", "predict_proba", X))


def test_a_header_maps_as_records_keys_do(served: TestClient) -> None:
    X = new_rows(BLOBS)
    records = [dict(zip(NAMES[::-1], row, strict=True)) for row in X[:, ::-1].tolist()]
    url = "/v1/models/gaussian-mixture/score_samples"
    by_records = served.post(url, json={"records": records}).json()
    assert post_csv(served, url, csv_bytes(X[:, ::-1], NAMES[::-1])).json() == by_records


def test_a_header_on_a_model_without_feature_names_is_read_in_order(served: TestClient) -> None:
    """Records need feature names; a CSV header on such a model only labels the columns."""
    X = new_rows(BLOBS)
    url = "/v1/models/kmeans/transform"
    expected = served.post(url, json={"instances": X.tolist()}).json()
    assert post_csv(served, url, csv_bytes(X, ["x", "y"])).json() == expected


@pytest.mark.parametrize(
    ("header", "key"),
    [
        pytest.param(["temperature", "pressure", "humidity"], "humidity", id="unknown"),
        pytest.param(["temperature"], "pressure", id="missing"),
        pytest.param(["temperature", "presure"], "pressure", id="misspelt"),
    ],
)
def test_a_header_that_does_not_match_the_features_is_refused(
    served: TestClient, header: list[str], key: str
) -> None:
    """The same names are required as of records, and the mismatch is located the same way:
    at the first missing name, else the first unknown one."""
    X = np.ones((2, len(header)))
    response = post_csv(served, "/v1/models/gaussian-mixture/predict", csv_bytes(X, header))
    problem = assert_problem(response, 422, "invalid_input")
    assert_error_at(problem, "body", "columns", key)
    assert key in problem["detail"]
    assert problem["errors"][0]["pointer"] == f"/columns/{key}"


def test_rows_of_another_width_than_the_model_are_refused(served: TestClient) -> None:
    response = post_csv(served, "/v1/models/kmeans/predict", b"1,2,3\n4,5,6\n")
    problem = assert_problem(response, 422, "invalid_input")
    assert_error_at(problem, "body", 0)
    assert "3 features" in problem["detail"]


# -- every way of getting CSV wrong ----------------------------------------------------------------
BAD_BODIES = [
    pytest.param(b"1,2\n3,4\n5\n", CSV, ("body", 2), "row 2 (line 3) has 1 values", id="ragged"),
    pytest.param(b"1,2\n3,4,5\n", CSV, ("body", 1), "has 3 values", id="ragged-longer"),
    pytest.param(
        b"temperature,pressure\n1,2\n3\n", CSV, ("body", 1), "the header has 2", id="ragged-header"
    ),
    pytest.param(b"1,2\n3,abc\n", CSV, ("body", 1, 1), "'abc', not a number", id="text"),
    pytest.param(b"1,2\n3,true\n", CSV, ("body", 1, 1), "'true'", id="boolean"),
    pytest.param(b"1,2\n3,[4]\n", CSV, ("body", 1, 1), "'[4]'", id="bracket"),
    pytest.param(b"1,2\n,4\n", CSV, ("body", 1, 0), "is empty", id="empty-cell"),
    pytest.param(b"1,2\n3,4,\n", CSV, ("body", 1), "has 3 values", id="trailing-comma"),
    pytest.param(b"1,2\n3,nan\n", CSV, ("body", 1, 1), "finite", id="nan"),
    pytest.param(b"1,2\n-inf,4\n", CSV, ("body", 1, 0), "finite", id="infinity"),
    pytest.param(b"1,2\n1e999,4\n", CSV, ("body", 1, 0), "finite", id="overflow"),
    pytest.param(b"", CSV, ("body",), "no rows", id="empty-body"),
    pytest.param(b"\r\n\n  \n", CSV, ("body",), "no rows", id="blank-lines-only"),
    pytest.param(b"temperature,pressure\n", CSV, ("body",), "only a header", id="header-only"),
    pytest.param(b"temperature,1.5\n1,2\n", CSV, ("body", 0, 0), "header=present", id="mixed"),
    pytest.param(b"a,b\n1,2\n", f"{CSV}; header=absent", ("body", 0, 0), "'a'", id="absent"),
    pytest.param(b"a,a\n1,2\n", CSV, ("body", "columns", 1), "unique", id="duplicate-names"),
    pytest.param(b",a\n0,1\n", CSV, ("body", "columns", 0), "index=False", id="pandas-index"),
    pytest.param(b"1;2\n3;4\n", CSV, ("body", 0, 0), "semicolons", id="semicolons"),
    pytest.param(b'1,2\n3,"4\n', CSV, ("body",), "not CSV", id="open-quote"),
    pytest.param(b"1,2\n3,\xff\n", CSV, ("body",), "not utf-8", id="not-utf-8"),
]


@pytest.mark.parametrize(("body", "content_type", "loc", "says"), BAD_BODIES)
def test_bad_csv_is_a_located_422(
    served: TestClient, body: bytes, content_type: str, loc: tuple[Any, ...], says: str
) -> None:
    for url in ("/v1/models/kmeans/predict", "/v1/models"):
        fields = {"name": "never", "algorithm": "kmeans"} if url == "/v1/models" else None
        response = post_csv(served, url, body, fields, content_type=content_type)
        problem = assert_problem(response, 422, "invalid_input")
        assert_error_at(problem, *loc)
        assert says in problem["detail"], problem["detail"]
    assert served.get("/v1/models/never").status_code == 404


@pytest.mark.parametrize(
    ("content_type", "says"),
    [
        pytest.param(f"{CSV}; header=yes", "present or absent", id="header-parameter"),
        pytest.param(f"{CSV}; charset=klingon", "unknown charset", id="charset"),
    ],
)
def test_parameters_the_service_cannot_follow_are_a_415(
    served: TestClient, content_type: str, says: str
) -> None:
    response = post_csv(served, "/v1/models/kmeans/predict", b"1,2\n", content_type=content_type)
    problem = assert_problem(response, 415, "unsupported_media_type")
    assert says in problem["detail"]


def test_the_other_fields_go_in_the_header_and_nowhere_else(served: TestClient) -> None:
    url = "/v1/models/kmeans/anomalies"
    rows = {"instances": [[1.0, 2.0]]}
    problem = assert_problem(post_csv(served, url, b"1,2\n", rows), 422, "invalid_input")
    assert_error_at(problem, "header", "lloyd-request")
    assert "CSV" in problem["detail"]
    problem = assert_problem(post_csv(served, url, b"1,2\n", "{not json"), 422, "invalid_input")
    assert_error_at(problem, "header", "lloyd-request")
    unknown = post_csv(served, url, b"1,2\n", {"contamination": 0.1, "colour": "red"})
    problem = assert_problem(unknown, 422, "validation_error")
    assert_error_at(problem, "header", "lloyd-request", "colour")


def test_sample_takes_no_csv_body(served: TestClient) -> None:
    response = post_csv(served, "/v1/models/gaussian-mixture/sample", b"1,2\n")
    problem = assert_problem(response, 415, "unsupported_media_type")
    assert problem["detail"] == "the body must be application/json, not 'text/csv'"


def test_other_routes_name_csv_among_what_they_take(served: TestClient) -> None:
    response = served.post(
        "/v1/models/kmeans/predict", content=b"1,2", headers={"content-type": "text/plain"}
    )
    problem = assert_problem(response, 415, "unsupported_media_type")
    assert CSV in problem["detail"]


# -- numbers: the fast path and the csv module read the same float64 --------------------------
def tricky_rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 2)) * 10.0 ** rng.integers(-300, 300, size=(400, 2))
    X[:4] = [[-0.0, 5e-324], [2.2250738585072009e-308, 1.7976931348623157e308], [1, -1], [0, 3]]
    return X


def test_unusual_number_spellings_read_as_their_float64(served: TestClient) -> None:
    """Quoted cells, `+1`, `.5`, `1.`, `1E3`, leading zeros: read by the csv module and float()
    rather than the fast path, to the same values (the rows are scored, and the scores equal
    JSON's: the same float64 went in)."""
    X = tricky_rows()
    plain = csv_bytes(X)
    quoted = b"\n".join(
        b",".join(b'"' + c + b'"' for c in line.split(b",")) for line in plain.split()
    )
    url = "/v1/models/isolation-forest/score_samples"
    expected = served.post(url, json={"instances": X.tolist()}).json()
    assert post_csv(served, url, plain).json() == expected
    assert post_csv(served, url, quoted).json() == expected
    spelled = b"+1,.5\n1.,1E3\n007,-0.0\n"
    as_json = served.post(url, json={"instances": [[1, 0.5], [1, 1000], [7, -0.0]]}).json()
    assert post_csv(served, url, spelled).json() == as_json


def test_a_large_body_is_parsed_off_the_event_loop_to_the_same_rows(served: TestClient) -> None:
    X = np.random.default_rng(3).normal(size=(40_000, 2))
    body = csv_bytes(X, NAMES)
    assert len(body) > THREAD_PARSE_MIN_BYTES
    url = "/v1/models/kmeans/predict"
    as_csv = post_csv(served, url, body)
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.json() == served.post(url, json={"instances": X.tolist()}).json()


# -- training and model selection from CSV ---------------------------------------------------
def comparable(version: dict[str, Any]) -> dict[str, Any]:
    """A version document without what differs between two trainings of the same thing."""
    volatile = {"name", "created_at", "training_seconds", "artifact", "aliases"}
    return {key: value for key, value in version.items() if key not in volatile}


KMEANS = {"algorithm": "kmeans", "params": {"n_clusters": 3, "random_state": 0}}


def test_training_from_csv_equals_training_from_records(served: TestClient) -> None:
    """The header names the features, as records' keys do; the fit is scikit-learn's."""
    response = post_csv(served, "/v1/models", csv_bytes(BLOBS, NAMES), {"name": "csv-1", **KMEANS})
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["feature_names"] == NAMES
    records = [dict(zip(NAMES, row, strict=True)) for row in BLOBS.tolist()]
    by_records = served.post(
        "/v1/models", json={"name": "records-1", **KMEANS, "data": {"records": records}}
    ).json()
    assert comparable(version) == comparable(by_records)
    centers = served.get("/v1/models/csv-1/versions/1/parameters").json()["parameters"]
    estimator = KMeans(n_clusters=3, random_state=0).fit(BLOBS)
    np.testing.assert_array_equal(centers["cluster_centers"], estimator.cluster_centers_)
    X = new_rows(BLOBS)
    labels = post_csv(served, "/v1/models/csv-1/predict", csv_bytes(X[:, ::-1], NAMES[::-1]))
    assert labels.json()["labels"] == estimator.predict(X).tolist()


def test_training_from_csv_without_a_header(served: TestClient) -> None:
    fields = {"name": "csv-2", **KMEANS, "feature_names": NAMES}
    response = post_csv(served, "/v1/models", csv_bytes(BLOBS), fields)
    assert response.status_code == 201, response.text
    assert response.json()["feature_names"] == NAMES
    bare = post_csv(served, "/v1/models", csv_bytes(BLOBS), {"name": "csv-3", **KMEANS})
    assert bare.status_code == 201, bare.text
    assert bare.json()["feature_names"] is None
    wrong = post_csv(served, "/v1/models", csv_bytes(BLOBS), fields | {"feature_names": ["a"]})
    assert_error_at(
        assert_problem(wrong, 422, "invalid_input"), "header", "lloyd-request", "feature_names"
    )


def test_feature_names_beside_a_header_order_its_columns(served: TestClient) -> None:
    """As with records, `feature_names` given with a header are the same names, in the order
    the model keeps."""
    fields = {"name": "csv-4", **KMEANS, "feature_names": NAMES[::-1]}
    response = post_csv(served, "/v1/models", csv_bytes(BLOBS, NAMES), fields)
    assert response.status_code == 201, response.text
    assert response.json()["feature_names"] == NAMES[::-1]
    centers = served.get("/v1/models/csv-4/versions/1/parameters").json()["parameters"]
    estimator = KMeans(n_clusters=3, random_state=0).fit(BLOBS[:, ::-1])
    np.testing.assert_array_equal(centers["cluster_centers"], estimator.cluster_centers_)
    mismatch = post_csv(served, "/v1/models", csv_bytes(BLOBS, ["a", "b"]), fields)
    problem = assert_problem(mismatch, 422, "invalid_input")
    assert_error_at(problem, "body", "columns", "pressure")


def test_model_selection_from_csv_equals_json(served: TestClient) -> None:
    body = {"algorithm": "kmeans", "params": {"random_state": 0}, "grid": {"n_clusters": [2, 3]}}
    as_json = served.post(
        "/v1/model-selection", json=body | {"data": {"instances": BLOBS.tolist()}}
    )
    assert as_json.status_code == 200, as_json.text
    as_csv = post_csv(served, "/v1/model-selection", csv_bytes(BLOBS, NAMES), body)
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.json()["candidates"] == as_json.json()["candidates"]
    assert as_csv.json()["best"] == as_json.json()["best"]


# -- the OpenAPI document --------------------------------------------------------------------
def test_every_route_that_takes_rows_documents_csv(served: TestClient) -> None:
    paths = served.get("/openapi.json").json()["paths"]
    documented = {
        path: operation["requestBody"]["content"]
        for path, item in paths.items()
        for operation in item.values()
        if "requestBody" in operation
    }
    with_rows = [
        path
        for entry in TABLE
        if entry.takes_rows
        for path in (
            f"/v1/models/{{name}}/{entry.operation.value}",
            f"/v1/models/{{name}}/versions/{{version}}/{entry.operation.value}",
        )
    ]
    assert len(with_rows) == 2 * 8  # every operation but sample, on both routes
    for path in with_rows:
        content = documented[path][CSV]
        assert content["example"].startswith("temperature,pressure\n"), path
        assert "Lloyd-Request" in content["description"]
    # A training's CSV needs its fields in the Lloyd-Request header, which OpenAPI cannot tie
    # to one media type: documented, without an example that could not run as it is.
    for path in ("/v1/models", "/v1/model-selection"):
        content = documented[path][CSV]
        assert "example" not in content and "Lloyd-Request" in content["description"], path
    for path in ("/v1/models/{name}/sample", "/v1/models/{name}/versions/{version}/sample"):
        assert CSV not in documented[path]
