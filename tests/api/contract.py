"""The API contract the tests hold the service to: the operations table of DESIGN.md, the
datasets, training bodies, problem+json checks and listings of what the service has stored."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.datasets import make_blobs, make_moons

from app.settings import Settings

PROBLEM_MEDIA_TYPE = "application/problem+json"

# DESIGN.md section 3, "Algorithms": what each algorithm supports, in the API's order.
OPERATIONS: dict[str, list[str]] = {
    "kmeans": ["predict", "transform", "score", "anomalies"],
    "minibatch_kmeans": ["predict", "transform", "score", "anomalies"],
    "dbscan": ["predict", "predict_proba", "anomalies"],
    "birch": ["predict", "transform", "anomalies"],
    "mean_shift": ["predict", "anomalies"],
    "affinity_propagation": ["predict", "anomalies"],
    "agglomerative": ["predict", "predict_proba", "anomalies"],
    "spectral": ["predict", "predict_proba", "anomalies"],
    "hdbscan": ["predict", "predict_proba", "anomalies"],
    "gaussian_mixture": [
        "predict",
        "predict_proba",
        "score_samples",
        "score",
        "sample",
        "bic",
        "aic",
        "anomalies",
    ],
    "bayesian_gaussian_mixture": [
        "predict",
        "predict_proba",
        "score_samples",
        "score",
        "sample",
        "anomalies",
    ],
}
ALL_OPERATIONS = (
    "predict",
    "predict_proba",
    "transform",
    "score_samples",
    "score",
    "anomalies",
    "sample",
    "bic",
    "aic",
)
# Hyperparameters the service sets itself and never reports as the client's.
SERVER_REFUSED = {
    "n_jobs",
    "verbose",
    "verbose_interval",
    "warm_start",
    "copy_x",
    "memory",
    "metric_params",
}
# ... and those refused for one algorithm only (affinity propagation's copy: it only matters for
# a precomputed affinity, which is refused).
REFUSED_FOR = {"affinity_propagation": {"copy"}}
PREPROCESSING = [{"step": "standard_scaler"}, {"step": "pca", "n_components": 0.99, "whiten": True}]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _blobs() -> np.ndarray:
    X, _ = make_blobs(n_samples=150, n_features=2, centers=3, cluster_std=0.7, random_state=0)
    return _read_only(X)


def _blobs_with_redundant_feature() -> np.ndarray:
    """Three features, the third nearly the mean of the first two: PCA at 0.99 drops one."""
    X = _blobs()
    noise = np.random.default_rng(0).normal(0.0, 0.01, len(X))
    return _read_only(np.column_stack([X, 0.5 * X[:, 0] + 0.5 * X[:, 1] + noise]))


def _moons() -> np.ndarray:
    X, _ = make_moons(n_samples=150, noise=0.06, random_state=0)
    return _read_only(X)


BLOBS = _blobs()
BLOBS_3D = _blobs_with_redundant_feature()
MOONS = _moons()


def new_rows(X: np.ndarray) -> np.ndarray:
    """Rows to score: eight training rows nudged off the training set, and two far away."""
    near = X[:8] + 0.013
    far = np.vstack([np.full(X.shape[1], 9.0), np.linspace(-7.0, 12.0, X.shape[1])])
    return _read_only(np.vstack([near, far]))


@dataclass(frozen=True)
class Case:
    """One way to train an algorithm: its hyperparameters, its data, its preprocessing."""

    algorithm: str
    params: dict[str, Any]
    X: np.ndarray
    preprocessing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.algorithm}{'+scaler+pca' if self.preprocessing else ''}"

    @property
    def operations(self) -> list[str]:
        return OPERATIONS[self.algorithm]


PLAIN_CASES = [
    Case("kmeans", {"n_clusters": 3, "random_state": 0}, BLOBS),
    Case("minibatch_kmeans", {"n_clusters": 3, "random_state": 0, "batch_size": 64}, BLOBS),
    Case("dbscan", {"eps": 0.2, "min_samples": 5}, MOONS),
    Case("gaussian_mixture", {"n_components": 3, "random_state": 0}, BLOBS),
    Case(
        "bayesian_gaussian_mixture",
        {"n_components": 4, "covariance_type": "diag", "random_state": 0},
        BLOBS,
    ),
    Case("birch", {"n_clusters": 3, "threshold": 0.5}, BLOBS),
    Case("mean_shift", {"bandwidth": 1.5}, BLOBS),
    Case("affinity_propagation", {"preference": -50, "random_state": 0}, BLOBS),
    Case("agglomerative", {"n_clusters": 3}, BLOBS),
    Case("spectral", {"n_clusters": 2, "affinity": "nearest_neighbors", "random_state": 0}, MOONS),
    Case("hdbscan", {"min_cluster_size": 10}, MOONS),
]
# The clusterers without a predict of their own (a k-nearest-neighbours vote of their anchors).
INDUCTIVE = ("dbscan", "agglomerative", "spectral", "hdbscan")
PREPROCESSED_CASES = [
    Case("kmeans", {"n_clusters": 3, "random_state": 0}, BLOBS_3D, PREPROCESSING),
    Case(
        "minibatch_kmeans",
        {"n_clusters": 3, "random_state": 0, "batch_size": 64},
        BLOBS_3D,
        PREPROCESSING,
    ),
    Case("dbscan", {"eps": 0.35, "min_samples": 5}, MOONS, PREPROCESSING),
    Case("gaussian_mixture", {"n_components": 3, "random_state": 0}, BLOBS_3D, PREPROCESSING),
    Case(
        "bayesian_gaussian_mixture",
        {"n_components": 4, "covariance_type": "diag", "random_state": 0},
        BLOBS_3D,
        PREPROCESSING,
    ),
    Case("birch", {"n_clusters": 3}, BLOBS_3D, PREPROCESSING),
    Case("hdbscan", {"min_cluster_size": 10}, MOONS, PREPROCESSING),
]
CASES = PLAIN_CASES + PREPROCESSED_CASES
CASE_BY_ALGORITHM = {case.algorithm: case for case in PLAIN_CASES}


# -- requests ----------------------------------------------------------------------------------
def training_body(**overrides: Any) -> dict[str, Any]:
    """A valid training request (k-means on the blobs), with ``overrides`` replacing keys."""
    body: dict[str, Any] = {
        "name": "blobs",
        "algorithm": "kmeans",
        "params": {"n_clusters": 3, "random_state": 0},
        "data": {"instances": BLOBS.tolist()},
    }
    return body | overrides


def case_body(case: Case, **overrides: Any) -> dict[str, Any]:
    """The training request of ``case``."""
    return training_body(
        **{
            "name": case.algorithm.replace("_", "-"),
            "algorithm": case.algorithm,
            "params": case.params,
            "preprocessing": case.preprocessing,
            "data": {"instances": case.X.tolist()},
        }
        | overrides
    )


def train(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    """Train ``training_body(**overrides)``; the version document of the 201."""
    response = client.post("/v1/models", json=training_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def operation_url(name: str, operation: str, version: str | int | None = None) -> str:
    """The latest version's operation when ``version`` is None, else the named version's."""
    if version is None:
        return f"/v1/models/{name}/{operation}"
    return f"/v1/models/{name}/versions/{version}/{operation}"


def call(
    client: httpx.Client,
    name: str,
    operation: str,
    body: dict[str, Any] | None,
    version: str | int | None = None,
) -> httpx.Response:
    """POST an operation, with no body at all when ``body`` is None."""
    url = operation_url(name, operation, version)
    return client.post(url) if body is None else client.post(url, json=body)


def post_raw(client: httpx.Client, url: str, content: bytes) -> httpx.Response:
    """POST bytes as they are (NaN, Infinity, broken JSON) as application/json."""
    return client.post(url, content=content, headers={"content-type": "application/json"})


# -- answers -----------------------------------------------------------------------------------
def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` and ``code``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    problem = response.json()
    for key in ("type", "title", "detail"):
        assert isinstance(problem.get(key), str), (key, problem)
        assert problem[key], (key, problem)
    assert problem["status"] == status
    assert problem["code"] == code, problem
    return problem


def assert_error_at(problem: dict[str, Any], *loc: str | int) -> None:
    """The problem's first error is at ``loc`` (e.g. ``"body", "params", "n_jobs"``)."""
    assert problem.get("errors"), problem
    assert problem["errors"][0]["loc"] == list(loc), problem["errors"]


# -- what is stored ----------------------------------------------------------------------------
def artifacts_folder(settings: Settings) -> Path:
    return Path(settings.models_store) / "artifacts"


def store_files(settings: Settings) -> set[str]:
    """Names of every file in the artifact folder, temporary files included."""
    folder = artifacts_folder(settings)
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.exists() else set()


def artifact_hashes(settings: Settings) -> set[str]:
    """The sha256 of every artifact file on disk."""
    folder = artifacts_folder(settings)
    return {
        hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in store_files(settings)
    }


def stored_state(client: httpx.Client, settings: Settings) -> dict[str, Any]:
    """Everything a request could leave behind: the artifact files, and every model with its
    latest version, number of versions and aliases."""
    models = client.get("/v1/models", params={"limit": 500}).json()
    return {"files": store_files(settings), "total": models["total"], "models": models["items"]}
