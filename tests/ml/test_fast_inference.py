"""app.ml.fast_inference against scikit-learn called directly: the same labels, and the same
floats to the last bit, except k-means' score with more than 2 OpenMP threads and mixture
probabilities (normalized by the row maximum): those to 1e-9 relative."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.cluster import DBSCAN, KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from app.ml.catalog import ALGORITHMS
from app.ml.fast_inference import (
    NORMALIZE_LIMIT,
    FastGaussianMixture,
    FastInference,
    FastKMeans,
    FastPipeline,
    compile_fast,
)
from app.ml.fitting import fit_model
from app.ml.preprocessing import build_preprocessor

# The fits are kept short on purpose: what is compared is inference on whatever they reach.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
# Around sklearn's 256-row chunks of k-means labels, and single rows.
ROW_COUNTS = (1, 2, 255, 256, 257, 600)


def assert_same(fast: np.ndarray | float, slow: np.ndarray | float, bitwise: bool = True) -> None:
    fast, slow = np.asarray(fast), np.asarray(slow)
    assert fast.dtype == slow.dtype and fast.shape == slow.shape
    if bitwise or fast.dtype.kind != "f":
        np.testing.assert_array_equal(fast, slow)
    else:
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-300)


def rows(n_rows: int, n_features: int, scale: float, seed: int = 1) -> np.ndarray:
    """New rows around and beyond the training blobs (which lie within about 10 * scale)."""
    return np.random.default_rng(seed).normal(scale=12 * scale, size=(n_rows, n_features))


@cache
def blobs(n_features: int, centers: int, scale: float) -> np.ndarray:
    X, _ = make_blobs(n_samples=300, n_features=n_features, centers=centers, random_state=0)
    X = X * scale
    X.setflags(write=False)
    return X


def check_kmeans(est: KMeans | MiniBatchKMeans, X: np.ndarray) -> None:
    fast = compile_fast(est)
    assert isinstance(fast, FastKMeans)
    assert_same(fast.predict(X), est.predict(X))
    assert_same(fast.transform(X), est.transform(X))
    # scikit-learn's own inertia sum has no fixed order beyond 2 OpenMP threads.
    assert_same(fast.score(X), est.score(X), bitwise=est._n_threads <= 2)


def check_mixture(est: GaussianMixture | BayesianGaussianMixture, X: np.ndarray) -> None:
    fast = compile_fast(est)
    assert isinstance(fast, FastGaussianMixture)
    assert_same(fast.predict(X), est.predict(X))
    # exp(w - max) / sum rather than exp(w - logsumexp(w)) (see the module).
    assert_same(fast.predict_proba(X), est.predict_proba(X), bitwise=False)
    assert_same(fast.score_samples(X), est.score_samples(X))
    assert_same(fast.score(X), est.score(X))


# -- k-means ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [KMeans, MiniBatchKMeans])
@pytest.mark.parametrize(
    ("n_features", "n_clusters", "scale"),
    [
        (1, 1, 1.0),  # one feature, one cluster
        (1, 3, 1.0),
        (2, 5, 1e-9),  # small magnitudes
        (16, 8, 1.0),
        (16, 8, 1e9),  # large magnitudes
        (7, 40, 1.0),  # many clusters, a width that is not a multiple of 4
        (48, 64, 1.0),  # products large enough for BLAS to use several threads
    ],
)
def test_kmeans_matches_sklearn(
    cls: type[KMeans], n_features: int, n_clusters: int, scale: float
) -> None:
    X = blobs(n_features, min(n_clusters, 8), scale)
    est = cls(n_clusters=n_clusters, n_init=1, max_iter=10, random_state=0).fit(X)
    for n_rows in ROW_COUNTS:
        check_kmeans(est, rows(n_rows, n_features, scale, seed=n_rows))


def kmeans_with_centers(centers: np.ndarray) -> KMeans:
    """A fitted KMeans whose centers are exactly ``centers`` (duplicates allowed)."""
    est = KMeans(n_clusters=1, n_init=1, random_state=0).fit(centers)
    est.cluster_centers_ = np.ascontiguousarray(centers, dtype=np.float64)
    return est


def test_kmeans_ties_and_duplicated_centers_take_sklearns_label() -> None:
    # Integer coordinates make the distances exact, so the ties below are real ties.
    est = kmeans_with_centers(np.array([[-1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 3.0]]))
    grid = np.array([[x, y] for x in range(-4, 5) for y in range(-4, 6)], dtype=np.float64)
    check_kmeans(est, grid)
    labels = compile_fast(est).predict(np.array([[0.0, 0.0], [2.0, 0.0]]))
    assert labels.tolist() == [0, 1]  # the first of the nearest, as scikit-learn's loop takes


TIE_PRONE = kmeans_with_centers(
    np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0]])
)


@settings(max_examples=40, deadline=None)
@given(
    X=arrays(
        np.float64,
        st.tuples(st.integers(1, 40), st.just(3)),
        elements=st.one_of(
            st.integers(-6, 6).map(float),  # lands on ties with the integer centers
            st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
        ),
    )
)
def test_kmeans_matches_sklearn_on_any_rows(X: np.ndarray) -> None:
    check_kmeans(TIE_PRONE, X)


# -- mixtures --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    ("n_features", "n_components", "scale"),
    [(1, 1, 1.0), (2, 3, 1e-3), (16, 8, 1.0), (5, 3, 1e6)],
)
def test_mixture_matches_sklearn(
    cls: type[GaussianMixture],
    covariance_type: str,
    n_features: int,
    n_components: int,
    scale: float,
) -> None:
    X = blobs(n_features, 3, scale)
    est = cls(
        n_components=n_components, covariance_type=covariance_type, max_iter=10, random_state=0
    ).fit(X)
    for n_rows in (1, 7, 500):
        check_mixture(est, rows(n_rows, n_features, scale, seed=n_rows))


@pytest.mark.parametrize("prior", ["dirichlet_process", "dirichlet_distribution"])
def test_bayesian_mixture_weight_priors(prior: str) -> None:
    est = BayesianGaussianMixture(
        n_components=5, weight_concentration_prior_type=prior, max_iter=10, random_state=0
    ).fit(blobs(4, 3, 1.0))
    check_mixture(est, rows(50, 4, 1.0))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_duplicated_components_take_sklearns_label(covariance_type: str) -> None:
    est = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(blobs(2, 3, 1))
    # Component 3 repeats component 0 with the same weight: exact ties on every row.
    est.means_ = np.vstack([est.means_, est.means_[:1]])
    est.weights_ = np.append(est.weights_, est.weights_[0])
    if covariance_type != "tied":
        chol = est.precisions_cholesky_
        est.precisions_cholesky_ = np.concatenate([chol, chol[:1]])
    X = rows(200, 2, 1.0)
    check_mixture(est, X)
    assert not np.any(compile_fast(est).predict(X) == 3)


def test_mixture_far_rows_with_underflowing_probabilities() -> None:
    est = GaussianMixture(4, random_state=0).fit(blobs(3, 4, 1.0))
    check_mixture(est, rows(20, 3, 1.0) * 1e4)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
@pytest.mark.parametrize("shift", [0.9, 1.1])
def test_rows_past_the_normalize_limit_take_sklearns_steps(
    covariance_type: str, shift: float
) -> None:
    """Log-probabilities beyond NORMALIZE_LIMIT in size: scikit-learn's own log-sum-exp, bit
    for bit (its rounding there is coarser than 1e-9); below, within 1e-9."""
    est = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(blobs(2, 3, 1))
    fast = compile_fast(est)
    # A row whose largest weighted log-probability is about shift * NORMALIZE_LIMIT.
    direction = np.array([[1.0, 0.0]])
    top = fast.weighted_log_prob(est.means_[:1] + 1e3 * direction).max()
    distance = 1e3 * np.sqrt(shift * NORMALIZE_LIMIT / -top)
    X = est.means_[:1] + distance * direction
    weighted = fast.weighted_log_prob(X)
    assert (np.abs(weighted.max()) > NORMALIZE_LIMIT) == (shift > 1)
    assert_same(fast.predict_proba(X), est.predict_proba(X), bitwise=shift > 1)
    # Among ordinary rows, in one block: the block takes scikit-learn's steps.
    batch = np.vstack([rows(50, 2, 1.0), X, rows(50, 2, 1.0, seed=2)])
    assert_same(fast.predict_proba(batch), est.predict_proba(batch), bitwise=shift > 1)


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(1, 100),
    scale=st.sampled_from([1e-6, 1e-3, 1.0, 1e2, 1e4]),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    seed=st.integers(0, 2**16),
)
def test_probabilities_within_1e_9_on_any_rows(
    n_rows: int, scale: float, covariance_type: str, seed: int
) -> None:
    est = GaussianMixture(4, covariance_type=covariance_type, max_iter=10, random_state=0).fit(
        blobs(3, 4, 1.0)
    )
    X = np.random.default_rng(seed).normal(scale=scale, size=(n_rows, 3))
    fast = compile_fast(est)
    assert_same(fast.predict(X), est.predict(X))
    assert_same(fast.predict_proba(X), est.predict_proba(X), bitwise=False)


@pytest.mark.parametrize(("n_features", "n_components"), [(16, 8), (16, 65), (1, 1)])
def test_one_row_probabilities_by_either_sum_of_squares(n_features, n_components) -> None:
    """A 1-row full mixture sums each component's squares by one product with a block matrix,
    where that matrix is small (8 x 16), else by the batched product (65 x 16); both within
    1e-9 of scikit-learn."""
    est = GaussianMixture(n_components, max_iter=5, random_state=0).fit(
        blobs(n_features, 8, 1.0).repeat(3, axis=0)
    )
    fast = compile_fast(est)
    assert (fast.group_halves is not None) == (n_components**2 * n_features <= 1 << 16)
    for seed in range(20):
        X = rows(1, n_features, 1.0, seed=seed)
        assert_same(fast.predict_proba(X), est.predict_proba(X), bitwise=False)


@pytest.mark.parametrize("magnitude", [1e150, 1e160, 1e300])
def test_one_row_whose_squares_overflow_takes_sklearns_steps(magnitude: float) -> None:
    """Squares past float64 make infinities (and, multiplied by the block matrix's zeros,
    NaN): such a row is computed by scikit-learn's steps, not normalized here."""
    est = GaussianMixture(8, random_state=0).fit(blobs(16, 8, 1.0))
    fast = compile_fast(est)
    X = np.full((1, 16), magnitude)
    with np.errstate(all="ignore"):
        assert_same(fast.predict_proba(X), est.predict_proba(X), bitwise=True)


# -- preprocessing ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pipeline",
    [
        make_pipeline(StandardScaler()),
        make_pipeline(StandardScaler(with_mean=False)),
        make_pipeline(StandardScaler(with_std=False)),
        make_pipeline(StandardScaler(with_mean=False, with_std=False)),
        make_pipeline(PCA(n_components=2)),
        make_pipeline(StandardScaler(), PCA(n_components=0.99, whiten=True)),
        make_pipeline(PCA(whiten=True)),  # keeps a near-zero variance component
    ],
    ids=lambda pipeline: "+".join(pipeline.named_steps),
)
def test_preprocessing_matches_sklearn(pipeline: Pipeline) -> None:
    X = blobs(4, 3, 1.0).copy()
    X[:, 3] = X[:, 0] - 2 * X[:, 1]  # rank-deficient: PCA's whitening clips a tiny variance
    pipeline.fit(X)
    fast = compile_fast(pipeline)
    assert isinstance(fast, FastPipeline)
    for n_rows in (1, 100):
        assert_same(fast.transform(rows(n_rows, 4, 1.0)), pipeline.transform(rows(n_rows, 4, 1.0)))
        assert_same(fast.steps[-1].transform(X), pipeline[-1].transform(X))


@pytest.mark.parametrize("algorithm", ["kmeans", "gaussian_mixture"])
def test_service_model_through_preprocessing(algorithm: str) -> None:
    """The service's own fit: the fast preprocessing, then the fast estimator."""
    steps = [{"step": "standard_scaler"}, {"step": "pca", "n_components": 0.9, "whiten": True}]
    assert build_preprocessor(steps) is not None
    params = {"n_clusters": 3} if algorithm == "kmeans" else {"n_components": 3}
    model = fit_model(
        algorithm=ALGORITHMS[algorithm],
        params=params | {"random_state": 0},
        preprocessing=steps,
        X=blobs(4, 3, 1.0),
        feature_names=None,
        contamination=0.05,
    ).model
    fast_preprocessor, fast = compile_fast(model.preprocessor), compile_fast(model.estimator)
    max_threads = getattr(model.estimator, "_n_threads", 1)
    assert fast_preprocessor is not None and fast is not None
    X = rows(40, 4, 1.0)
    Xt = fast_preprocessor.transform(X)
    assert_same(Xt, model.model_space(X))
    assert_same(fast.predict(Xt), model.predict(X))
    assert_same(fast.score(Xt), model.score(X), bitwise=algorithm != "kmeans" or max_threads <= 2)


# -- what is not compiled --------------------------------------------------------------------
def test_compile_fast_declines_what_it_cannot_reproduce() -> None:
    X = blobs(2, 3, 1.0)

    class OwnKMeans(KMeans):
        pass

    assert compile_fast(KMeans(3)) is None  # not fitted
    assert compile_fast(OwnKMeans(3, n_init=1).fit(X)) is None
    assert compile_fast(KMeans(3, n_init=1).fit(X.astype(np.float32))) is None
    assert compile_fast(GaussianMixture(2).fit(X.astype(np.float32))) is None
    assert compile_fast(DBSCAN().fit(X)) is None
    assert compile_fast(IsolationForest(n_estimators=5, random_state=0).fit(X)) is None
    assert compile_fast(make_pipeline(StandardScaler(), IsolationForest()).fit(X)) is None
    assert compile_fast(None) is None


def test_operations_an_estimator_lacks_are_refused() -> None:
    fast = compile_fast(KMeans(3, n_init=1).fit(blobs(2, 3, 1.0)))
    assert isinstance(fast, FastInference)
    with pytest.raises(NotImplementedError, match="predict_proba"):
        fast.predict_proba(np.zeros((1, 2)))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_large_batches_are_computed_in_blocks_within_1e_9(covariance_type):
    """Above ROW_BLOCK x 2 rows, probabilities and densities are computed a block of rows at a
    time (bounded temporaries). Large products may then round in the last bit otherwise than
    scikit-learn's single product: within 1e-9 relative, labels exact."""
    from app.ml.fast_inference import ROW_BLOCK

    rng = np.random.default_rng(3)
    X = rng.normal(size=(5 * ROW_BLOCK + 7, 6)) * rng.uniform(0.1, 10, 6)
    mixture = GaussianMixture(
        n_components=5, covariance_type=covariance_type, random_state=0, max_iter=20
    ).fit(X[:2000])
    fast = compile_fast(mixture)
    np.testing.assert_array_equal(fast.predict(X), mixture.predict(X))
    np.testing.assert_allclose(
        fast.predict_proba(X), mixture.predict_proba(X), rtol=1e-9, atol=1e-300
    )
    np.testing.assert_allclose(fast.score_samples(X), mixture.score_samples(X), rtol=1e-9)
