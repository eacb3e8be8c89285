"""lloyd_client against the real app over real HTTP (uvicorn in a thread of this process): every
method of Client and AsyncClient, numbers equal to scikit-learn's on the same data, DataFrames,
the JSON/.npy switch, jobs, aliases, errors as the exception of their problem code, retries
after connection errors, timeouts; and the package's own rules (httpx and numpy only)."""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import pickle
import re
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import lloyd_client
import numpy as np
import pandas as pd
import pytest
from lloyd_client import (
    AsyncClient,
    AsyncJob,
    Client,
    ConnectionFailed,
    Forbidden,
    InvalidInput,
    InvalidParameter,
    Job,
    JobCancelled,
    JobFinished,
    LloydError,
    ModelNotFound,
    ModelVersion,
    NotFound,
    SelectionReport,
    Timeout,
    Unauthorized,
    UnknownAlgorithm,
    UnsupportedOperation,
    ValidationError,
)
from lloyd_client.errors import ERRORS_BY_CODE, error_from_problem
from numpy.testing import assert_allclose, assert_array_equal
from radon.complexity import cc_visit
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from tests.client.conftest import READ_KEY, WRITE_KEY, Served, ThreadedServer
from tests.e2e.server import free_port

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "client" / "lloyd_client"
RTOL = 1e-9
NPY, JSON = "application/x-npy", "application/json"

X, _ = make_blobs(n_samples=300, centers=3, n_features=2, cluster_std=0.8, random_state=0)
NEW = np.random.default_rng(7).normal(scale=4.0, size=(40, 2))
KMEANS_PARAMS = {"n_clusters": 3, "n_init": 3, "random_state": 0}
GMM_PARAMS = {"n_components": 3, "random_state": 0}
CONTAMINATION = 0.05
# A fit that never ends by itself (tol=0 never converges): for jobs that are cancelled.
SLOW_ROWS, _ = make_blobs(n_samples=10_000, n_features=2, centers=10, random_state=0)
SLOW_PARAMS = {"n_components": 10, "n_init": 100, "max_iter": 1_000_000, "tol": 0.0}


@dataclass
class Sent:
    """Every request the client sent (an httpx event hook: what went on the wire)."""

    requests: list[httpx.Request] = field(default_factory=list)

    def record(self, request: httpx.Request) -> None:
        self.requests.append(request)

    async def arecord(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def hooks(self) -> dict[str, list[Any]]:
        return {"request": [self.record]}

    def ahooks(self) -> dict[str, list[Any]]:
        return {"request": [self.arecord]}

    def last(self) -> httpx.Request:
        return self.requests[-1]

    def clear(self) -> None:
        self.requests.clear()


def kinds(request: httpx.Request) -> tuple[str | None, str | None]:
    return request.headers.get("content-type"), request.headers.get("accept")


@pytest.fixture(scope="module")
def sklearn_kmeans() -> KMeans:
    return KMeans(**KMEANS_PARAMS).fit(X)


@pytest.fixture(scope="module")
def sklearn_gmm() -> GaussianMixture:
    return GaussianMixture(**GMM_PARAMS).fit(X)


@pytest.fixture(scope="module")
def trained(lloyd: Served) -> dict[str, ModelVersion]:
    """The module's two models, trained once: k-means and a Gaussian mixture."""
    with Client(lloyd.url) as client:
        return {
            "km": client.train(
                "km", "kmeans", X, params=KMEANS_PARAMS, contamination=CONTAMINATION
            ),
            "gmm": client.train("gmm", "gaussian_mixture", X, params=GMM_PARAMS),
        }


def kmeans_anomalies(km: KMeans, rows: np.ndarray, contamination: float) -> dict[str, Any]:
    """What the anomalies of a k-means model are, from scikit-learn's fit: the distance to the
    nearest centroid, the stored threshold a quantile of the training distances."""
    train = km.transform(X).min(axis=1)
    scores = km.transform(rows).min(axis=1)
    threshold = float(np.quantile(train, 1.0 - contamination))
    percentiles = np.array([100.0 * np.mean(train < s) for s in scores])
    return {"scores": scores, "threshold": threshold, "percentiles": percentiles}


# -- numbers: scikit-learn's -----------------------------------------------------------------------
def test_kmeans_operations_equal_scikit_learn(lloyd, trained, sklearn_kmeans):
    km = sklearn_kmeans
    version = trained["km"]
    assert (version.name, version.version, version.algorithm) == ("km", 1, "kmeans")
    assert (version.n_samples, version.n_features) == (300, 2)
    assert {"predict", "transform", "score", "anomalies"} <= set(version.operations)
    assert version.params["n_clusters"] == 3
    assert_allclose(version.metrics["inertia"], km.inertia_, rtol=RTOL)
    assert version.anomaly["contamination"] == CONTAMINATION
    with Client(lloyd.url) as client:
        prediction = client.predict("km", NEW)
        assert (prediction.model, prediction.version) == ("km", 1)
        assert prediction.labels.dtype == np.int64
        assert_array_equal(prediction.labels, km.predict(NEW))

        distances = client.transform("km", NEW).distances
        assert distances.shape == (40, 3)
        assert_allclose(distances, km.transform(NEW), rtol=RTOL)

        score = client.score("km", NEW)
        assert score.n_samples == 40
        assert_allclose(score.score, km.score(NEW), rtol=RTOL)

        expected = kmeans_anomalies(km, NEW, CONTAMINATION)
        anomalies = client.anomalies("km", NEW)
        assert_allclose(anomalies.anomaly_scores, expected["scores"], rtol=RTOL)
        assert_allclose(anomalies.threshold, expected["threshold"], rtol=RTOL)
        assert_array_equal(anomalies.is_anomaly, expected["scores"] > anomalies.threshold)
        assert_allclose(anomalies.percentiles, expected["percentiles"], rtol=RTOL)
        assert (anomalies.threshold_source, anomalies.contamination) == ("stored", CONTAMINATION)
        assert anomalies.is_anomaly.dtype == np.bool_

        wider = client.anomalies("km", NEW, contamination=0.2)
        assert wider.threshold_source == "contamination"
        assert_allclose(wider.threshold, kmeans_anomalies(km, NEW, 0.2)["threshold"], rtol=RTOL)
        fixed = client.anomalies("km", NEW, threshold=1.5)
        assert (fixed.threshold_source, fixed.threshold) == ("threshold", 1.5)
        assert_array_equal(fixed.is_anomaly, expected["scores"] > 1.5)

        explained = client.anomalies("km", NEW[:3], explain=True, top_features=1)
        assert explained.explanation is not None
        assert explained.explanation.method == "exact"
        assert explained.contributions is not None
        assert [len(row) for row in explained.contributions] == [1, 1, 1]
        # k-means contributions: squared differences to the nearest centroid, summing to the
        # squared anomaly score; the top one is the larger of the two features'.
        nearest = km.cluster_centers_[km.predict(NEW[:3])]
        squared = (NEW[:3] - nearest) ** 2
        tops = [row[0].contribution for row in explained.contributions]
        assert_allclose(tops, squared.max(axis=1), rtol=RTOL)

        parameters = client.parameters("km")
        assert parameters, parameters


def test_gaussian_mixture_operations_equal_scikit_learn(lloyd, trained, sklearn_gmm):
    gm = sklearn_gmm
    assert_allclose(trained["gmm"].metrics["bic"], gm.bic(X), rtol=RTOL)
    with Client(lloyd.url) as client:
        assert_array_equal(client.predict("gmm", NEW).labels, gm.predict(NEW))

        proba = client.predict_proba("gmm", NEW)
        assert_array_equal(proba.classes, [0, 1, 2])
        assert_allclose(proba.probabilities, gm.predict_proba(NEW), rtol=RTOL, atol=1e-12)

        assert_allclose(client.score_samples("gmm", NEW).scores, gm.score_samples(NEW), rtol=RTOL)
        assert_allclose(client.score("gmm", NEW).score, gm.score(NEW), rtol=RTOL)

        # No rows: the training set's value.
        bic, aic = client.bic("gmm"), client.aic("gmm")
        assert (bic.name, bic.n_samples, aic.name, aic.n_samples) == ("bic", 300, "aic", 300)
        assert_allclose(bic.value, gm.bic(X), rtol=RTOL)
        assert_allclose(aic.value, gm.aic(X), rtol=RTOL)
        assert_allclose(client.bic("gmm", NEW).value, gm.bic(NEW), rtol=RTOL)
        assert_allclose(client.aic("gmm", NEW, version=1).value, gm.aic(NEW), rtol=RTOL)

        sample = client.sample("gmm", 6, random_state=3)
        instances, components = copy.deepcopy(gm).set_params(random_state=3).sample(6)
        assert_allclose(sample.instances, instances, rtol=RTOL)
        assert_array_equal(sample.components, components)
        assert client.sample("gmm").instances.shape == (1, 2)

        anomalies = client.anomalies("gmm", NEW)
        assert_allclose(anomalies.anomaly_scores, -gm.score_samples(NEW), rtol=RTOL)


# -- input: numpy, lists, DataFrames; JSON below the threshold, .npy above ------------------------
def test_lists_of_lists_are_rows_too(lloyd, trained, sklearn_kmeans):
    rows = [[float(a), float(b)] for a, b in NEW[:5]]
    with Client(lloyd.url) as client:
        assert_array_equal(client.predict("km", rows).labels, sklearn_kmeans.predict(NEW[:5]))
        integers = [[0, 0], [5, 3]]
        assert_array_equal(
            client.predict("km", integers).labels, sklearn_kmeans.predict(np.array(integers))
        )


def test_json_below_the_threshold_and_npy_above(lloyd, trained, sklearn_kmeans, sklearn_gmm):
    rng = np.random.default_rng(11)
    at, above = rng.normal(size=(5_000, 2)), rng.normal(size=(5_001, 2))
    sent = Sent()
    with Client(lloyd.url, event_hooks=sent.hooks()) as client:
        json_labels = client.predict("km", at).labels
        assert kinds(sent.last()) == (JSON, JSON)
        npy_labels = client.predict("km", above).labels
        assert kinds(sent.last()) == (NPY, NPY)
        assert_array_equal(json_labels, sklearn_kmeans.predict(at))
        assert_array_equal(npy_labels, sklearn_kmeans.predict(above))

        # Every per-row answer read back from .npy, fields from the Lloyd-Response header.
        distances = client.transform("km", above)
        assert (distances.model, distances.version) == ("km", 1)
        assert_allclose(distances.distances, sklearn_kmeans.transform(above), rtol=RTOL)
        anomalies = client.anomalies("km", above, contamination=0.1)
        assert kinds(sent.last()) == (NPY, NPY)
        expected = kmeans_anomalies(sklearn_kmeans, above, 0.1)
        assert_allclose(anomalies.anomaly_scores, expected["scores"], rtol=RTOL)
        assert_allclose(anomalies.percentiles, expected["percentiles"], rtol=RTOL)
        assert anomalies.threshold_source == "contamination"
        assert json.loads(sent.last().headers["lloyd-request"]) == {"contamination": 0.1}
        proba = client.predict_proba("gmm", above)
        assert_allclose(
            proba.probabilities, sklearn_gmm.predict_proba(above), rtol=RTOL, atol=1e-12
        )
        scores = client.score_samples("gmm", above).scores
        assert_allclose(scores, sklearn_gmm.score_samples(above), rtol=RTOL)
        # The one-number answers come as JSON.
        assert_allclose(client.bic("gmm", above).value, sklearn_gmm.bic(above), rtol=RTOL)
        assert kinds(sent.last()) == (NPY, JSON)
        # An explanation is JSON only: the rows go as .npy, the answer comes as JSON.
        explained = client.anomalies("km", above, explain=True)
        assert kinds(sent.last()) == (NPY, JSON)
        assert explained.contributions is not None
        assert len(explained.contributions) == len(above)
        # sample: its answer as .npy above the threshold of rows.
        drawn = client.sample("gmm", 10_001, random_state=1)
        assert sent.last().headers["accept"] == NPY
        reference = copy.deepcopy(sklearn_gmm).set_params(random_state=1).sample(10_001)
        assert_allclose(drawn.instances, reference[0], rtol=RTOL)
        assert_array_equal(drawn.components, reference[1])

        # A training above the threshold: rows as .npy, every other field in Lloyd-Request.
        sent.clear()
        version = client.train("km-npy", "kmeans", above, params=KMEANS_PARAMS)
        (post,) = [r for r in sent.requests if r.method == "POST"]
        assert kinds(post)[0] == NPY
        assert json.loads(post.headers["lloyd-request"])["params"] == KMEANS_PARAMS
        reference_km = KMeans(**KMEANS_PARAMS).fit(above)
        assert_allclose(version.metrics["inertia"], reference_km.inertia_, rtol=RTOL)

    with Client(lloyd.url, npy_threshold=0, event_hooks=sent.hooks()) as client:
        assert_array_equal(client.predict("km", NEW[:1]).labels, sklearn_kmeans.predict(NEW[:1]))
        assert kinds(sent.last()) == (NPY, NPY)


def test_values_json_cannot_carry_go_as_npy_for_the_server_to_refuse(lloyd, trained):
    sent = Sent()
    rows = np.array([[0.0, 1.0], [np.nan, 2.0]])
    with Client(lloyd.url, event_hooks=sent.hooks()) as client, pytest.raises(InvalidInput) as e:
        client.predict("km", rows)
    assert kinds(sent.last())[0] == NPY
    assert e.value.status == 422
    assert e.value.errors and e.value.errors[0]["pointer"] == "/1/0"


def test_dataframes_send_their_column_names(lloyd, sklearn_kmeans):
    frame = pd.DataFrame(X, columns=["temperature", "pressure"])
    swapped = pd.DataFrame(NEW, columns=["temperature", "pressure"])[["pressure", "temperature"]]
    big = np.random.default_rng(5).normal(size=(6_000, 2))
    big_swapped = pd.DataFrame(big, columns=["temperature", "pressure"])[
        ["pressure", "temperature"]
    ]
    sent = Sent()
    with Client(lloyd.url, event_hooks=sent.hooks()) as client:
        version = client.train("frame", "kmeans", frame, params=KMEANS_PARAMS)
        assert version.feature_names == ("temperature", "pressure")
        assert_allclose(version.metrics["inertia"], sklearn_kmeans.inertia_, rtol=RTOL)

        # Small: as records, which the server matches to the model's features by name.
        sent.clear()
        labels = client.predict("frame", swapped).labels
        assert_array_equal(labels, sklearn_kmeans.predict(NEW))
        (request,) = sent.requests
        assert kinds(request) == (JSON, JSON)
        assert json.loads(request.content)["records"][0] == {
            "pressure": NEW[0, 1],
            "temperature": NEW[0, 0],
        }

        # Large: .npy has no names, so the client reads the version's features, puts the
        # columns in their order and posts to that version's number.
        sent.clear()
        labels = client.predict("frame", big_swapped).labels
        assert_array_equal(labels, sklearn_kmeans.predict(big))
        read, post = sent.requests
        assert (read.method, read.url.path) == ("GET", "/v1/models/frame/versions/latest")
        assert post.url.path == "/v1/models/frame/versions/1/predict"
        assert kinds(post) == (NPY, NPY)

        # A column that is not numbers: as records, and the server says where.
        colored = pd.DataFrame({"temperature": [1.0], "pressure": ["high"]})
        with pytest.raises(ValidationError) as e:
            client.predict("frame", colored)
        assert e.value.errors and e.value.errors[0]["pointer"] == "/records/0/pressure"

        # Columns that are not the model's: as records, and the server says which.
        wrong = big_swapped.rename(columns={"pressure": "humidity"})
        with pytest.raises(InvalidInput) as e:
            client.predict("frame", wrong)
        assert "humidity" in e.value.detail
        assert kinds(sent.last()) == (JSON, JSON)


# -- jobs ----------------------------------------------------------------------------------------
def test_a_job_is_waited_for_or_cancelled(lloyd, sklearn_kmeans):
    with Client(lloyd.url) as client:
        job = client.train("later", "kmeans", X, params=KMEANS_PARAMS, wait=False)
        assert isinstance(job, Job)
        assert job.info.kind == "training"
        assert job.info.status in ("queued", "running", "succeeded")
        version = job.wait(timeout=120)
        assert isinstance(version, ModelVersion)
        assert job.info.status == "succeeded"
        assert job.info.result == {"model": "later", "version": version.version}
        assert version == client.model_version("later", version.version)
        assert_allclose(version.metrics["inertia"], sklearn_kmeans.inertia_, rtol=RTOL)
        assert job.refresh().finished

        slow = client.train("slow", "gaussian_mixture", SLOW_ROWS, params=SLOW_PARAMS, wait=False)
        with pytest.raises(Timeout):
            slow.wait(timeout=0.3)
        assert slow.id in {j.id for j in client.jobs(kind="training", model="slow")}
        assert client.job(slow.id).info.status in ("queued", "running")
        cancelled = slow.cancel()
        assert cancelled.status == "cancelled"
        assert cancelled.error is not None and cancelled.error["code"] == "job_cancelled"
        with pytest.raises(JobCancelled) as e:
            slow.wait()
        assert (e.value.status, e.value.code) == (409, "job_cancelled")
        with pytest.raises(JobFinished):
            slow.cancel()
        with pytest.raises(ModelNotFound):
            client.model("slow")

        selection = client.select("kmeans", X, {"n_clusters": [2, 3]}, wait=False)
        report = selection.wait(timeout=120)
        assert isinstance(report, SelectionReport)
        assert report.n_candidates == 2
        attached = client.job(selection.id)
        assert attached.info.kind == "model_selection"
        assert attached.wait() == report


def test_model_selection_equals_scikit_learn(lloyd):
    with Client(lloyd.url) as client:
        report = client.select(
            "kmeans",
            X,
            {"n_clusters": range(2, 6)},
            params={"n_init": 2, "random_state": 0},
            silhouette_diagrams=False,
            register="chosen",
            criterion="silhouette",
            description="best k by silhouette",
        )
        assert report.n_candidates == 4
        assert [c["params"]["n_clusters"] for c in report.candidates] == [2, 3, 4, 5]
        for candidate in report.candidates:
            k = candidate["params"]["n_clusters"]
            reference = KMeans(n_clusters=k, n_init=2, random_state=0).fit(X)
            assert_allclose(candidate["metrics"]["inertia"], reference.inertia_, rtol=RTOL)
        assert report.best["silhouette"]["params"] == {"n_clusters": 3}
        assert report.registered is not None
        assert (report.registered.model, report.registered.criterion) == ("chosen", "silhouette")
        chosen = client.model_version("chosen", report.registered.version)
        assert (chosen.params["n_clusters"], chosen.description) == (3, "best k by silhouette")

        mixtures = client.select(
            "gaussian_mixture",
            X,
            {"n_components": [1, 2, 3], "covariance_type": ["full", "diag"]},
            params={"random_state": 0},
        )
        assert mixtures.n_candidates == 6
        for candidate in mixtures.candidates:
            reference = GaussianMixture(random_state=0, **candidate["params"]).fit(X)
            assert_allclose(candidate["metrics"]["bic"], reference.bic(X), rtol=RTOL)

        with pytest.raises(ValueError, match="register"):
            client.select("kmeans", X, {"n_clusters": [2]}, criterion="silhouette")


# -- the registry ----------------------------------------------------------------------------------
def test_versions_aliases_and_deletes(lloyd, sklearn_kmeans):
    with Client(lloyd.url) as client:
        first = client.train("aliased", "kmeans", X, params=KMEANS_PARAMS, tags={"week": "47"})
        second = client.train("aliased", "kmeans", X, params={"n_clusters": 2, "n_init": 1})
        assert (first.version, second.version, first.tags) == (1, 2, {"week": "47"})
        assert [v.version for v in client.versions("aliased")] == [1, 2]
        assert client.model_version("aliased").version == 2

        pointed = client.set_alias("aliased", "production", 1)
        assert (pointed.version, pointed.aliases) == (1, ("production",))
        on_alias = client.predict("aliased", NEW, version="production")
        assert on_alias.version == 1
        assert_array_equal(on_alias.labels, sklearn_kmeans.predict(NEW))
        assert client.predict("aliased", NEW).version == 2
        assert client.predict("aliased", NEW, version=2).version == 2

        client.set_alias("aliased", "production", 2)
        model = client.model("aliased")
        assert (model.aliases, model.latest_version, model.n_versions) == ({"production": 2}, 2, 2)
        assert "aliased" in {m.name for m in client.models()}
        client.delete_alias("aliased", "production")
        with pytest.raises(NotFound):
            client.predict("aliased", NEW, version="production")

        assert client.delete("aliased", 1).deleted_versions == (1,)
        assert [v.version for v in client.versions("aliased")] == [2]
        deleted = client.delete("aliased")
        assert (deleted.name, deleted.deleted_versions) == ("aliased", (2,))
        assert "aliased" not in {m.name for m in client.models()}
        assert {"kmeans", "gaussian_mixture"} <= {a.name for a in client.algorithms()}


def test_models_and_versions_read_every_page(lloyd, trained):
    with Client(lloyd.url) as client:
        for index in range(3):
            client.train(f"paged-{index}", "kmeans", X[:20], params={"n_clusters": 2})
        names = [m.name for m in client.models()]
        assert names == sorted(names)
        assert {"paged-0", "paged-1", "paged-2", "km", "gmm"} <= set(names)


# -- errors -------------------------------------------------------------------------------------
def test_errors_are_the_class_of_their_code_with_the_problem_document(lloyd, trained):
    with Client(lloyd.url) as client:
        with pytest.raises(ModelNotFound) as missing:
            client.predict("no-such-model", NEW)
        error = missing.value
        assert isinstance(error, NotFound) and isinstance(error, LloydError)
        assert (error.status, error.code) == (404, "model_not_found")
        assert error.title == "Model not found"
        assert error.detail == "no model named 'no-such-model'"
        assert error.problem["type"] == "urn:lloyd:problem:model_not_found"
        assert error.request_id
        copied = pickle.loads(pickle.dumps(error))
        assert type(copied) is ModelNotFound
        assert (copied.problem, copied.request_id) == (error.problem, error.request_id)

        with pytest.raises(InvalidInput) as wide:
            client.predict("km", np.ones((2, 3)))
        assert wide.value.code == "invalid_input"
        assert wide.value.errors is not None
        assert wide.value.errors[0]["pointer"] == "/instances/0"
        assert "3 features" in wide.value.detail

        with pytest.raises(InvalidInput, match="ragged"):
            client.predict("km", [[1.0, 2.0], [3.0]])
        with pytest.raises(ValidationError) as strings:
            client.predict("km", [["a", 1.0]])
        assert isinstance(strings.value, InvalidInput)
        assert strings.value.errors and strings.value.errors[0]["pointer"] == "/instances/0/0"

        with pytest.raises(UnsupportedOperation) as unsupported:
            client.sample("km")
        assert "predict" in unsupported.value.problem["supported"]
        with pytest.raises(UnknownAlgorithm):
            client.train("x", "k-means", X)
        with pytest.raises(InvalidParameter):
            client.train("x", "kmeans", X, params={"n_clusters": -1})
        with pytest.raises(NotFound):
            client.job("no-such-job")


def test_api_keys_scopes(keyed):
    with Client(keyed.url) as anonymous, pytest.raises(Unauthorized) as e:
        anonymous.models()
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with Client(keyed.url, "not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.models()

    with Client(keyed.url, READ_KEY) as reader:
        with pytest.raises(Forbidden) as e:
            reader.train("keyed", "kmeans", X, params=KMEANS_PARAMS)
        assert (e.value.status, e.value.code) == (403, "forbidden")
        assert e.value.problem["required_scope"] == "write"

    # This server's trainings always answer 202: the client follows the job to the version.
    sent = Sent()
    with Client(keyed.url, WRITE_KEY, event_hooks=sent.hooks()) as writer:
        version = writer.train("keyed", "kmeans", X, params=KMEANS_PARAMS)
        assert version.version == 1
        assert any(r.url.path.startswith("/v1/jobs/") for r in sent.requests)
    with Client(keyed.url, READ_KEY) as reader:
        assert reader.predict("keyed", NEW).version == 1


def _server_codes() -> dict[str, int]:
    """Every problem code the server can answer with, and its status: its error classes, the
    codes its problem documents and job errors spell out literally, Starlette's."""
    import app.main  # noqa: F401  (every module, so every error class, is loaded)
    from app.api.problems import HTTP_CODES
    from app.errors import LloydError as ServerError

    def subclasses(cls: type[ServerError]) -> list[type[ServerError]]:
        return [cls, *(s for c in cls.__subclasses__() for s in subclasses(c))]

    codes = {cls.code: cls.status for cls in subclasses(ServerError)}
    codes |= {code: status for status, code in HTTP_CODES.items()}
    for path in (REPO / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "problem":
                status, code = node.args[0], node.args[1]
                if isinstance(code, ast.Constant) and isinstance(status, ast.Constant):
                    codes[code.value] = status.value
            if isinstance(node, ast.Dict):
                fields = {
                    k.value: v.value
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                }
                if isinstance(fields.get("code"), str) and isinstance(fields.get("status"), int):
                    codes[fields["code"]] = fields["status"]
    return codes


STATUS_BASES = {
    404: lloyd_client.NotFound,
    409: lloyd_client.Conflict,
    422: lloyd_client.Unprocessable,
    500: lloyd_client.ServerError,
}


def test_every_code_the_server_sends_has_its_exception_class():
    codes = _server_codes()
    assert {"model_not_found", "validation_error", "internal_error", "job_timeout"} <= set(codes)
    assert sorted(set(codes) - set(ERRORS_BY_CODE)) == []
    for code, status in codes.items():
        base = STATUS_BASES.get(status, LloydError)
        assert issubclass(ERRORS_BY_CODE[code], base), (code, status)
    # A code this client does not know yet: the base class, the document kept whole.
    unknown = error_from_problem({"code": "brand_new", "status": 418, "detail": "d", "x": 1})
    assert type(unknown) is LloydError
    assert (unknown.status, unknown.code, unknown.problem["x"]) == (418, "brand_new", 1)


# -- AsyncClient ----------------------------------------------------------------------------------
def test_async_client_answers_what_the_client_answers(lloyd, trained, sklearn_kmeans, sklearn_gmm):
    big = np.random.default_rng(3).normal(size=(6_000, 2))

    async def session() -> None:
        sent = Sent()
        async with AsyncClient(lloyd.url, event_hooks=sent.ahooks()) as lloyd_async:
            version = await lloyd_async.train("async", "kmeans", X, params=KMEANS_PARAMS)
            assert_allclose(version.metrics["inertia"], sklearn_kmeans.inertia_, rtol=RTOL)
            job = await lloyd_async.train("async", "kmeans", X, params=KMEANS_PARAMS, wait=False)
            assert isinstance(job, AsyncJob)
            assert (await job.wait(timeout=120)).version == 2
            assert (await job.refresh()).status == "succeeded"

            labels = (await lloyd_async.predict("async", NEW, version=1)).labels
            assert_array_equal(labels, sklearn_kmeans.predict(NEW))
            assert_array_equal(
                (await lloyd_async.predict("async", big)).labels, sklearn_kmeans.predict(big)
            )
            assert kinds(sent.last()) == (NPY, NPY)
            distances = (await lloyd_async.transform("async", NEW)).distances
            assert_allclose(distances, sklearn_kmeans.transform(NEW), rtol=RTOL)
            score = (await lloyd_async.score("async", NEW)).score
            assert_allclose(score, sklearn_kmeans.score(NEW), rtol=RTOL)
            anomalies = await lloyd_async.anomalies("async", NEW, contamination=CONTAMINATION)
            expected = kmeans_anomalies(sklearn_kmeans, NEW, CONTAMINATION)
            assert_allclose(anomalies.anomaly_scores, expected["scores"], rtol=RTOL)

            proba = (await lloyd_async.predict_proba("gmm", NEW)).probabilities
            assert_allclose(proba, sklearn_gmm.predict_proba(NEW), rtol=RTOL, atol=1e-12)
            scores = (await lloyd_async.score_samples("gmm", NEW)).scores
            assert_allclose(scores, sklearn_gmm.score_samples(NEW), rtol=RTOL)
            assert_allclose((await lloyd_async.bic("gmm")).value, sklearn_gmm.bic(X), rtol=RTOL)
            aic = (await lloyd_async.aic("gmm", NEW)).value
            assert_allclose(aic, sklearn_gmm.aic(NEW), rtol=RTOL)
            sample = await lloyd_async.sample("gmm", 4, random_state=2)
            drawn = copy.deepcopy(sklearn_gmm).set_params(random_state=2).sample(4)
            assert_allclose(sample.instances, drawn[0], rtol=RTOL)

            report = await lloyd_async.select("kmeans", X, {"n_clusters": [2, 3]})
            assert report.n_candidates == 2
            selection = await lloyd_async.select("kmeans", X, {"n_clusters": [2]}, wait=False)
            assert (await selection.wait(timeout=120)).n_candidates == 1

            assert "async" in {m.name for m in await lloyd_async.models()}
            assert (await lloyd_async.model("async")).n_versions == 2
            assert [v.version for v in await lloyd_async.versions("async")] == [1, 2]
            assert (await lloyd_async.model_version("async", 1)).version == 1
            assert await lloyd_async.parameters("async", 1)
            assert (await lloyd_async.set_alias("async", "canary", 1)).aliases == ("canary",)
            assert (await lloyd_async.predict("async", NEW, version="canary")).version == 1
            await lloyd_async.delete_alias("async", "canary")
            assert "kmeans" in {a.name for a in await lloyd_async.algorithms()}

            slow = await lloyd_async.train(
                "async-slow", "gaussian_mixture", SLOW_ROWS, params=SLOW_PARAMS, wait=False
            )
            assert slow.id in {j.id for j in await lloyd_async.jobs(status=None)}
            attached = await lloyd_async.job(slow.id)
            assert (await attached.cancel()).status == "cancelled"
            with pytest.raises(JobCancelled):
                await slow.wait()

            with pytest.raises(ModelNotFound):
                await lloyd_async.predict("no-such-model", NEW)
            with pytest.raises(InvalidInput):
                await lloyd_async.predict("async", np.ones((1, 5)))
            assert (await lloyd_async.delete("async", 1)).deleted_versions == (1,)
            assert (await lloyd_async.delete("async")).deleted_versions == (2,)

    asyncio.run(session())


# -- retries and timeouts -------------------------------------------------------------------------
def attempts_at(sent: Sent, path: str) -> int:
    return sum(1 for r in sent.requests if r.url.path == path)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_idempotent_calls_are_retried_until_the_server_listens(fresh_settings, flavour):
    server = ThreadedServer(fresh_settings).start(delay=1.0, wait=False)
    sent = Sent()
    try:
        if flavour == "sync":
            with Client(server.url, retries=12, backoff=0.1, event_hooks=sent.hooks()) as client:
                assert client.models() == []
        else:

            async def models() -> list[Any]:
                async with AsyncClient(
                    server.url, retries=12, backoff=0.1, event_hooks=sent.ahooks()
                ) as client:
                    return await client.models()

            assert asyncio.run(models()) == []
        assert attempts_at(sent, "/v1/models") >= 2
    finally:
        server.wait_started()
        server.stop()


def test_a_restarted_server_is_retried_and_training_never_is(fresh_settings):
    first = ThreadedServer(fresh_settings).start()
    sent = Sent()
    with Client(first.url, retries=12, backoff=0.1, event_hooks=sent.hooks()) as client:
        client.train("restarted", "kmeans", X, params=KMEANS_PARAMS)
        assert client.predict("restarted", NEW).version == 1
        first.stop()

        # Nobody listens: a training is sent once, whatever the retries.
        sent.clear()
        with pytest.raises(ConnectionFailed):
            client.train("restarted", "kmeans", X, params=KMEANS_PARAMS)
        assert attempts_at(sent, "/v1/models") == 1

        # The same server again, on the same port, a second from now: the prediction (a
        # read-only POST) waits for it through its retries.
        second = ThreadedServer(fresh_settings, first.port).start(delay=1.0, wait=False)
        try:
            sent.clear()
            assert client.predict("restarted", NEW).version == 1
            assert attempts_at(sent, "/v1/models/restarted/predict") >= 2
        finally:
            second.wait_started()
            second.stop()


def test_retries_are_bounded():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    sent = Sent()
    began = time.monotonic()
    with Client(url, retries=3, backoff=0.05, event_hooks=sent.hooks()) as client:
        with pytest.raises(ConnectionFailed, match="after 4 attempts") as e:
            client.model("m")
        assert isinstance(e.value, ConnectionError)
        assert isinstance(e.value.__cause__, httpx.ConnectError)
    assert len(sent.requests) == 4
    assert time.monotonic() - began < 5


@dataclass
class SilentServer:
    """A real TCP server that accepts connections and never answers."""

    listener: socket.socket
    accepted: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = SilentServer(listener)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    with suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
    listener.close()
    thread.join(timeout=10)
    for connection in server.accepted:
        connection.close()


def test_a_timeout_is_raised_and_not_retried(silent):
    began = time.monotonic()
    with Client(silent.url, timeout=0.3, retries=3) as client, pytest.raises(Timeout) as e:
        client.predict("m", NEW)
    assert isinstance(e.value, TimeoutError)
    assert time.monotonic() - began < 3

    async def models() -> None:
        async with AsyncClient(silent.url, timeout=0.3, retries=3) as client:
            await client.models()

    with pytest.raises(Timeout):
        asyncio.run(models())
    assert len(silent.accepted) == 2  # one connection each: no retry


# -- the documentation ----------------------------------------------------------------------------
DOCUMENTED = {
    REPO / "client" / "README.md": ["press-3 1 [100, 100]", "ModelNotFound 404 model_not_found"],
    REPO / "docs" / "client.md": ["10 contamination", "422 invalid_input"],
}


@pytest.mark.parametrize("doc", list(DOCUMENTED), ids=lambda path: path.name)
def test_the_documented_sessions_run_as_they_are(fresh_settings, doc, capsys):
    """Every Python block of the page, in order, against a fresh server in place of
    localhost:8000."""
    server = ThreadedServer(fresh_settings).start()
    try:
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S):
            code = compile(block.replace("http://localhost:8000", server.url), str(doc), "exec")
            exec(code, {"__name__": "documented_session"})
    finally:
        server.stop()
    printed = capsys.readouterr().out
    for line in DOCUMENTED[doc]:
        assert line in printed, printed


# -- the package ---------------------------------------------------------------------------------
def test_the_package_needs_only_httpx_and_numpy():
    project = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0].split("=")[0] for d in project["dependencies"]] == ["httpx", "numpy"]
    allowed = set(sys.stdlib_module_names) | {"httpx", "numpy", "lloyd_client"}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in allowed, f"{path.name} imports {module}"
    assert (PACKAGE / "py.typed").exists()


def test_no_function_of_the_package_is_more_complex_than_15():
    too_complex = [
        f"{path.name}:{block.lineno} {block.fullname} ({block.complexity})"
        for path in sorted(PACKAGE.rglob("*.py"))
        for block in cc_visit(path.read_text())
        if block.complexity > 15
    ]
    assert too_complex == []
