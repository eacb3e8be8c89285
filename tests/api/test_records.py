"""Rows as records: feature names from the keys, any key order, and clear errors on a mismatch."""

from __future__ import annotations

import pytest
from sklearn.cluster import KMeans

from tests.api.contract import BLOBS, assert_error_at, assert_problem, call, new_rows, train

NAMES = ["temperature", "pressure"]


def as_records(X, names: list[str]) -> list[dict[str, float]]:
    return [dict(zip(names, row, strict=True)) for row in X.tolist()]


@pytest.fixture
def by_records(client) -> dict:
    """k-means trained on records keyed temperature, pressure (no feature_names given)."""
    return train(client, name="records", data={"records": as_records(BLOBS, NAMES)})


def test_feature_names_come_from_the_record_keys(by_records):
    assert by_records["feature_names"] == NAMES
    assert (by_records["n_samples"], by_records["n_features"]) == BLOBS.shape


def test_records_in_any_key_order_predict_as_instances_and_as_scikit_learn(client, by_records):
    X = new_rows(BLOBS)
    expected = KMeans(n_clusters=3, random_state=0).fit(BLOBS).predict(X).tolist()
    reversed_keys = as_records(X[:, ::-1], NAMES[::-1])
    assert list(reversed_keys[0]) == ["pressure", "temperature"]
    for body in (
        {"records": reversed_keys},
        {"records": as_records(X, NAMES)},
        {"instances": X.tolist()},
    ):
        response = call(client, "records", "predict", body)
        assert response.status_code == 200, response.text
        assert response.json()["labels"] == expected


def test_explicit_feature_names_order_the_columns(client):
    """Records trained with feature_names in another order than their keys: the columns follow
    feature_names, so instances posted later are in that order."""
    doc = train(
        client,
        name="ordered",
        data={"records": as_records(BLOBS, NAMES)},
        feature_names=NAMES[::-1],
    )
    assert doc["feature_names"] == NAMES[::-1]
    X = new_rows(BLOBS)
    expected = KMeans(n_clusters=3, random_state=0).fit(BLOBS[:, ::-1]).predict(X[:, ::-1])
    by_instances = call(client, "ordered", "predict", {"instances": X[:, ::-1].tolist()})
    by_records = call(client, "ordered", "predict", {"records": as_records(X, NAMES)})
    assert by_instances.json()["labels"] == expected.tolist()
    assert by_records.json()["labels"] == expected.tolist()


@pytest.mark.parametrize(
    ("record", "key"),
    [
        pytest.param(
            {"temperature": 1.0, "pressure": 2.0, "humidity": 3.0}, "humidity", id="unknown"
        ),
        pytest.param({"temperature": 1.0}, "pressure", id="missing"),
        pytest.param({"temperature": 1.0, "presure": 2.0}, "pressure", id="misspelt"),
    ],
)
def test_records_that_do_not_match_the_features_are_refused(client, by_records, record, key):
    body = {"records": [{"temperature": 0.0, "pressure": 0.0}, record]}
    problem = assert_problem(call(client, "records", "predict", body), 422, "invalid_input")
    assert_error_at(problem, "body", "records", 1, key)
    assert key in problem["detail"]


def test_records_on_a_model_without_feature_names_are_refused(client):
    train(client, name="unnamed")
    body = {"records": [{"temperature": 0.0, "pressure": 0.0}]}
    problem = assert_problem(call(client, "unnamed", "predict", body), 422, "invalid_input")
    assert_error_at(problem, "body", "records")
