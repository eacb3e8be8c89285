"""Where inline inference stops paying: the thread-pool hop against the work it would carry.

Prints, for k-means and a full-covariance Gaussian mixture on 16 features, the median time of
`predict` on batches of growing size run inline and through `run_in_threadpool`, with the
work (rows x per-row multiply-adds) the service's bound (LLOYD_INLINE_WORK_LIMIT) compares.
Run: .venv/bin/python bench/inline_bound.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
from sklearn.datasets import make_blobs
from starlette.concurrency import run_in_threadpool

from app.ml.catalog import ALGORITHMS
from app.ml.fitting import fit_model
from app.settings import Settings

REPEATS = 300


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def measure(model, X: np.ndarray) -> tuple[float, float]:
    inline, threaded = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        model.predict(X)
        inline.append(time.perf_counter() - started)
        started = time.perf_counter()
        await run_in_threadpool(model.predict, X)
        threaded.append(time.perf_counter() - started)
    return median_us(inline), median_us(threaded)


async def main() -> None:
    X, _ = make_blobs(5000, n_features=16, centers=8, random_state=0)
    limit = Settings().inline_work_limit
    print(f"LLOYD_INLINE_WORK_LIMIT default: {limit}")
    print(f"{'model':<18}{'rows':>6}{'work':>10}{'inline us':>11}{'thread us':>11}{'hop us':>9}")
    for name, params in (
        ("kmeans", {"n_clusters": 8, "random_state": 0}),
        ("gaussian_mixture", {"n_components": 8, "random_state": 0}),
    ):
        model = fit_model(
            algorithm=ALGORITHMS[name],
            params=params,
            preprocessing=[],
            X=X,
            feature_names=None,
            contamination=0.02,
        ).model
        for rows in (1, 10, 50, 100, 500, 1000):
            inline, threaded = await measure(model, X[:rows])
            work = rows * model.cost_per_row
            print(
                f"{name:<18}{rows:>6}{work:>10}{inline:>11.1f}{threaded:>11.1f}"
                f"{threaded - inline:>9.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
