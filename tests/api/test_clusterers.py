"""The six clusterers of the chapter through the real app (BIRCH, mean-shift, affinity
propagation, agglomerative, spectral, HDBSCAN), and DBSCAN's fixes: the catalog (schemas and
examples that run as they are), training refusals (too many rows, bad hyperparameters),
predict_proba's noise class, the parameters document, and model selection over their grids,
each number against scikit-learn called directly. Every operation of every algorithm against
scikit-learn, at every address, is tests/api/test_lifecycle.py's (the cases of contract.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose
from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, Birch, KMeans
from sklearn.datasets import make_blobs, make_moons
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from app.main import create_app
from tests.api.contract import (
    BLOBS,
    MOONS,
    OPERATIONS,
    assert_error_at,
    assert_problem,
    call,
    stored_state,
    train,
)
from tests.conftest import make_settings

RTOL = 1e-9
NEW = ["birch", "mean_shift", "affinity_propagation", "agglomerative", "spectral", "hdbscan"]
ROW_LIMITS = {"affinity_propagation": 3_000, "agglomerative": 6_000, "spectral": 3_000}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[TestClient]:
    """One app for the tests that only add models under names of their own."""
    settings = make_settings(tmp_path_factory.mktemp("clusterers"), sync_timeout_seconds=600.0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# -- the catalog ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW)
def test_each_new_clusterer_is_in_the_catalog_with_its_schema_and_limits(shared, name):
    response = shared.get(f"/v1/algorithms/{name}")
    assert response.status_code == 200, response.text
    entry = response.json()
    assert entry["name"] == name
    assert entry["family"] == "clustering"
    assert entry["operations"] == OPERATIONS[name]
    assert entry["wraps"].startswith("sklearn.cluster.")
    schema = entry["params_schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert not {"n_jobs", "verbose", "memory", "metric_params", "copy"} & set(schema["properties"])
    assert entry["max_training_rows"] == ROW_LIMITS.get(name)
    if name in ROW_LIMITS:
        assert "square of the rows" in entry["max_training_rows_reason"]
    assert entry["example"]["algorithm"] == name
    listed = {a["name"]: a for a in shared.get("/v1/algorithms").json()}
    assert listed[name] == entry


def test_every_catalog_example_trains_as_it_is(shared):
    for entry in shared.get("/v1/algorithms").json():
        example = entry["example"]
        response = shared.post("/v1/models", json=example)
        assert response.status_code == 201, (entry["name"], response.text)
        version = response.json()
        assert version["algorithm"] == entry["name"]
        assert version["operations"] == entry["operations"]
        if entry["family"] == "clustering":
            assert version["metrics"]["n_clusters"] == 2, entry["name"]
            assert version["metrics"]["n_noise"] == 0, entry["name"]
        row = example["data"]["instances"][:1]
        answered = call(shared, example["name"], entry["operations"][0], {"instances": row})
        assert answered.status_code == 200, answered.text


# -- refusals ------------------------------------------------------------------------------------
def test_spectral_on_200000_rows_is_refused_before_any_job_or_memory(client, settings):
    X = np.random.default_rng(0).normal(size=(200_000, 2))
    before = stored_state(client, settings)
    started = time.perf_counter()
    response = client.post(
        "/v1/models",
        json={"name": "big", "algorithm": "spectral", "data": {"instances": X.tolist()}},
    )
    elapsed = time.perf_counter() - started
    problem = assert_problem(response, 413, "payload_too_large")
    assert "spectral trains on at most 3,000 rows" in problem["detail"]
    assert "square of the rows" in problem["detail"]
    assert "200,000 were posted" in problem["detail"]
    assert (problem["max_training_rows"], problem["n_rows"]) == (3_000, 200_000)
    assert_error_at(problem, "body", "data")
    # Refused before a job (and a worker, and a dense 200,000 x 200,000 affinity) was started.
    assert client.get("/v1/jobs").json()["total"] == 0
    assert stored_state(client, settings) == before
    assert elapsed < 60, elapsed  # parsing 200,000 rows, not a fit


@pytest.mark.parametrize("name", sorted(ROW_LIMITS))
def test_the_row_limit_is_enforced_through_the_api(client, name):
    X = np.random.default_rng(1).normal(size=(ROW_LIMITS[name] + 1, 2))
    response = client.post(
        "/v1/models", json={"name": "m", "algorithm": name, "data": {"instances": X.tolist()}}
    )
    problem = assert_problem(response, 413, "payload_too_large")
    assert f"at most {ROW_LIMITS[name]:,} rows" in problem["detail"]
    assert_error_at(problem, "body", "data")


def test_model_selection_is_bounded_by_the_same_row_limit(client):
    X = np.random.default_rng(2).normal(size=(6_001, 2))
    response = client.post(
        "/v1/model-selection",
        json={
            "algorithm": "agglomerative",
            "grid": {"n_clusters": [2, 3]},
            "data": {"instances": X.tolist()},
        },
    )
    assert_problem(response, 413, "payload_too_large")
    assert client.get("/v1/jobs").json()["total"] == 0


BAD_PARAMS = [
    ("birch", {"compute_labels": False}, "compute_labels"),
    ("birch", {"threshold": -1}, "threshold"),
    ("mean_shift", {"n_jobs": 4}, "n_jobs"),
    ("mean_shift", {"bandwidth": 0}, "bandwidth"),
    ("affinity_propagation", {"affinity": "precomputed"}, "affinity"),
    ("affinity_propagation", {"verbose": True}, "verbose"),
    ("affinity_propagation", {"damping": 1.0}, "damping"),
    ("agglomerative", {"metric": "precomputed"}, "metric"),
    ("agglomerative", {"memory": "/tmp/cache"}, "memory"),
    ("agglomerative", {"connectivity": [[1, 0], [0, 1]]}, "connectivity"),
    ("agglomerative", {"n_clusters": 0}, "n_clusters"),
    ("spectral", {"affinity": "precomputed_nearest_neighbors"}, "affinity"),
    ("spectral", {"kernel_params": {"gamma": 2.0}}, "kernel_params"),
    ("spectral", {"n_jobs": -1}, "n_jobs"),
    ("hdbscan", {"metric": "precomputed"}, "metric"),
    ("hdbscan", {"algorithm": "brute"}, "algorithm"),
    ("hdbscan", {"metric_params": {"p": 3}}, "metric_params"),
    ("hdbscan", {"min_cluster_size": 1}, "min_cluster_size"),
    ("hdbscan", {"no_such_parameter": 1}, "no_such_parameter"),
]


@pytest.mark.parametrize(("algorithm", "params", "parameter"), BAD_PARAMS)
def test_a_bad_hyperparameter_is_a_located_422_and_stores_nothing(
    client, settings, algorithm, params, parameter
):
    before = stored_state(client, settings)
    response = client.post(
        "/v1/models",
        json={
            "name": "bad",
            "algorithm": algorithm,
            "params": params,
            "data": {"instances": BLOBS.tolist()},
        },
    )
    problem = assert_problem(response, 422, "invalid_parameter")
    assert_error_at(problem, "body", "params", parameter)
    assert parameter in problem["detail"]
    assert stored_state(client, settings) == before


def test_affinity_propagation_that_does_not_converge_is_a_training_error(client, settings):
    before = stored_state(client, settings)
    response = client.post(
        "/v1/models",
        json={
            "name": "ap",
            "algorithm": "affinity_propagation",
            "params": {"max_iter": 16, "convergence_iter": 15, "random_state": 0},
            "data": {"instances": BLOBS.tolist()},
        },
    )
    problem = assert_problem(response, 422, "training_failed")
    assert "did not converge in max_iter=16" in problem["detail"]
    assert stored_state(client, settings) == before


def test_hdbscan_that_finds_only_noise_is_a_training_error(client):
    response = client.post(
        "/v1/models",
        json={
            "name": "h",
            "algorithm": "hdbscan",
            "params": {"min_cluster_size": 149},
            "data": {"instances": BLOBS.tolist()},
        },
    )
    problem = assert_problem(response, 422, "training_failed")
    assert "every row is noise" in problem["detail"]


# -- DBSCAN: predict_proba's noise class, and the parameters document -----------------------------
def test_dbscan_predict_proba_reports_noise_as_its_first_class(shared):
    train(
        shared,
        name="moons-proba",
        algorithm="dbscan",
        params={"eps": 0.2},
        data={"instances": MOONS.tolist()},
    )
    rows = np.vstack([MOONS[:10] + 0.01, [[3.0, 3.0], [-3.0, 0.5]]])
    proba = call(shared, "moons-proba", "predict_proba", {"instances": rows.tolist()}).json()
    labels = call(shared, "moons-proba", "predict", {"instances": rows.tolist()}).json()["labels"]
    dbscan = DBSCAN(eps=0.2).fit(MOONS)
    assert proba["classes"] == [-1, *sorted(set(dbscan.labels_.tolist()) - {-1})]
    probabilities = np.asarray(proba["probabilities"])
    assert labels[-2:] == [-1, -1]
    assert probabilities[-2:].tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert np.all(probabilities[:-2, 0] == 0.0)
    classes = np.asarray(proba["classes"])
    assert classes[probabilities.argmax(axis=1)].tolist() == labels


def test_dbscan_parameters_give_the_core_sample_indices_on_request(shared):
    train(
        shared,
        name="moons-core",
        algorithm="dbscan",
        params={"eps": 0.2},
        data={"instances": MOONS.tolist()},
    )
    url = "/v1/models/moons-core/versions/1/parameters"
    dbscan = DBSCAN(eps=0.2).fit(MOONS)
    plain = shared.get(url).json()["parameters"]
    assert plain["n_core_samples"] == len(dbscan.core_sample_indices_)
    assert "core_sample_indices" not in plain
    asked = shared.get(url, params={"core_sample_indices": "true"}).json()["parameters"]
    assert asked["core_sample_indices"] == dbscan.core_sample_indices_.tolist()
    assert {k: v for k, v in asked.items() if k != "core_sample_indices"} == plain
    bad = shared.get(url, params={"core_sample_indices": "maybe"})
    assert_problem(bad, 422, "validation_error")


def test_hdbscan_keeps_its_training_noise_and_reports_the_counts(shared):
    X = make_moons(n_samples=300, noise=0.1, random_state=4)[0]
    doc = train(
        shared,
        name="hdbscan-noise",
        algorithm="hdbscan",
        params={"min_cluster_size": 15},
        data={"instances": X.tolist()},
    )
    reference = HDBSCAN(min_cluster_size=15, copy=True).fit(X)
    labels = reference.labels_
    assert doc["metrics"]["n_noise"] == int(np.sum(labels == -1)) > 0
    assert doc["metrics"]["n_clusters"] == len(set(labels.tolist()) - {-1})
    assert doc["metrics"]["noise_ratio"] == pytest.approx(np.mean(labels == -1), rel=RTOL)
    assert doc["metrics"]["mean_probability"] == pytest.approx(
        reference.probabilities_.mean(), rel=RTOL
    )
    assert doc["anomaly"]["threshold_rule"].startswith("max_distance")


# -- model selection over the new grids ------------------------------------------------------------
def select(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/model-selection", json=body)
    assert response.status_code == 200, response.text
    return response.json()


SEPARATION = {"silhouette": "max", "davies_bouldin": "min", "calinski_harabasz": "max"}


def test_birch_is_selected_over_its_threshold(shared):
    X, _ = make_blobs(n_samples=400, centers=4, cluster_std=0.6, random_state=3)
    thresholds = [0.2, 0.5, 1.0, 2.0]
    report = select(
        shared,
        algorithm="birch",
        params={"n_clusters": None},
        grid={"threshold": thresholds},
        data={"instances": X.tolist()},
        register={"name": "birch-best", "criterion": "silhouette"},
    )
    assert report["criteria"] == SEPARATION
    assert report["elbow"] is None
    silhouettes = []
    for candidate, threshold in zip(report["candidates"], thresholds, strict=True):
        birch = Birch(n_clusters=None, threshold=threshold).fit(X)
        assert candidate["metrics"]["n_clusters"] == len(np.unique(birch.labels_))
        assert candidate["metrics"]["n_subclusters"] == len(birch.subcluster_centers_)
        expected = silhouette_score(X, birch.labels_) if len(set(birch.labels_)) > 1 else None
        silhouettes.append(expected if expected is not None else -np.inf)
        if expected is not None:
            assert_allclose(candidate["metrics"]["silhouette"], expected, rtol=RTOL)
        assert "silhouette_diagram" in candidate
    best = int(np.argmax(silhouettes))
    assert report["best"]["silhouette"]["params"] == {"threshold": thresholds[best]}
    assert report["registered"]["model"] == "birch-best"
    version = shared.get("/v1/models/birch-best/versions/1").json()
    assert version["params"]["threshold"] == thresholds[best]


def test_hdbscan_is_selected_over_min_cluster_size_leaving_its_noise_out(shared):
    X = make_moons(n_samples=300, noise=0.08, random_state=5)[0]
    sizes = [5, 15, 40]
    report = select(
        shared,
        algorithm="hdbscan",
        grid={"min_cluster_size": sizes},
        data={"instances": X.tolist()},
    )
    assert report["criteria"] == SEPARATION
    for candidate, size in zip(report["candidates"], sizes, strict=True):
        labels = HDBSCAN(min_cluster_size=size, copy=True).fit(X).labels_
        clustered = labels != -1
        assert candidate["metrics"]["n_noise"] == int(np.sum(~clustered))
        if len(set(labels[clustered].tolist())) > 1:
            assert_allclose(
                candidate["metrics"]["silhouette"],
                silhouette_score(X[clustered], labels[clustered]),
                rtol=RTOL,
            )
            assert candidate["silhouette_diagram"]["sample_size"] == int(clustered.sum())


def test_agglomerative_is_selected_over_n_clusters(shared):
    X, _ = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=6)
    report = select(
        shared,
        algorithm="agglomerative",
        grid={"n_clusters": {"min": 2, "max": 6}},
        data={"instances": X.tolist()},
    )
    scores = {
        k: silhouette_score(X, AgglomerativeClustering(n_clusters=k).fit_predict(X))
        for k in range(2, 7)
    }
    for candidate in report["candidates"]:
        k = candidate["params"]["n_clusters"]
        assert_allclose(candidate["metrics"]["silhouette"], scores[k], rtol=RTOL)
    assert report["best"]["silhouette"]["params"] == {"n_clusters": max(scores, key=scores.get)}
    assert report["best"]["silhouette"]["params"] == {"n_clusters": 3}


# -- the elbow: where the grid starts does not move it --------------------------------------------
def chapter_blobs() -> np.ndarray:
    blob_centers = np.array([[0.2, 2.3], [-1.5, 2.3], [-2.8, 1.8], [-2.8, 2.8], [-2.8, 1.3]])
    blob_std = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    X, _ = make_blobs(n_samples=2000, centers=blob_centers, cluster_std=blob_std, random_state=7)
    return X


@pytest.mark.parametrize(("low", "high"), [(1, 9), (2, 12)])
def test_the_chapters_elbow_is_4_for_grids_from_1_and_to_12(shared, low, high):
    X = chapter_blobs()
    report = select(
        shared,
        algorithm="kmeans",
        params={"n_init": 10, "random_state": 42},
        grid={"n_clusters": {"min": low, "max": high}},
        data={"instances": X.tolist()},
        silhouette_diagrams=False,
    )
    ks = list(range(low, high + 1))
    elbow = report["elbow"]
    assert elbow["n_clusters"] == 4
    assert elbow["index"] == ks.index(4)
    assert elbow["method"].startswith("slope ratio")
    curve = elbow["curve"]
    assert curve["n_clusters"] == ks
    with threadpool_limits(limits=1):
        inertias = [KMeans(n_clusters=k, n_init=10, random_state=42).fit(X).inertia_ for k in ks]
    assert_allclose(curve["inertia"], inertias, rtol=RTOL)
    # The slope ratio, computed here on its own: the fall into k over the fall out of it.
    drops = -np.diff(inertias)
    assert_allclose(curve["slope_ratio"][1:-1], drops[:-1] / drops[1:], rtol=1e-6)
    assert report["best"]["inertia"]["params"] == {"n_clusters": 4}
