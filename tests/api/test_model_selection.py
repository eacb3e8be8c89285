"""POST /v1/model-selection: the chapter's two examples (k-means over k on the five blobs,
Gaussian mixtures over k x covariance type on the three blobs), each candidate checked against
scikit-learn called directly; the Bayesian mixture's weights; bad grids refused, storing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_samples,
    silhouette_score,
)
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from threadpoolctl import threadpool_limits

from app.main import create_app
from tests.api.contract import (
    BLOBS,
    assert_error_at,
    assert_problem,
    stored_state,
    train,
)
from tests.conftest import make_settings

RTOL = 1e-9
# The fits run at a low priority in worker processes; on a busy machine a grid can take longer
# than the default sync limit, and these tests want the report, not the job.
SYNC_TIMEOUT_SECONDS = 600.0
KS = list(range(2, 11))
COVARIANCE_TYPES = ["full", "tied", "spherical", "diag"]
KMEANS_PARAMS = {"n_init": 10, "random_state": 42}
MIXTURE_PARAMS = {"random_state": 42}


def five_blobs() -> np.ndarray:
    """The chapter's k-means data set: five blobs, three of them small and close together."""
    centers = [[0.2, 2.3], [-1.5, 2.3], [-2.8, 1.8], [-2.8, 2.8], [-2.8, 1.3]]
    X, _ = make_blobs(
        n_samples=2000, centers=centers, cluster_std=[0.4, 0.3, 0.1, 0.1, 0.1], random_state=7
    )
    X.setflags(write=False)
    return X


def three_blobs() -> np.ndarray:
    """The chapter's Gaussian-mixture data set: two stretched blobs and a round one."""
    X1, _ = make_blobs(n_samples=1000, centers=((4, -4), (0, 0)), random_state=42)
    X1 = X1.dot(np.array([[0.374, 0.95], [0.732, 0.598]]))
    X2, _ = make_blobs(n_samples=250, centers=1, random_state=42)
    X2 = X2 + np.array([6, -8])
    X = np.r_[X1, X2]
    X.setflags(write=False)
    return X


FIVE_BLOBS = five_blobs()
THREE_BLOBS = three_blobs()


def slope_ratio_elbow(ks: list[int], inertias: list[float]) -> int:
    """The elbow as the chapter reads it off the plot ("the inertia drops very quickly as we
    increase k up to 4, but then it decreases much more slowly"), computed here on its own:
    the k where the fall into k over the fall out of it is largest."""
    drops = -np.diff(np.asarray(inertias)) / np.diff(np.asarray(ks, float))
    return ks[1 + int(np.argmax(drops[:-1] / drops[1:]))]


@pytest.fixture(scope="module")
def selection_client(tmp_path_factory) -> Iterator[TestClient]:
    """One app for the two chapter examples (each posted once, its report read by several tests)."""
    tmp_path = tmp_path_factory.mktemp("selection")
    settings = make_settings(tmp_path, sync_timeout_seconds=SYNC_TIMEOUT_SECONDS)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def select(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/model-selection", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# -- k-means over k = 2..10 on the five blobs ----------------------------------------------------
@pytest.fixture(scope="module")
def kmeans_report(selection_client) -> dict[str, Any]:
    return select(
        selection_client,
        algorithm="kmeans",
        params=KMEANS_PARAMS,
        grid={"n_clusters": {"min": 2, "max": 10}},
        data={"instances": FIVE_BLOBS.tolist()},
    )


@pytest.fixture(scope="module")
def sklearn_kmeans() -> dict[int, KMeans]:
    with threadpool_limits(limits=1):
        return {k: KMeans(n_clusters=k, **KMEANS_PARAMS).fit(FIVE_BLOBS) for k in KS}


def test_kmeans_report_lists_every_k_in_order(kmeans_report):
    assert kmeans_report["algorithm"] == "kmeans"
    assert kmeans_report["n_candidates"] == len(KS)
    assert [c["index"] for c in kmeans_report["candidates"]] == list(range(len(KS)))
    assert [c["params"] for c in kmeans_report["candidates"]] == [{"n_clusters": k} for k in KS]
    assert kmeans_report["criteria"] == {
        "silhouette": "max",
        "davies_bouldin": "min",
        "calinski_harabasz": "max",
        "inertia": "elbow",
    }
    assert kmeans_report["registered"] is None


def test_kmeans_metrics_equal_sklearn(kmeans_report, sklearn_kmeans):
    for candidate in kmeans_report["candidates"]:
        k = candidate["params"]["n_clusters"]
        km = sklearn_kmeans[k]
        metrics = candidate["metrics"]
        assert_allclose(metrics["inertia"], km.inertia_, rtol=RTOL, err_msg=f"k={k}")
        assert_allclose(metrics["silhouette"], silhouette_score(FIVE_BLOBS, km.labels_), rtol=RTOL)
        assert_allclose(
            metrics["davies_bouldin"], davies_bouldin_score(FIVE_BLOBS, km.labels_), rtol=RTOL
        )
        assert_allclose(
            metrics["calinski_harabasz"],
            calinski_harabasz_score(FIVE_BLOBS, km.labels_),
            rtol=RTOL,
        )
        assert metrics["cluster_sizes"] == np.bincount(km.labels_, minlength=k).tolist()
        assert metrics["n_iter"] == km.n_iter_


def test_best_silhouette_is_k4_as_in_sklearn(kmeans_report, sklearn_kmeans):
    scores = {k: silhouette_score(FIVE_BLOBS, km.labels_) for k, km in sklearn_kmeans.items()}
    assert max(scores, key=scores.get) == 4
    best = kmeans_report["best"]["silhouette"]
    assert best["params"] == {"n_clusters": 4}
    assert best["index"] == KS.index(4)
    assert_allclose(best["value"], scores[4], rtol=RTOL)
    # The other criteria name the candidate sklearn's numbers make best.
    davies = {k: davies_bouldin_score(FIVE_BLOBS, km.labels_) for k, km in sklearn_kmeans.items()}
    calinski = {
        k: calinski_harabasz_score(FIVE_BLOBS, km.labels_) for k, km in sklearn_kmeans.items()
    }
    assert kmeans_report["best"]["davies_bouldin"]["params"] == {
        "n_clusters": min(davies, key=davies.get)
    }
    assert kmeans_report["best"]["calinski_harabasz"]["params"] == {
        "n_clusters": max(calinski, key=calinski.get)
    }


def test_the_elbow_is_at_k4_as_computed_independently(kmeans_report, sklearn_kmeans):
    inertias = [sklearn_kmeans[k].inertia_ for k in KS]
    expected = slope_ratio_elbow(KS, inertias)
    assert expected == 4  # where the chapter sees it
    elbow = kmeans_report["elbow"]
    assert (elbow["n_clusters"], elbow["index"]) == (expected, KS.index(expected))
    assert elbow["curve"]["n_clusters"] == KS
    assert_allclose(elbow["curve"]["inertia"], inertias, rtol=RTOL)
    by_elbow = kmeans_report["best"]["inertia"]
    assert by_elbow["params"] == {"n_clusters": expected}
    assert by_elbow["rule"] == "elbow of the inertia curve"
    assert_allclose(by_elbow["value"], sklearn_kmeans[expected].inertia_, rtol=RTOL)


def test_every_candidate_has_its_silhouette_diagram(kmeans_report, sklearn_kmeans):
    for candidate in kmeans_report["candidates"]:
        k = candidate["params"]["n_clusters"]
        labels = sklearn_kmeans[k].labels_
        expected = silhouette_samples(FIVE_BLOBS, labels)
        diagram = candidate["silhouette_diagram"]
        assert diagram["sampled"] is False  # 2,000 rows: below the 10,000-row sample
        assert diagram["sample_size"] == len(FIVE_BLOBS)
        assert_allclose(diagram["mean"], expected.mean(), rtol=RTOL)
        assert [c["cluster"] for c in diagram["clusters"]] == list(range(k))
        assert sum(c["size"] for c in diagram["clusters"]) == len(FIVE_BLOBS)
        for cluster in diagram["clusters"]:
            members = labels == cluster["cluster"]
            assert cluster["size"] == int(members.sum())
            assert_allclose(
                cluster["coefficients"], np.sort(expected[members])[::-1], rtol=RTOL, atol=1e-12
            )


# -- Gaussian mixtures over k = 1..10 x covariance type on the three blobs -----------------------
@pytest.fixture(scope="module")
def mixture_report(selection_client) -> dict[str, Any]:
    return select(
        selection_client,
        algorithm="gaussian_mixture",
        params=MIXTURE_PARAMS,
        grid={"n_components": {"min": 1, "max": 10}, "covariance_type": COVARIANCE_TYPES},
        data={"instances": THREE_BLOBS.tolist()},
        register={"name": "chapter-gmm", "criterion": "bic"},
    )


@pytest.fixture(scope="module")
def sklearn_mixtures() -> dict[tuple[int, str], GaussianMixture]:
    with threadpool_limits(limits=1):
        return {
            (k, c): GaussianMixture(k, covariance_type=c, **MIXTURE_PARAMS).fit(THREE_BLOBS)
            for k in range(1, 11)
            for c in COVARIANCE_TYPES
        }


def test_mixture_bic_and_aic_equal_sklearn(mixture_report, sklearn_mixtures):
    candidates = mixture_report["candidates"]
    assert mixture_report["n_candidates"] == len(candidates) == 40
    assert [(c["params"]["n_components"], c["params"]["covariance_type"]) for c in candidates] == [
        (k, c) for k in range(1, 11) for c in COVARIANCE_TYPES
    ]
    for candidate in candidates:
        key = (candidate["params"]["n_components"], candidate["params"]["covariance_type"])
        gm = sklearn_mixtures[key]
        metrics = candidate["metrics"]
        assert_allclose(metrics["bic"], gm.bic(THREE_BLOBS), rtol=RTOL, err_msg=str(key))
        assert_allclose(metrics["aic"], gm.aic(THREE_BLOBS), rtol=RTOL, err_msg=str(key))
        assert_allclose(
            metrics["log_likelihood"], gm.score(THREE_BLOBS) * len(THREE_BLOBS), rtol=RTOL
        )
        assert metrics["converged"] is bool(gm.converged_)
        assert "silhouette_diagram" not in candidate


def test_bic_picks_three_full_components(mixture_report, sklearn_mixtures):
    bics = {key: gm.bic(THREE_BLOBS) for key, gm in sklearn_mixtures.items()}
    aics = {key: gm.aic(THREE_BLOBS) for key, gm in sklearn_mixtures.items()}
    assert min(bics, key=bics.get) == (3, "full")
    best = mixture_report["best"]
    assert best["bic"]["params"] == {"n_components": 3, "covariance_type": "full"}
    assert_allclose(best["bic"]["value"], bics[(3, "full")], rtol=RTOL)
    k, c = min(aics, key=aics.get)
    assert best["aic"]["params"] == {"n_components": k, "covariance_type": c}
    assert mixture_report["elbow"] is None
    assert mixture_report["criteria"] == {"bic": "min", "aic": "min", "log_likelihood": "max"}


def test_the_best_by_bic_is_registered_and_predicts_as_sklearn(selection_client, mixture_report):
    registered = mixture_report["registered"]
    assert registered == {
        "model": "chapter-gmm",
        "version": 1,
        "criterion": "bic",
        "index": mixture_report["best"]["bic"]["index"],
    }
    version = selection_client.get("/v1/models/chapter-gmm/versions/1").json()
    assert version["algorithm"] == "gaussian_mixture"
    assert version["params"]["n_components"] == 3
    assert version["params"]["covariance_type"] == "full"
    assert version["params"]["random_state"] == 42
    assert version["n_samples"] == len(THREE_BLOBS)
    with threadpool_limits(limits=1):
        reference = GaussianMixture(3, covariance_type="full", random_state=42).fit(THREE_BLOBS)
    assert_allclose(version["metrics"]["bic"], reference.bic(THREE_BLOBS), rtol=RTOL)
    predicted = selection_client.post(
        "/v1/models/chapter-gmm/predict", json={"instances": THREE_BLOBS.tolist()}
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["version"] == 1
    assert predicted.json()["labels"] == reference.predict(THREE_BLOBS).tolist()
    # The selection is one job; it names the model it registered.
    jobs = selection_client.get("/v1/jobs", params={"model": "chapter-gmm"}).json()
    assert jobs["total"] == 1
    job = jobs["items"][0]
    assert (job["kind"], job["status"]) == ("model_selection", "succeeded")
    assert job["progress"] == {"done": 40, "total": 40}
    assert job["result"]["registered"] == registered


# -- Bayesian mixtures: the components they switch off ------------------------------------------
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bayesian_grid_reports_effective_components_and_weights(client):
    grid = {"n_components": [4, 10], "weight_concentration_prior": [0.01, 1.0]}
    report = select(
        client,
        algorithm="bayesian_gaussian_mixture",
        params={"random_state": 42},
        grid=grid,
        data={"instances": THREE_BLOBS.tolist()},
    )
    assert report["n_candidates"] == 4
    assert report["criteria"] == {"lower_bound": "max", "log_likelihood": "max"}
    assert set(report["best"]) == {"lower_bound", "log_likelihood"}
    with threadpool_limits(limits=1):
        for candidate in report["candidates"]:
            reference = BayesianGaussianMixture(random_state=42, **candidate["params"]).fit(
                THREE_BLOBS
            )
            metrics = candidate["metrics"]
            assert_allclose(metrics["weights"], reference.weights_, rtol=1e-7, atol=1e-12)
            assert metrics["effective_components"] == int(np.sum(reference.weights_ > 0.01))
            assert metrics["effective_components"] == 3, candidate  # three blobs, whatever k
            assert_allclose(metrics["lower_bound"], reference.lower_bound_, rtol=RTOL)
            assert "bic" not in metrics
    lower_bounds = [c["metrics"]["lower_bound"] for c in report["candidates"]]
    assert report["best"]["lower_bound"]["index"] == int(np.argmax(lower_bounds))


# -- bad input: a problem, and nothing stored ------------------------------------------------------
ROWS = BLOBS.tolist()  # 150 rows


def selection_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "algorithm": "kmeans",
        "params": {"random_state": 0},
        "grid": {"n_clusters": [2, 3]},
        "data": {"instances": ROWS},
        "register": {"name": "blobs", "criterion": "silhouette"},
    }
    return body | overrides


BAD_SELECTIONS = [
    pytest.param(
        {"algorithm": "dbscan", "params": {}, "grid": {"eps": [0.1, 0.2]}},
        "invalid_input",
        ("body", "algorithm"),
        id="unsupported-algorithm",
    ),
    pytest.param(
        {"algorithm": "no_such_algorithm"},
        "invalid_input",
        ("body", "algorithm"),
        id="unknown-algorithm",
    ),
    pytest.param(
        {"grid": {"n_clusterz": [2, 3]}},
        "invalid_parameter",
        ("body", "grid", "n_clusterz"),
        id="unknown-grid-parameter",
    ),
    pytest.param(
        {"grid": {"n_clusters": [2, 0]}},
        "invalid_parameter",
        ("body", "grid", "n_clusters"),
        id="invalid-grid-value",
    ),
    pytest.param(
        {"grid": {"n_clusters": [2, 3], "algorithm": ["lloyd", "fast"]}},
        "invalid_parameter",
        ("body", "grid", "algorithm"),
        id="invalid-grid-string",
    ),
    pytest.param(
        {"grid": {"n_clusters": [2, 3], "n_jobs": [1, 2]}},
        "invalid_parameter",
        ("body", "grid", "n_jobs"),
        id="server-refused-in-grid",
    ),
    pytest.param(
        {"params": {"n_clusters": 3}},
        "invalid_parameter",
        ("body", "grid", "n_clusters"),
        id="in-params-and-grid",
    ),
    pytest.param(
        {"params": {"n_init": 0}},
        "invalid_parameter",
        ("body", "params", "n_init"),
        id="invalid-fixed-param",
    ),
    pytest.param(
        {"grid": {"n_clusters": [2, 151]}},
        "invalid_parameter",
        ("body", "grid", "n_clusters"),
        id="more-clusters-than-rows",
    ),
    pytest.param(
        {
            "algorithm": "gaussian_mixture",
            "grid": {"n_components": {"min": 148, "max": 151}},
            "register": None,
        },
        "invalid_parameter",
        ("body", "grid", "n_components"),
        id="more-components-than-rows",
    ),
    pytest.param(
        {"register": {"name": "blobs", "criterion": "bic"}},
        "invalid_input",
        ("body", "register", "criterion"),
        id="criterion-of-another-family",
    ),
    pytest.param(
        {"register": {"name": "blobs", "criterion": "accuracy"}},
        "invalid_input",
        ("body", "register", "criterion"),
        id="unknown-criterion",
    ),
    pytest.param(
        {"register": {"name": "blobs", "criterion": "inertia"}},
        "invalid_input",
        ("body", "register", "criterion"),
        id="elbow-of-two-points",
    ),
    pytest.param(
        {
            "params": {"n_clusters": 3},
            "grid": {"init": ["random", "k-means++"]},
            "register": {"name": "blobs", "criterion": "inertia"},
        },
        "invalid_input",
        ("body", "register", "criterion"),
        id="elbow-with-no-k-in-the-grid",
    ),
    pytest.param(
        {"grid": {"n_clusters": []}},
        "validation_error",
        ("body", "grid", "n_clusters", "list[any]"),
        id="empty-grid-list",
    ),
    pytest.param({"grid": {}}, "validation_error", ("body", "grid"), id="empty-grid"),
    pytest.param(
        {"grid": {"n_clusters": {"min": 6, "max": 2}}},
        "invalid_parameter",
        ("body", "grid", "n_clusters"),
        id="range-min-above-max",
    ),
    pytest.param(
        {"grid": {"n_clusters": {"min": 2, "max": 10**12}}},
        "invalid_input",
        ("body", "grid"),
        id="huge-range",
    ),
    pytest.param(
        {"grid": {"n_clusters": [2, 3], "max_iter": {"min": 1, "max": 10**9}, "tol": [0.1] * 1000}},
        "invalid_input",
        ("body", "grid"),
        id="huge-product",
    ),
    pytest.param(
        {"grid": {"max_iter": {"min": 1, "max": 10**12}, "n_clusters": {"min": 6, "max": 2}}},
        "invalid_parameter",
        ("body", "grid", "n_clusters"),
        id="huge-range-beside-an-empty-one",
    ),
    pytest.param(
        {"grid": {"n_clusters": {"min": 2, "max": 6, "step": 0}}},
        "validation_error",
        ("body", "grid", "n_clusters", "GridRange", "step"),
        id="range-step-0",
    ),
    pytest.param(
        {"data": {"instances": [[0.0, 1.0], [2.0]]}},
        "invalid_input",
        ("body", "data", "instances", 1),
        id="ragged-rows",
    ),
    pytest.param(
        {"register": {"name": "a/b", "criterion": "silhouette"}},
        "validation_error",
        ("body", "register", "name"),
        id="bad-register-name",
    ),
]


@pytest.fixture
def existing(client) -> dict[str, Any]:
    """Version 1 of "blobs": a refused selection registering to that name must not add a 2."""
    return train(client, data={"instances": BLOBS[:40].tolist()})


def selection_jobs(client: TestClient) -> list[dict[str, Any]]:
    return client.get("/v1/jobs", params={"kind": "model_selection"}).json()["items"]


@pytest.mark.parametrize(("overrides", "code", "loc"), BAD_SELECTIONS)
def test_bad_selection_is_refused_and_stores_nothing(
    client, settings, existing, overrides, code, loc
):
    before = stored_state(client, settings)
    response = client.post("/v1/model-selection", json=selection_body(**overrides))
    problem = assert_problem(response, 422, code)
    if code == "validation_error":
        # A grid value is a list or a range: pydantic reports the value against both.
        assert list(loc) in [error["loc"] for error in problem["errors"]], problem["errors"]
    else:
        assert_error_at(problem, *loc)
    assert stored_state(client, settings) == before
    assert selection_jobs(client) == []  # refused before any job was started


def test_a_grid_over_the_configured_maximum_is_refused(tmp_path):
    settings = make_settings(tmp_path, max_grid_candidates=5)
    with TestClient(create_app(settings)) as client:
        before = stored_state(client, settings)
        response = client.post(
            "/v1/model-selection",
            json=selection_body(
                grid={"n_clusters": {"min": 2, "max": 4}, "init": ["random", "k-means++"]}
            ),
        )
        problem = assert_problem(response, 422, "invalid_input")
        assert_error_at(problem, "body", "grid")
        assert "6 candidates" in problem["detail"]
        assert "LLOYD_MAX_GRID_CANDIDATES" in problem["detail"]
        assert stored_state(client, settings) == before
        assert selection_jobs(client) == []
        # Five is still allowed.
        allowed = client.post(
            "/v1/model-selection",
            json=selection_body(grid={"n_clusters": {"min": 2, "max": 6}}, register=None),
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["n_candidates"] == 5


def test_a_candidate_that_cannot_be_fitted_fails_the_selection_and_registers_nothing(
    client, settings, existing
):
    """Checks before the job cannot see it: every row identical gives a covariance that
    cannot be inverted with no regularisation, in the worker."""
    before = stored_state(client, settings)
    response = client.post(
        "/v1/model-selection",
        json=selection_body(
            algorithm="gaussian_mixture",
            params={"reg_covar": 0.0, "random_state": 0},
            grid={"n_components": [1, 2]},
            data={"instances": [[1.0, 2.0]] * 20},
            register={"name": "blobs", "criterion": "bic"},
        ),
    )
    problem = assert_problem(response, 422, "training_failed")
    assert "gaussian_mixture could not be fitted" in problem["detail"]
    assert stored_state(client, settings) == before
    [job] = selection_jobs(client)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "training_failed"
    assert job["result"] is None
