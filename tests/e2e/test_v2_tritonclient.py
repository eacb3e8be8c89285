"""The Open Inference Protocol of a real server process, through the protocol's own client,
Triton's ``tritonclient.http.InferenceServerClient``: health, metadata, readiness, inference
with JSON and with binary tensor data, keys sent as its headers, errors as its exceptions; and
requests and answers exactly as MLServer's scikit-learn runtime documents them, so that a client
written for it works unchanged. Numbers equal scikit-learn's on the same data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from numpy.testing import assert_allclose
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest
from sklearn.mixture import GaussianMixture
from tritonclient.utils import InferenceServerException

from app.api_keys import hash_key
from tests.api.contract import BLOBS, new_rows, training_body
from tests.e2e.server import free_port, running_process, server_env, uvicorn_command

KEY = "tritonclient-read-write"
AUTHORIZATION = {"Authorization": f"Bearer {KEY}"}
RTOL = 1e-9
KMEANS = {"n_clusters": 3, "random_state": 0}
GMM = {"n_components": 3, "random_state": 0}
FOREST = {"n_estimators": 20, "random_state": 0}
X = np.ascontiguousarray(new_rows(BLOBS))


def keyed() -> dict[str, str]:
    """The key's header, in a dict of its own for each call: tritonclient's ``infer`` adds its
    Inference-Header-Content-Length to the dict it is given."""
    return dict(AUTHORIZATION)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with keys, and three models: "km" (k-means, its version 1 also "production"),
    "gmm" (a Gaussian mixture), "forest" (an isolation forest)."""
    folder = tmp_path_factory.mktemp("v2-tritonclient")
    port = free_port()
    env = server_env(
        f"sqlite:///{folder / 'lloyd.db'}",
        folder / "store",
        LLOYD_API_KEYS=f"{hash_key(KEY)}:read+write",
    )
    with running_process(uvicorn_command(port), env, port, folder / "server.log") as (_, url):
        with httpx.Client(base_url=url, headers=keyed(), timeout=60) as http:
            for name, algorithm, params in (
                ("km", "kmeans", KMEANS),
                ("gmm", "gaussian_mixture", GMM),
                ("forest", "isolation_forest", FOREST),
            ):
                body = training_body(name=name, algorithm=algorithm, params=params)
                assert http.post("/v1/models", json=body).status_code == 201
            alias = http.put("/v1/models/km/aliases/production", json={"version": 1})
            assert alias.status_code == 200
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Any]:
    triton_client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield triton_client
    triton_client.close()


@pytest.fixture(scope="module")
def sklearn_models() -> dict[str, Any]:
    return {
        "km": KMeans(**KMEANS).fit(BLOBS),
        "gmm": GaussianMixture(**GMM).fit(BLOBS),
        "forest": IsolationForest(**FOREST).fit(BLOBS),
    }


def rows_input(rows: np.ndarray, datatype: str = "FP64", *, binary: bool) -> Any:
    given = triton.InferInput("input-0", list(rows.shape), datatype)
    given.set_data_from_numpy(rows, binary_data=binary)
    return given


def test_health_and_metadata(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("km", headers=keyed())
    assert client.is_model_ready("km", "1", headers=keyed())
    assert client.is_model_ready("km", "production", headers=keyed())
    assert not client.is_model_ready("nope", headers=keyed())
    assert not client.is_model_ready("km", "9", headers=keyed())
    server = client.get_server_metadata(headers=keyed())
    assert server["name"] == "lloyd" and "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata("gmm", headers=keyed())
    assert model["name"] == "gmm" and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 2]}]
    names = [output["name"] for output in model["outputs"]]
    assert names[:3] == ["predict", "predict_proba", "classes"]
    aliased = client.get_model_metadata("km", "production", headers=keyed())
    assert aliased["parameters"]["version"] == "1"


def test_without_a_key_the_client_raises_the_servers_401(client) -> None:
    with pytest.raises(InferenceServerException) as refused:
        client.get_model_metadata("km")
    assert refused.value.status() == "401"
    assert "API key" in refused.value.message()
    assert not client.is_model_ready("km")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_infer_equals_scikit_learn(client, sklearn_models, binary: bool, datatype: str) -> None:
    rows = X.astype(np.float32 if datatype == "FP32" else np.float64)
    seen = rows.astype(np.float64)  # what the model computes on
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("predict", "predict_proba", "score_samples")
    ]
    result = client.infer(
        "gmm",
        [rows_input(rows, datatype, binary=binary)],
        outputs=outputs,
        request_id="tc-1",
        headers=keyed(),
    )
    gmm = sklearn_models["gmm"]
    assert result.as_numpy("predict").tolist() == gmm.predict(seen).reshape(-1, 1).tolist()
    assert_allclose(result.as_numpy("predict_proba"), gmm.predict_proba(seen), rtol=RTOL, atol=0)
    assert_allclose(
        result.as_numpy("score_samples"), gmm.score_samples(seen).reshape(-1, 1), rtol=RTOL
    )
    response = result.get_response()
    assert response["model_name"] == "gmm" and response["model_version"] == "1"
    assert response["id"] == "tc-1"


def test_infer_a_version_by_number_and_alias_with_the_default_output(
    client, sklearn_models
) -> None:
    """Without outputs tritonclient asks for every output as binary: the default, predict."""
    for version in ("1", "production", ""):
        result = client.infer(
            "km", [rows_input(X, binary=True)], model_version=version, headers=keyed()
        )
        labels = sklearn_models["km"].predict(X).reshape(-1, 1)
        assert result.as_numpy("predict").tolist() == labels.tolist()
        assert result.get_output("predict")["parameters"]["binary_data_size"] == labels.size * 8


def test_infer_anomalies_with_parameters(client, sklearn_models) -> None:
    forest = sklearn_models["forest"]
    training = -forest.score_samples(BLOBS)
    threshold = float(np.quantile(training, 1 - 0.25))
    result = client.infer(
        "forest",
        [rows_input(X, binary=True)],
        outputs=[
            triton.InferRequestedOutput("anomaly_scores", binary_data=True),
            triton.InferRequestedOutput("is_anomaly", binary_data=True),
        ],
        parameters={"contamination": 0.25},
        headers=keyed(),
    )
    scores = -forest.score_samples(X)
    assert_allclose(result.as_numpy("anomaly_scores").ravel(), scores, rtol=RTOL, atol=0)
    assert result.as_numpy("is_anomaly").ravel().tolist() == (scores > threshold).tolist()
    assert result.get_response()["parameters"]["threshold_source"] == "contamination"


def test_a_bad_request_raises_the_servers_400(client) -> None:
    wide = np.ones((2, 3))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("km", [rows_input(wide, binary=True)], headers=keyed())
    assert refused.value.status() == "400"
    assert "trained on 2" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer(
            "km",
            [rows_input(X, binary=False)],
            outputs=[triton.InferRequestedOutput("predict_proba")],
            headers=keyed(),
        )
    assert unknown.value.status() == "400"
    assert "no output 'predict_proba'" in unknown.value.message()


# -- MLServer's scikit-learn runtime: its documented requests, its answers' shape ---------------
def test_mlservers_documented_requests_work_unchanged(server: str, sklearn_models) -> None:
    """The requests of MLServer's scikit-learn example (an input named "predict", FP32 rows as
    nested lists, a versioned path) and of its runtime's README (INT32, flat data, the
    `predict_proba` output) get answers of the shape MLServer gives: outputs named after the
    method, `predict` as [n, 1], `predict_proba` as [n, k], `content_type` "np"."""
    x_0 = X[:1].astype(np.float32)
    example = {"inputs": [{"name": "predict", "shape": x_0.shape, "datatype": "FP32"}]}
    example["inputs"][0]["data"] = x_0.tolist()
    readme = {
        "inputs": [
            {"name": "my-input", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    gmm = sklearn_models["gmm"]
    with httpx.Client(base_url=server, headers=keyed()) as http:
        answer = http.post("/v2/models/gmm/versions/1/infer", json=example).json()
        assert answer["model_name"] == "gmm" and answer["model_version"] == "1"
        assert isinstance(answer["id"], str)
        label = int(gmm.predict(x_0.astype(np.float64))[0])
        assert answer["outputs"] == [
            {
                "name": "predict",
                "datatype": "INT64",
                "shape": [1, 1],
                "parameters": {"content_type": "np"},
                "data": [label],
            }
        ]
        answer = http.post("/v2/models/gmm/infer", json=readme).json()
        [output] = answer["outputs"]
        assert output["name"] == "predict_proba" and output["shape"] == [2, 3]
        assert output["datatype"] == "FP64" and output["parameters"] == {"content_type": "np"}
        proba = gmm.predict_proba(np.array([[1.0, 2.0], [3.0, 4.0]]))
        assert_allclose(np.reshape(output["data"], output["shape"]), proba, rtol=RTOL, atol=0)


# -- docs/v2_protocol.md: its two sessions, run as they are ------------------------------------
DOC = Path(__file__).resolve().parents[2] / "docs" / "v2_protocol.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def session(section: str) -> list[tuple[str, str]]:
    """The code blocks (language, text) of the page's section ``section``."""
    text = DOC.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return BLOCK.findall(text)


def assert_same_json(got: Any, want: Any) -> None:
    """Equal JSON, floats within 1e-9 (the page was written on another machine)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (got, want)
        for key in want:
            assert_same_json(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for a, b in zip(got, want, strict=True):
            assert_same_json(a, b)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=RTOL, abs=0), (got, want)
    else:
        assert got == want and type(got) is type(want), (got, want)


def test_the_documented_sessions_run_as_they_are(tmp_path: Path) -> None:
    """The curl session's commands answer what the page shows (its JSON answers, its output
    lines), and so do the tritonclient snippet's prints, on a fresh server without keys."""
    port = free_port()
    env = server_env(f"sqlite:///{tmp_path / 'lloyd.db'}", tmp_path / "store")
    with running_process(uvicorn_command(port), env, port, tmp_path / "server.log"):

        def run(code: str, *argv: str) -> str:
            code = code.replace("localhost:8000", f"127.0.0.1:{port}")
            code = code.replace(".venv/bin/python", sys.executable)
            done = subprocess.run(
                [*argv, code], cwd=tmp_path, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        blocks = session("A session with curl")
        for index, (language, code) in enumerate(blocks):
            if language != "bash":
                continue
            out = run("set -euo pipefail\n" + code, "bash", "-c")
            shown = [line[2:] for line in code.splitlines() if line.startswith("# ")]
            assert [line for line in out.splitlines() if line in shown] == shown, out
            if index + 1 < len(blocks) and blocks[index + 1][0] == "json":
                answer = json.loads(out)
                expected = json.loads(blocks[index + 1][1])
                if expected.get("id") == "<the X-Request-ID>":
                    expected["id"] = answer["id"]
                assert_same_json(answer, expected)
        [(language, code)] = session("A session with tritonclient")
        assert language == "python"
        printed = run(code, sys.executable, "-c").splitlines()
        # Each print writes one line; the page shows it after the print, where it matters.
        shown = [
            line.split("  # ", 1)[1] if "  # " in line else None
            for line in code.splitlines()
            if line.startswith("print(")
        ]
        assert len(printed) == len(shown), printed
        for got, want in zip(printed, shown, strict=True):
            assert want is None or got == want, (got, want)
