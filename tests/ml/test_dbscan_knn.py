"""DBSCANKNN against DBSCAN and KNeighborsClassifier called directly, and its estimator contract."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.cluster import DBSCAN
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils import estimator_checks
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from app.ml.dbscan_knn import DBSCANKNN

EPS = 0.15


@pytest.fixture(scope="module")
def fitted(moons) -> DBSCANKNN:
    return DBSCANKNN(eps=EPS).fit(moons.X)


def reference_knn(est: DBSCANKNN, n_neighbors: int = 5, weights: str = "uniform"):
    """A KNeighborsClassifier fitted by hand on the core samples and their DBSCAN labels."""
    core = est.core_sample_indices_
    return KNeighborsClassifier(n_neighbors=n_neighbors, weights=weights).fit(
        est.components_, est.labels_[core]
    )


def test_fit_equals_dbscan(moons, fitted):
    reference = DBSCAN(eps=EPS).fit(moons.X)
    np.testing.assert_array_equal(fitted.labels_, reference.labels_)
    np.testing.assert_array_equal(fitted.core_sample_indices_, reference.core_sample_indices_)
    np.testing.assert_array_equal(fitted.components_, reference.components_)
    # The data set is chosen so the checks below see clusters, noise and border points.
    assert len(set(reference.labels_.tolist()) - {-1}) >= 2
    assert np.sum(reference.labels_ == -1) > 0
    assert len(reference.core_sample_indices_) < len(moons.X)
    # The columns of predict_proba: noise first, then DBSCAN's clusters.
    np.testing.assert_array_equal(
        fitted.classes_, [-1, *np.unique(reference.labels_[fitted.labels_ >= 0])]
    )
    np.testing.assert_array_equal(fitted.anchor_indices_, reference.core_sample_indices_)
    assert fitted.anchors_ is fitted.components_
    assert fitted.n_features_in_ == 2
    assert fitted.max_distance_ == EPS
    assert fitted.n_neighbors_ == 5


@pytest.mark.parametrize(
    ("metric", "p", "eps"),
    [
        ("manhattan", None, 0.2),
        ("chebyshev", None, 0.12),
        ("minkowski", 3.0, 0.15),
        ("cosine", None, 0.002),
    ],
)
def test_fit_equals_dbscan_for_other_metrics(moons, metric, p, eps):
    est = DBSCANKNN(eps=eps, metric=metric, p=p).fit(moons.X)
    reference = DBSCAN(eps=eps, metric=metric, p=p).fit(moons.X)
    np.testing.assert_array_equal(est.labels_, reference.labels_)
    np.testing.assert_array_equal(est.core_sample_indices_, reference.core_sample_indices_)
    # Noise in training is exactly "no core sample within eps": predict says the same.
    np.testing.assert_array_equal(est.predict(moons.X) == -1, reference.labels_ == -1)


def test_fit_returns_self_and_fit_predict_gives_dbscan_labels(moons):
    est = DBSCANKNN(eps=EPS)
    assert est.fit(moons.X) is est
    np.testing.assert_array_equal(
        DBSCANKNN(eps=EPS).fit_predict(moons.X), DBSCAN(eps=EPS).fit_predict(moons.X)
    )


def test_predict_on_training_points(moons, fitted):
    labels = fitted.predict(moons.X)
    core = fitted.core_sample_indices_
    np.testing.assert_array_equal(labels[core], fitted.labels_[core])
    # DBSCAN's noise points have no core sample within eps, its border points have one.
    np.testing.assert_array_equal(labels == -1, fitted.labels_ == -1)


def test_predict_equals_knn_vote_within_eps_and_noise_beyond(moons, fitted):
    knn = reference_knn(fitted)
    nearest = cdist(moons.X_new, fitted.components_).min(axis=1)
    expected = np.where(nearest > EPS, -1, knn.predict(moons.X_new))
    np.testing.assert_array_equal(fitted.predict(moons.X_new), expected)
    np.testing.assert_allclose(fitted.core_distance(moons.X_new), nearest, rtol=1e-9, atol=1e-12)
    assert 0 < np.sum(expected == -1) < len(expected)


def test_far_points_are_noise(fitted):
    far = np.array([[10.0, 10.0], [-10.0, 5.0], [0.5, 50.0]])
    np.testing.assert_array_equal(fitted.predict(far), [-1, -1, -1])


@pytest.mark.parametrize("max_distance", [0.0, 0.05, EPS, 0.3, 1.0, 100.0])
def test_max_distance_sets_the_noise_cut(moons, max_distance):
    est = DBSCANKNN(eps=EPS, max_distance=max_distance).fit(moons.X)
    # DBSCAN itself does not use max_distance.
    np.testing.assert_array_equal(est.labels_, DBSCAN(eps=EPS).fit(moons.X).labels_)
    assert est.max_distance_ == max_distance
    rows = np.vstack([moons.X, moons.X_new])
    nearest = cdist(rows, est.components_).min(axis=1)
    expected = np.where(nearest > max_distance, -1, reference_knn(est).predict(rows))
    np.testing.assert_array_equal(est.predict(rows), expected)
    if max_distance == 0.0:
        # Only the core samples themselves are at distance 0 of a core sample.
        labelled = np.flatnonzero(est.predict(moons.X) != -1)
        np.testing.assert_array_equal(labelled, est.core_sample_indices_)


def test_larger_max_distance_never_adds_noise(moons):
    noise = [
        np.sum(DBSCANKNN(eps=EPS, max_distance=d).fit(moons.X).predict(moons.X_new) == -1)
        for d in (0.0, 0.1, 0.2, 0.4, 0.8, 2.0)
    ]
    assert noise == sorted(noise, reverse=True)
    assert noise[0] == len(moons.X_new)
    assert noise[-1] == 0


def test_n_neighbors_is_capped_by_the_core_samples():
    # Six points close together (the only core samples) and four scattered ones.
    tight = [[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [0.05, 0.05], [0.05, 0.0]]
    scattered = [[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]]
    X = np.array(tight + scattered)
    est = DBSCANKNN(eps=0.2, min_samples=5, n_neighbors=50).fit(X)
    assert len(est.core_sample_indices_) == 6
    assert est.n_neighbors_ == 6
    assert est.knn_.n_neighbors == 6
    assert est.n_neighbors == 50  # the parameter itself is untouched
    np.testing.assert_array_equal(est.predict(X), [0] * 6 + [-1] * 4)
    # Columns -1, 0: the scattered points are noise, the tight ones all vote 0.
    np.testing.assert_array_equal(est.classes_, [-1, 0])
    expected = np.array([[0.0, 1.0]] * 6 + [[1.0, 0.0]] * 4)
    np.testing.assert_allclose(est.predict_proba(X), expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("n_neighbors", [1, 5, 15])
def test_predict_proba_is_the_knn_vote_within_max_distance_and_noise_beyond(
    moons, weights, n_neighbors
):
    est = DBSCANKNN(eps=EPS, n_neighbors=n_neighbors, weights=weights).fit(moons.X)
    rows = np.vstack([moons.X, moons.X_new])
    proba = est.predict_proba(rows)
    knn = reference_knn(est, n_neighbors=n_neighbors, weights=weights)
    noise = cdist(rows, est.components_).min(axis=1) > EPS
    assert 0 < noise.sum() < len(rows)
    np.testing.assert_array_equal(est.classes_, [-1, *knn.classes_])
    assert proba.shape == (len(rows), len(est.classes_))
    # A row predict calls noise: certainly noise, no cluster; any other: the vote, no noise.
    np.testing.assert_array_equal(proba[noise], np.eye(len(est.classes_))[[0] * noise.sum()])
    np.testing.assert_allclose(
        proba[~noise, 1:], knn.predict_proba(rows[~noise]), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_array_equal(proba[~noise, 0], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9, atol=0)
    # The most probable class is predict's label, noise included.
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], est.predict(rows))


def test_pickle_round_trip_predicts_the_same(moons, fitted):
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict(moons.X_new), fitted.predict(moons.X_new))
    np.testing.assert_array_equal(
        restored.predict_proba(moons.X_new), fitted.predict_proba(moons.X_new)
    )
    np.testing.assert_array_equal(restored.labels_, fitted.labels_)


def test_clone_gives_an_unfitted_copy_with_the_same_params(moons):
    est = DBSCANKNN(eps=EPS, min_samples=4, n_neighbors=3, weights="distance", max_distance=0.2)
    est.fit(moons.X)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(moons.X_new)
    np.testing.assert_array_equal(copy.fit(moons.X).predict(moons.X_new), est.predict(moons.X_new))


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("eps", 0.0),
        ("eps", -0.1),
        ("min_samples", 0),
        ("metric", "precomputed"),
        ("metric", "mahalanobis"),
        ("algorithm", "bogus"),
        ("leaf_size", 0),
        ("p", 0.5),
        ("n_neighbors", 0),
        ("weights", "bogus"),
        ("max_distance", -1.0),
    ],
)
def test_invalid_params_raise_on_fit_not_on_init(moons, param, value):
    est = DBSCANKNN(**{param: value})  # __init__ only stores
    assert est.get_params()[param] == value
    with pytest.raises(InvalidParameterError, match=f"'{param}' parameter"):
        est.fit(moons.X)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "core_distance"])
def test_wrong_feature_count_raises(moons, fitted, method):
    with pytest.raises(ValueError, match="features"):
        getattr(fitted, method)(np.ones((3, 3)))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "core_distance"])
def test_inference_before_fit_raises_not_fitted(moons, method):
    est = DBSCANKNN()
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    with pytest.raises(NotFittedError):
        getattr(est, method)(moons.X_new)


def test_check_is_fitted_passes_after_fit(fitted):
    check_is_fitted(fitted)
    check_is_fitted(fitted, "knn_")


@pytest.mark.parametrize("method", ["predict", "predict_proba", "core_distance"])
def test_no_core_samples_raises_and_leaves_it_unfitted(moons, method):
    est = DBSCANKNN(eps=1e-6, min_samples=3)
    with pytest.raises(ValueError, match="no core samples"):
        est.fit(moons.X)
    with pytest.raises(NotFittedError):
        getattr(est, method)(moons.X_new)


# scikit-learn's own estimator checks. They fit on their own small random data, which at the
# default eps has no core samples, so all but check_clustering (which needs real clusters) run
# with an eps that makes every point a core sample.
ESTIMATOR_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_dont_overwrite_parameters",
    "check_fit_idempotent",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_fit2d_predict1d",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_estimators_unfitted",
    "check_estimators_nan_inf",
    "check_estimators_empty_data_messages",
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
    "check_readonly_memmap_input",
    "check_dict_unchanged",
    "check_fit_check_is_fitted",
    "check_param_validation",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_clustering",
]


@pytest.mark.parametrize("check", ESTIMATOR_CHECKS)
def test_scikit_learn_estimator_check(check):
    estimator = DBSCANKNN() if check == "check_clustering" else DBSCANKNN(eps=1000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' own data sometimes warns
        getattr(estimator_checks, check)("DBSCANKNN", estimator)
