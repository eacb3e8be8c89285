"""What a training of each new clusterer costs through the API, against fitting it in-process.

On make_blobs' rows (5 centres, 4 features; --rows, 2,000 by default), per algorithm (and
k-means, which was there before, as the baseline of the path), in
interleaved rounds:
  sklearn    scikit-learn's own estimator, fit (the inductive ones: the clusterer alone)
  fit_model  Lloyd's fit in this process: the fit, the classifier of the inductive ones, the
             training anomaly scores and threshold, the metrics (silhouette on every row up to
             2,000), the training medians
  API        POST /v1/models through the real app (TestClient, a SQLite file, a worker process
             per fit): the request parsed, the job, the fit in the worker, the artifact written
             and registered, the answer
then the medians, and the API's overhead over fit_model. The machine's cores may be shared: the
numbers are noisy, read the ratios, not the last digit.

Run: .venv/bin/python bench/clusterers.py [--rows 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sklearn.base import BaseEstimator
from sklearn.cluster import (
    HDBSCAN,
    AffinityPropagation,
    AgglomerativeClustering,
    Birch,
    KMeans,
    MeanShift,
    SpectralClustering,
)
from sklearn.datasets import make_blobs

from app.main import create_app
from app.ml.catalog import ALGORITHMS
from app.ml.fitting import fit_model
from app.settings import Settings

CASES: dict[str, tuple[dict[str, Any], Callable[..., BaseEstimator]]] = {
    # The baseline: an algorithm that was there before, through the same path.
    "kmeans": ({"n_clusters": 5, "random_state": 0}, KMeans),
    "birch": ({"n_clusters": 5}, Birch),
    "mean_shift": ({"bin_seeding": True}, MeanShift),
    "affinity_propagation": ({"damping": 0.9, "random_state": 0}, AffinityPropagation),
    "agglomerative": ({"n_clusters": 5}, AgglomerativeClustering),
    "spectral": (
        {"n_clusters": 5, "affinity": "nearest_neighbors", "random_state": 0},
        SpectralClustering,
    ),
    "hdbscan": ({"min_cluster_size": 15}, lambda **p: HDBSCAN(copy=True, **p)),
}


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    X, _ = make_blobs(n_samples=args.rows, n_features=4, centers=5, random_state=0)
    body_rows = X.tolist()
    times: dict[str, dict[str, list[float]]] = {n: {} for n in CASES}
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{Path(folder) / 'lloyd.db'}",
            models_store=Path(folder) / "store",
            sync_timeout_seconds=600.0,
            gc_freeze=False,
        )
        with TestClient(create_app(settings)) as client, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's warnings are the metrics' business

            def api(name: str, params: dict[str, Any]) -> None:
                body = {"name": name.replace("_", "-"), "algorithm": name, "params": params}
                response = client.post("/v1/models", json=body | {"data": {"instances": body_rows}})
                assert response.status_code == 201, response.text

            for name, (params, _) in CASES.items():  # warm: imports, the first worker
                api(name, params)
            for _ in range(args.rounds):
                for name, (params, sklearn_class) in CASES.items():
                    runs: dict[str, Callable[[], object]] = {
                        "sklearn": partial(sklearn_class(**params).fit, X),
                        "fit_model": partial(
                            fit_model,
                            algorithm=ALGORITHMS[name],
                            params=params,
                            preprocessing=[],
                            X=X,
                            feature_names=None,
                            contamination=0.02,
                        ),
                        "API": partial(api, name, params),
                    }
                    for kind, run in runs.items():
                        times[name].setdefault(kind, []).append(timed(run))
    print(f"{args.rows} rows x 4 features, median of {args.rounds} rounds (seconds)")
    print(f"{'algorithm':<22}{'sklearn':>10}{'fit_model':>11}{'API':>9}{'API - fit_model':>17}")
    for name, kinds in times.items():
        medians = {kind: statistics.median(values) for kind, values in kinds.items()}
        print(
            f"{name:<22}{medians['sklearn']:>10.3f}{medians['fit_model']:>11.3f}"
            f"{medians['API']:>9.3f}{medians['API'] - medians['fit_model']:>17.3f}"
        )


if __name__ == "__main__":
    main()
