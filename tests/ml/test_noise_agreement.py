"""An inductive clusterer's notion of noise is one: farther than ``max_distance`` from every
anchor (for DBSCAN, ``eps`` from every core sample). ``anomalies`` at the stored threshold and
``predict``'s ``-1`` agree on every row, whatever the training set, and the training rows'
scores are taken as if each were new, so that percentiles and contamination overrides mean
something even when every training row is a core sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from sklearn.cluster import DBSCAN
from sklearn.datasets import make_blobs, make_moons

from app.ml.catalog import ALGORITHMS
from app.ml.exceptions import FitError
from app.ml.fitting import fit_model
from app.ml.model import NOISE_BOUNDARY, FittedModel

CONTAMINATION = 0.02  # the API's default


def fit(algorithm: str, X: np.ndarray, preprocessing=(), **params: Any) -> FittedModel:
    return fit_model(
        algorithm=ALGORITHMS[algorithm],
        params=params,
        preprocessing=list(preprocessing),
        X=X,
        feature_names=None,
        contamination=CONTAMINATION,
    ).model


def probe_rows(X: np.ndarray) -> np.ndarray:
    """The training rows, rows nudged off them, and a grid over and around them."""
    rng = np.random.default_rng(0)
    low, high = X.min(axis=0) - 1.0, X.max(axis=0) + 1.0
    grid = rng.uniform(low, high, size=(400, X.shape[1]))
    return np.vstack([X, X + rng.normal(0, 0.05, X.shape), grid])


def assert_noise_is_one_notion(model: FittedModel, X: np.ndarray) -> None:
    rows = probe_rows(X)
    scores = model.anomaly_scores(rows)
    flagged = scores > model.anomaly.threshold
    np.testing.assert_array_equal(flagged, model.predict(rows) == -1)
    assert model.anomaly.threshold == model.estimator.max_distance_
    assert model.anomaly.summary["threshold_rule"] == NOISE_BOUNDARY


ALL_CORE = make_moons(n_samples=200, noise=0.03, random_state=0)[0]


def test_every_training_row_a_core_sample_no_longer_flags_every_new_row():
    assert len(DBSCAN(eps=0.2).fit(ALL_CORE).core_sample_indices_) == len(ALL_CORE)
    model = fit("dbscan", ALL_CORE, eps=0.2)
    # Before: the 0.98 quantile of 200 zeros, 0.0, and every row off the training set flagged.
    assert model.anomaly.threshold == 0.2
    nudged = ALL_CORE[:50] + 0.01
    answer = model.anomaly_scores(nudged)
    assert np.all(answer > 0)
    assert not np.any(answer > model.anomaly.threshold)
    np.testing.assert_array_equal(model.predict(nudged), DBSCAN(eps=0.2).fit(ALL_CORE).labels_[:50])
    assert_noise_is_one_notion(model, ALL_CORE)
    # The training rows are scored as if new: each core sample's distance to its nearest other
    # one. So percentiles spread, and a contamination asked for gives a threshold above 0.
    between = cdist(ALL_CORE, ALL_CORE)
    np.fill_diagonal(between, np.inf)
    loo = np.sort(between.min(axis=1))
    np.testing.assert_allclose(model.anomaly.reference, loo, rtol=1e-9, atol=0)
    assert model.anomaly.contamination == 0.0  # no core sample is farther than eps from another
    assert model.anomaly.threshold_for(0.05) == pytest.approx(np.quantile(loo, 0.95), rel=1e-9)
    assert model.anomaly.threshold_for(0.05) > 0
    assert 0 < np.median(model.anomaly.percentiles(model.anomaly_scores(nudged))) < 100


@pytest.mark.parametrize(
    ("algorithm", "params"),
    [
        ("dbscan", {"eps": 0.2}),
        ("dbscan", {"eps": 0.1, "min_samples": 6}),
        ("dbscan", {"eps": 0.3, "min_samples": 3, "max_distance": 0.15}),
        ("dbscan", {"eps": 0.25, "metric": "manhattan"}),
        ("agglomerative", {"n_clusters": 2}),
        ("agglomerative", {"n_clusters": 4, "linkage": "single", "max_distance": 0.1}),
        ("spectral", {"n_clusters": 2, "affinity": "nearest_neighbors", "random_state": 0}),
        ("hdbscan", {"min_cluster_size": 10}),
        ("hdbscan", {"min_cluster_size": 5, "min_samples": 3}),
    ],
)
@pytest.mark.parametrize("dataset", ["all_core_moons", "noisy_moons", "blobs"])
def test_anomalies_and_predict_agree(algorithm, params, dataset):
    X = {
        "all_core_moons": ALL_CORE,
        "noisy_moons": make_moons(n_samples=300, noise=0.12, random_state=1)[0],
        "blobs": make_blobs(n_samples=300, centers=3, cluster_std=0.3, random_state=2)[0] / 5,
    }[dataset]
    try:
        model = fit(algorithm, X, **params)
    except FitError:
        pytest.skip("no cluster on this data with these settings")
    assert_noise_is_one_notion(model, X)
    # The reported contamination is the share of training rows (scored as new) beyond it.
    scores = model.training_anomaly_scores(model.model_space(X))
    assert model.anomaly.contamination == np.mean(scores > model.anomaly.threshold)


def test_they_agree_through_the_preprocessing_too():
    X = make_moons(n_samples=300, noise=0.08, random_state=3)[0] * [10.0, 1.0]
    model = fit("dbscan", X, [{"step": "standard_scaler"}], eps=0.3)
    assert_noise_is_one_notion(model, X)


def test_refit_without_outliers_drops_the_noise_and_still_agrees():
    X = make_moons(n_samples=300, noise=0.12, random_state=1)[0]
    result = fit_model(
        algorithm=ALGORITHMS["dbscan"],
        params={"eps": 0.1, "min_samples": 6},
        preprocessing=[],
        X=X,
        feature_names=None,
        contamination=CONTAMINATION,
        refit_without_outliers=True,
    )
    first = DBSCAN(eps=0.1, min_samples=6).fit(X)
    # Dropped: DBSCAN's noise, and the core samples with no other core sample within eps
    # (their neighbours all border points), which would be noise were they new.
    core = first.core_sample_indices_
    between = cdist(X[core], X[core])
    np.fill_diagonal(between, np.inf)
    lonely_core = np.sum(between.min(axis=1) > 0.1)
    assert lonely_core > 0
    dropped = np.sum(first.labels_ == -1) + lonely_core
    assert result.metrics["refit_without_outliers"]["dropped_rows"] == dropped
    assert_noise_is_one_notion(result.model, X)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(8, 120),
    eps=st.floats(0.05, 1.5),
    min_samples=st.integers(1, 8),
    spread=st.floats(0.05, 3.0),
)
def test_for_any_training_set_dbscan_noise_is_one_notion(seed, n, eps, min_samples, spread):
    X = np.random.default_rng(seed).normal(0.0, spread, size=(n, 2))
    try:
        model = fit("dbscan", X, eps=eps, min_samples=min_samples)
    except FitError:
        return  # no core sample: nothing to assign, refused at training
    assert_noise_is_one_notion(model, X)
    # DBSCAN's own training noise is exactly what predict calls noise on the training rows.
    np.testing.assert_array_equal(
        model.predict(X) == -1, DBSCAN(eps=eps, min_samples=min_samples).fit(X).labels_ == -1
    )
