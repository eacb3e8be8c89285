"""The anomalies operation: scores, flags, percentiles and the three sources of its threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.datasets import make_moons

from tests.api.contract import (
    CASE_BY_ALGORITHM,
    PLAIN_CASES,
    PREPROCESSED_CASES,
    assert_error_at,
    assert_problem,
    call,
    case_body,
    new_rows,
    train,
)
from tests.api.reference import RTOL, assert_same

CONTAMINATION = 0.05
ANOMALY_CASES = [*PLAIN_CASES, PREPROCESSED_CASES[0]]


@pytest.mark.parametrize("case", ANOMALY_CASES, ids=[c.id for c in ANOMALY_CASES])
def test_scores_flags_and_percentiles_for_each_threshold_source(client, fitted, case):
    reference = fitted(case)
    doc = client.post(
        "/v1/models", json=case_body(case, anomaly={"contamination": CONTAMINATION})
    ).json()
    name = doc["name"]
    training_scores = reference.training_scores
    assert doc["anomaly"]["threshold"] == pytest.approx(
        reference.stored_threshold(CONTAMINATION), rel=RTOL, abs=0
    )
    # Nudged training rows, far rows, and training rows themselves (ties: "strictly lower").
    X = np.vstack([new_rows(case.X), case.X[10:14]])
    requests = [
        {},
        {"contamination": 0.0},
        {"contamination": 0.25},
        {"contamination": 0.5},
        {"threshold": float(np.median(training_scores))},
        {"threshold": 0},
    ]
    for overrides in requests:
        response = call(client, name, "anomalies", {"instances": X.tolist()} | overrides)
        assert response.status_code == 200, (overrides, response.text)
        answer = response.json()
        expected = reference.anomalies(
            X,
            stored_contamination=CONTAMINATION,
            contamination=overrides.get("contamination"),
            threshold=overrides.get("threshold"),
        )
        assert_same(answer, expected)
        scores = np.asarray(answer["anomaly_scores"])
        assert answer["is_anomaly"] == (scores > answer["threshold"]).tolist()
        if reference.inductive and not overrides:
            # At the stored threshold, an anomaly is exactly what predict calls noise.
            labels = call(client, name, "predict", {"instances": X.tolist()}).json()["labels"]
            assert answer["is_anomaly"] == [label == -1 for label in labels]
        if "threshold" in overrides:
            assert answer["threshold"] == overrides["threshold"]


def test_core_samples_of_dbscan_score_zero_at_percentile_zero(client, fitted):
    case = CASE_BY_ALGORITHM["dbscan"]
    reference = fitted(case)
    train(client, **case_body(case, name="moons"))
    core = case.X[reference.estimator.core_sample_indices_[:5]]
    answer = call(client, "moons", "anomalies", {"instances": core.tolist()}).json()
    assert answer["anomaly_scores"] == [0.0] * 5
    assert answer["percentiles"] == [0.0] * 5
    assert answer["is_anomaly"] == [False] * 5


def test_contamination_and_threshold_together_are_refused(client):
    train(client, **case_body(CASE_BY_ALGORITHM["kmeans"], name="m"))
    body = {"instances": [[0.0, 0.0]], "contamination": 0.1, "threshold": 1.0}
    problem = assert_problem(call(client, "m", "anomalies", body), 422, "validation_error")
    assert "contamination" in problem["detail"]
    assert "threshold" in problem["detail"]


@pytest.mark.parametrize("contamination", [0.7, -0.1])
def test_contamination_override_out_of_range_is_refused(client, contamination):
    train(client, **case_body(CASE_BY_ALGORITHM["kmeans"], name="m"))
    body = {"instances": [[0.0, 0.0]], "contamination": contamination}
    problem = assert_problem(call(client, "m", "anomalies", body), 422, "validation_error")
    assert_error_at(problem, "body", "contamination")


def test_a_dbscan_whose_every_training_row_is_a_core_sample_flags_only_its_noise(client):
    """The chapter's moons at eps 0.2: every training row a core sample. The stored threshold
    was the 0.98 quantile of zeros, 0.0, and every row off the training set an anomaly."""
    X = make_moons(n_samples=200, noise=0.03, random_state=0)[0]
    assert len(DBSCAN(eps=0.2).fit(X).core_sample_indices_) == len(X)
    doc = train(
        client,
        **case_body(CASE_BY_ALGORITHM["dbscan"], name="moons", data={"instances": X.tolist()}),
    )
    assert doc["anomaly"]["threshold"] == 0.2
    assert doc["anomaly"]["contamination"] == 0.0
    rows = np.vstack([X[:20] + 0.01, [[3.0, 3.0], [-2.0, 2.0]]])
    answer = call(client, "moons", "anomalies", {"instances": rows.tolist()}).json()
    labels = call(client, "moons", "predict", {"instances": rows.tolist()}).json()["labels"]
    assert answer["is_anomaly"] == [False] * 20 + [True, True]
    assert answer["is_anomaly"] == [label == -1 for label in labels]
    # Percentiles among the training rows scored as if new: a nudged row is not above them all.
    assert max(answer["percentiles"][:20]) < 100.0
