"""The inductive clusterers (DBSCAN, agglomerative, spectral, HDBSCAN behind one mechanism)
against scikit-learn called directly: the clusterer's own labels, a KNeighborsClassifier fitted
by hand on the anchors, and distances computed by brute force; their estimator contract."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, clone
from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, SpectralClustering
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils import estimator_checks
from sklearn.utils._param_validation import InvalidParameterError

from app.ml.dbscan_knn import DBSCANKNN
from app.ml.inductive import InductiveClusterer
from app.ml.inductive_clusterers import HDBSCANKNN, AgglomerativeKNN, SpectralKNN


@dataclass(frozen=True)
class Pair:
    """One of Lloyd's inductive clusterers and the scikit-learn clusterer it runs."""

    name: str
    ours: Callable[..., InductiveClusterer]
    theirs: Callable[..., BaseEstimator]
    params: dict[str, Any]
    # The classifier's metric and p, as KNeighborsClassifier takes them.
    metric: tuple[str, float] = ("euclidean", 2.0)

    def fit(self, X: np.ndarray, **more: Any) -> tuple[InductiveClusterer, BaseEstimator]:
        theirs_params = {k: v for k, v in self.params.items() if k != "knn_neighbors"}
        return self.ours(**self.params, **more).fit(X), self.theirs(**theirs_params).fit(X)


PAIRS = [
    Pair("dbscan", DBSCANKNN, DBSCAN, {"eps": 0.15}),
    Pair(
        "dbscan_manhattan",
        DBSCANKNN,
        DBSCAN,
        {"eps": 0.2, "metric": "manhattan"},
        ("manhattan", 2.0),
    ),
    Pair("agglomerative", AgglomerativeKNN, AgglomerativeClustering, {"n_clusters": 2}),
    Pair(
        "agglomerative_average_l1",
        AgglomerativeKNN,
        AgglomerativeClustering,
        {"n_clusters": 3, "linkage": "average", "metric": "l1"},
        ("l1", 2.0),
    ),
    Pair(
        "spectral",
        SpectralKNN,
        SpectralClustering,
        {"n_clusters": 2, "affinity": "nearest_neighbors", "random_state": 0},
    ),
    Pair("spectral_rbf", SpectralKNN, SpectralClustering, {"n_clusters": 3, "random_state": 0}),
    Pair("hdbscan", HDBSCANKNN, lambda **p: HDBSCAN(copy=True, **p), {"min_cluster_size": 10}),
    Pair(
        "hdbscan_leaf_chebyshev",
        HDBSCANKNN,
        lambda **p: HDBSCAN(copy=True, **p),
        {"min_cluster_size": 8, "cluster_selection_method": "leaf", "metric": "chebyshev"},
        ("chebyshev", 2.0),
    ),
]
IDS = [p.name for p in PAIRS]


@pytest.fixture(scope="module", params=PAIRS, ids=IDS)
def pair(request: pytest.FixtureRequest) -> Pair:
    return request.param


@pytest.fixture(scope="module")
def fitted(pair: Pair, moons) -> tuple[InductiveClusterer, BaseEstimator]:
    return pair.fit(moons.X)


def anchors_of(ours: InductiveClusterer, theirs: BaseEstimator) -> np.ndarray:
    """The anchors as scikit-learn's own attributes name them."""
    if isinstance(theirs, DBSCAN):
        return theirs.core_sample_indices_
    return np.flatnonzero(theirs.labels_ != -1)


def reference_knn(pair: Pair, X: np.ndarray, labels: np.ndarray, anchors: np.ndarray, k: int = 5):
    metric, p = pair.metric
    return KNeighborsClassifier(n_neighbors=min(k, len(anchors)), metric=metric, p=p).fit(
        X[anchors], labels[anchors]
    )


def brute_distances(pair: Pair, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    metric = {"l1": "cityblock", "manhattan": "cityblock"}.get(pair.metric[0], pair.metric[0])
    return cdist(A, B, metric=metric)


def default_max_distance(pair: Pair, ours, X: np.ndarray, anchors: np.ndarray) -> float:
    if isinstance(ours, DBSCANKNN):
        return ours.eps
    distances = brute_distances(pair, X[anchors], X[anchors])
    np.fill_diagonal(distances, np.inf)
    return float(distances.min(axis=1).max())


# -- fit -------------------------------------------------------------------------------------------
def test_labels_are_the_clusterers_own_fit_predict(pair, moons, fitted):
    ours, theirs = fitted
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    np.testing.assert_array_equal(ours.fit_predict(moons.X), theirs.fit_predict(moons.X))
    np.testing.assert_array_equal(ours.anchor_indices_, anchors_of(ours, theirs))
    np.testing.assert_array_equal(ours.anchors_, moons.X[ours.anchor_indices_])
    clusters = np.unique(theirs.labels_[theirs.labels_ != -1])
    assert len(clusters) >= 2
    np.testing.assert_array_equal(ours.classes_, [-1, *clusters])
    assert ours.n_features_in_ == 2
    assert ours.n_neighbors_ == 5


def test_hdbscan_keeps_its_probabilities_and_its_noise(moons):
    ours = HDBSCANKNN(min_cluster_size=10).fit(moons.X)
    theirs = HDBSCAN(min_cluster_size=10, copy=True).fit(moons.X)
    np.testing.assert_array_equal(ours.probabilities_, theirs.probabilities_)
    noise = theirs.labels_ == -1
    assert noise.any()
    np.testing.assert_array_equal(ours.labels_[noise], -1)
    assert not np.isin(ours.anchor_indices_, np.flatnonzero(noise)).any()


def test_default_max_distance(pair, moons, fitted):
    ours, theirs = fitted
    expected = default_max_distance(pair, ours, moons.X, anchors_of(ours, theirs))
    np.testing.assert_allclose(ours.max_distance_, expected, rtol=1e-12, atol=0)
    if not isinstance(ours, DBSCANKNN):
        # No clustered training row would be noise were it new: each has a neighbour that close.
        left_out = ours.leave_one_out_distance(moons.X[ours.anchor_indices_])
        assert np.all(left_out <= ours.max_distance_)


# -- inference ------------------------------------------------------------------------------------
def test_predict_is_the_vote_of_the_anchors_within_max_distance(pair, moons, fitted):
    ours, theirs = fitted
    anchors = anchors_of(ours, theirs)
    rows = np.vstack([moons.X, moons.X_new])
    knn = reference_knn(pair, moons.X, theirs.labels_, anchors)
    nearest = brute_distances(pair, rows, moons.X[anchors]).min(axis=1)
    expected = np.where(nearest > ours.max_distance_, -1, knn.predict(rows))
    np.testing.assert_array_equal(ours.predict(rows), expected)
    np.testing.assert_allclose(ours.anchor_distance(rows), nearest, rtol=1e-9, atol=1e-12)
    assert 0 < np.sum(expected == -1) < len(expected)


def test_predict_proba_names_noise_first_and_agrees_with_predict(pair, moons, fitted):
    ours, theirs = fitted
    anchors = anchors_of(ours, theirs)
    rows = np.vstack([moons.X, moons.X_new])
    proba = ours.predict_proba(rows)
    knn = reference_knn(pair, moons.X, theirs.labels_, anchors)
    noise = ours.predict(rows) == -1
    assert proba.shape == (len(rows), len(ours.classes_))
    np.testing.assert_array_equal(proba[noise, 0], 1.0)
    np.testing.assert_array_equal(proba[noise, 1:], 0.0)
    np.testing.assert_array_equal(proba[~noise, 0], 0.0)
    np.testing.assert_allclose(proba[~noise, 1:], knn.predict_proba(rows[~noise]), rtol=1e-9)
    np.testing.assert_array_equal(ours.classes_[proba.argmax(axis=1)], ours.predict(rows))


def test_leave_one_out_distance_leaves_each_anchor_out_of_its_own_neighbours(pair, moons, fitted):
    ours, theirs = fitted
    anchors = anchors_of(ours, theirs)
    distances = brute_distances(pair, moons.X, moons.X[anchors])
    distances[anchors, np.arange(len(anchors))] = np.inf  # an anchor is not its own neighbour
    np.testing.assert_allclose(
        ours.leave_one_out_distance(moons.X), distances.min(axis=1), rtol=1e-9, atol=1e-12
    )
    # New rows are no anchor: their distance to the nearest one, as anchor_distance says.
    np.testing.assert_array_equal(
        ours.leave_one_out_distance(moons.X_new), ours.anchor_distance(moons.X_new)
    )


def test_a_duplicated_anchor_is_at_zero_of_its_copy():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    est = AgglomerativeKNN(n_clusters=2).fit(X)
    np.testing.assert_allclose(est.leave_one_out_distance(X), [0.0, 0.0, 0.1, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("max_distance", [0.0, 0.05, 0.3, 100.0])
def test_max_distance_sets_the_noise_cut(pair, moons, max_distance):
    ours, theirs = pair.fit(moons.X, max_distance=max_distance)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    assert ours.max_distance_ == max_distance
    rows = np.vstack([moons.X, moons.X_new])
    nearest = brute_distances(pair, rows, ours.anchors_).min(axis=1)
    np.testing.assert_array_equal(ours.predict(rows) == -1, nearest > max_distance)


def test_the_voters_are_capped_by_the_anchors():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    est = AgglomerativeKNN(n_clusters=2, n_neighbors=50).fit(X)
    assert est.n_neighbors_ == 4
    assert est.n_neighbors == 50
    spectral = SpectralKNN(n_clusters=2, knn_neighbors=3, n_neighbors=2, random_state=0)
    assert spectral.fit(X).n_neighbors_ == 3  # its n_neighbors is the affinity graph's


# -- the estimator contract -----------------------------------------------------------------------
def test_pickle_round_trip_answers_the_same(moons, fitted):
    ours, _ = fitted
    restored = pickle.loads(pickle.dumps(ours))
    for method in ("predict", "predict_proba", "anchor_distance", "leave_one_out_distance"):
        np.testing.assert_array_equal(
            getattr(restored, method)(moons.X_new), getattr(ours, method)(moons.X_new)
        )
    np.testing.assert_array_equal(restored.labels_, ours.labels_)


def test_clone_is_unfitted_with_the_same_params(moons, fitted):
    ours, _ = fitted
    copy = clone(ours)
    assert copy.get_params() == ours.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(moons.X_new)
    np.testing.assert_array_equal(copy.fit(moons.X).predict(moons.X_new), ours.predict(moons.X_new))


def test_a_clusterer_with_only_noise_cannot_assign_and_stays_unfitted(moons):
    # A cluster of 299 of 300 rows would leave one out; HDBSCAN then finds none.
    est = HDBSCANKNN(min_cluster_size=299)
    with pytest.raises(ValueError, match="every row is noise"):
        est.fit(moons.X)
    with pytest.raises(NotFittedError):
        est.predict(moons.X_new)


@pytest.mark.parametrize(
    ("estimator", "param", "value"),
    [
        (AgglomerativeKNN, "metric", "precomputed"),
        (AgglomerativeKNN, "metric", "mahalanobis"),
        (AgglomerativeKNN, "linkage", "bogus"),
        (AgglomerativeKNN, "n_clusters", 0),
        (AgglomerativeKNN, "max_distance", -1.0),
        (SpectralKNN, "affinity", "precomputed"),
        (SpectralKNN, "affinity", "precomputed_nearest_neighbors"),
        (SpectralKNN, "knn_neighbors", 0),
        (SpectralKNN, "assign_labels", "bogus"),
        (HDBSCANKNN, "metric", "cosine"),
        (HDBSCANKNN, "metric", "precomputed"),
        (HDBSCANKNN, "algorithm", "brute"),
        (HDBSCANKNN, "min_cluster_size", 1),
        (HDBSCANKNN, "weights", "bogus"),
    ],
)
def test_invalid_params_raise_on_fit_not_on_init(moons, estimator, param, value):
    est = estimator(**{param: value})
    assert est.get_params()[param] == value
    with pytest.raises(InvalidParameterError, match=f"'{param}' parameter"):
        est.fit(moons.X)


# scikit-learn's own estimator checks on their own small random data (each fitted so that it
# finds clusters there).
ESTIMATOR_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_dont_overwrite_parameters",
    "check_fit_idempotent",
    "check_n_features_in",
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
]
CHECKED = {
    "agglomerative": lambda: AgglomerativeKNN(n_clusters=2),
    "spectral": lambda: SpectralKNN(n_clusters=2, random_state=0),
    "hdbscan": lambda: HDBSCANKNN(min_cluster_size=2, allow_single_cluster=True),
}


@pytest.mark.parametrize("check", ESTIMATOR_CHECKS)
@pytest.mark.parametrize("name", sorted(CHECKED))
def test_scikit_learn_estimator_check(name, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' own data sometimes warns
        estimator = CHECKED[name]()
        getattr(estimator_checks, check)(type(estimator).__name__, estimator)


@pytest.mark.parametrize(
    "estimator", [AgglomerativeKNN(), SpectralKNN(random_state=0), HDBSCANKNN()], ids=repr
)
def test_scikit_learn_check_clustering_at_the_defaults(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator_checks.check_clustering(type(estimator).__name__, estimator)
