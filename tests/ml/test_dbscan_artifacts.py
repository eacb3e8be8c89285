"""DBSCAN artifacts written before the inductive clusterers shared one class (Lloyd at 478de48,
tests/ml/data/make_dbscan_478de48.py) load as the same model: the same labels, anomaly scores
and stored threshold, and predict_proba in today's shape (the noise class first)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn

from app.ml.dbscan_knn import DBSCANKNN
from app.ml.inductive import InductiveClusterer
from app.ml.model import FittedModel

DATA = Path(__file__).parent / "data"
WRITTEN = json.loads((DATA / "dbscan_478de48.json").read_text())
NAMES = sorted(WRITTEN["models"])

# scikit-learn supports unpickling only under the version that pickled (the registry refuses
# the others: app.registry.compatibility); these files were written by this one.
pytestmark = pytest.mark.skipif(
    sklearn.__version__ != WRITTEN["scikit-learn"],
    reason=f"written by scikit-learn {WRITTEN['scikit-learn']}",
)


@pytest.fixture(scope="module", params=NAMES)
def old(request: pytest.FixtureRequest) -> tuple[FittedModel, dict[str, Any]]:
    model = joblib.load(DATA / f"dbscan_{request.param}_478de48.joblib")
    return model, WRITTEN["models"][request.param]


ROWS = np.asarray(WRITTEN["rows"])


def test_it_loads_as_todays_class(old):
    model, _ = old
    est = model.estimator
    assert type(est) is DBSCANKNN
    assert isinstance(est, InductiveClusterer)
    np.testing.assert_array_equal(est.anchor_indices_, est.core_sample_indices_)
    assert est.anchors_ is est.components_
    assert est.classes_[0] == -1


def test_labels_scores_and_threshold_are_the_ones_it_gave(old):
    model, written = old
    np.testing.assert_array_equal(model.predict(ROWS), written["predict"])
    np.testing.assert_array_equal(model.anomaly_scores(ROWS), written["anomaly_scores"])
    assert model.anomaly.threshold == written["threshold"]  # a version is immutable


def test_predict_proba_adds_the_noise_class_and_keeps_the_votes_of_the_rest(old):
    model, written = old
    proba, classes = model.predict_proba(ROWS)
    assert classes.tolist() == [-1, *written["classes"]]
    labels = np.asarray(written["predict"])
    noise = labels == -1
    assert noise.any() and not noise.all()
    np.testing.assert_array_equal(proba[~noise, 1:], np.asarray(written["predict_proba"])[~noise])
    np.testing.assert_array_equal(proba[noise, 0], 1.0)
    np.testing.assert_array_equal(proba[noise, 1:], 0.0)
    np.testing.assert_array_equal(classes[proba.argmax(axis=1)], labels)


def test_parameters_keep_their_fields(old):
    model, written = old
    parameters = model.parameters()
    for key in ("n_core_samples", "eps", "max_distance", "n_neighbors", "anomaly"):
        assert parameters[key] == written["parameters"][key], key
    assert parameters["classes"] == [-1, *written["parameters"]["classes"]]


def test_a_loaded_old_model_pickles_and_loads_again_the_same(old):
    model, written = old
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(ROWS), written["predict"])
    assert again.estimator.classes_.tolist() == model.estimator.classes_.tolist()


def test_the_old_all_core_threshold_was_the_bug_retraining_fixes():
    """Every training row a core sample: the old stored threshold is 0 and flags every new
    row off the training set; a new fit stores eps, where predict's noise begins."""
    written = WRITTEN["models"]["all_core"]
    assert written["noise_ratio"] == 0.0
    assert written["threshold"] == 0.0
