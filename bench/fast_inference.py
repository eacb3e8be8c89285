"""What scikit-learn's per-call overhead costs, and what app.ml.fast_inference saves.

Prints, on 16 features:
1. KMeans(8) predict/transform and GaussianMixture(8, full) predict_proba/score_samples on
   1, 10, 1,000 and 100,000 rows: scikit-learn's median time, the fast path's, and the ratio.
2. Where a 1-row KMeans.predict and GaussianMixture.predict_proba spend their time (input
   checks, threadpool_limits, arithmetic).
3. numpy's matmul by the centers on 1 row against many: time per row, and whether a row's
   product on its own has the same bits as the same row inside a batch.
Run: .venv/bin/python bench/fast_inference.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from sklearn.cluster import KMeans
from sklearn.cluster._kmeans import _labels_inertia, _labels_inertia_threadpool_limit
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture
from sklearn.utils._array_api import _logsumexp
from sklearn.utils.validation import check_is_fitted, validate_data

from app.ml.fast_inference import compile_fast

ROWS = (1, 10, 1_000, 100_000)


def median_us(call: Callable[[], object], rows: int) -> float:
    """Median wall time of ``call`` in microseconds, over a number of runs that fits the size."""
    repeats = 300 if rows <= 10 else 100 if rows <= 1_000 else 9
    call()  # warm caches and lazy imports
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def comparison_table(kmeans: KMeans, mixture: GaussianMixture, X: np.ndarray) -> None:
    fast_kmeans, fast_mixture = compile_fast(kmeans), compile_fast(mixture)
    assert fast_kmeans is not None and fast_mixture is not None
    cases = [
        ("KMeans(8).predict", kmeans.predict, fast_kmeans.predict),
        ("KMeans(8).transform", kmeans.transform, fast_kmeans.transform),
        ("GMM(8,full).predict_proba", mixture.predict_proba, fast_mixture.predict_proba),
        ("GMM(8,full).score_samples", mixture.score_samples, fast_mixture.score_samples),
    ]
    print(f"{'operation':<27}{'rows':>8}{'sklearn us':>13}{'fast us':>11}{'ratio':>8}")
    for name, slow, fast in cases:
        for rows in ROWS:
            batch = np.ascontiguousarray(X[:rows])
            slow_us = median_us(lambda slow=slow, batch=batch: slow(batch), rows)
            fast_us = median_us(lambda fast=fast, batch=batch: fast(batch), rows)
            print(f"{name:<27}{rows:>8}{slow_us:>13.1f}{fast_us:>11.1f}{slow_us / fast_us:>7.1f}x")


def one_row_breakdown(kmeans: KMeans, mixture: GaussianMixture, X: np.ndarray) -> None:
    row = np.ascontiguousarray(X[:1])
    ones = np.ones(1)
    centers = kmeans.cluster_centers_
    fast_kmeans, fast_mixture = compile_fast(kmeans), compile_fast(mixture)
    assert fast_kmeans is not None and fast_mixture is not None
    weighted = mixture._estimate_weighted_log_prob(row)
    parts = [
        ("KMeans.predict, whole call", lambda: kmeans.predict(row)),
        ("  check_is_fitted", lambda: check_is_fitted(kmeans)),
        ("  _check_test_data (validate_data)", lambda: kmeans._check_test_data(row)),
        (
            "  labels in threadpool_limits(1, blas)",
            lambda: _labels_inertia_threadpool_limit(
                row, ones, centers, kmeans._n_threads, return_inertia=False
            ),
        ),
        (
            "  labels without threadpool_limits",
            lambda: _labels_inertia(row, ones, centers, kmeans._n_threads, return_inertia=False),
        ),
        ("  fast predict", lambda: fast_kmeans.predict(row)),
        ("GaussianMixture.predict_proba, whole call", lambda: mixture.predict_proba(row)),
        ("  check_is_fitted + validate_data", lambda: validate_data(mixture, row, reset=False)),
        ("  _estimate_weighted_log_prob", lambda: mixture._estimate_weighted_log_prob(row)),
        ("  _logsumexp", lambda: _logsumexp(weighted, axis=1)),
        ("  fast weighted_log_prob", lambda: fast_mixture.weighted_log_prob(row)),
        ("  fast predict_proba", lambda: fast_mixture.predict_proba(row)),
    ]
    print(f"\n{'one row: where the time goes':<46}{'median us':>10}")
    for name, call in parts:
        print(f"{name:<46}{median_us(call, 1):>10.1f}")


def matmul_by_rows(kmeans: KMeans, X: np.ndarray) -> None:
    centers_t = kmeans.cluster_centers_.T
    batch = np.ascontiguousarray(X[:1_000])
    in_batch = batch @ centers_t
    alone = np.vstack([batch[i : i + 1] @ centers_t for i in range(len(batch))])
    differing = int(np.any(alone != in_batch, axis=1).sum())
    print(f"\n{'X @ centers.T':<20}{'call us':>10}{'us per row':>12}")
    for rows in (1, 10, 1_000):
        part = np.ascontiguousarray(X[:rows])
        call_us = median_us(lambda part=part: part @ centers_t, rows)
        print(f"{f'{rows} rows':<20}{call_us:>10.2f}{call_us / rows:>12.4f}")
    print(
        f"rows whose 1-row product (gemv) differs in some bit from the same row in a 1,000-row "
        f"product (gemm): {differing} of {len(batch)}"
    )


def main() -> None:
    X, _ = make_blobs(n_samples=100_000, n_features=16, centers=8, random_state=0)
    kmeans = KMeans(n_clusters=8, n_init=1, random_state=0).fit(X[:5_000])
    mixture = GaussianMixture(n_components=8, covariance_type="full", random_state=0)
    mixture.fit(X[:5_000])
    comparison_table(kmeans, mixture, X)
    one_row_breakdown(kmeans, mixture, X)
    matmul_by_rows(kmeans, X)


if __name__ == "__main__":
    main()
