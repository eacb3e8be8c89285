"""Lloyd against MLServer and MLflow's scoring server: the same data, the same models, one run.

One command runs, in interleaved rounds, one server at a time (each started, measured and
stopped): the orjson floor (bench/throughput_floor.py, bare FastAPI app that parses the body and
answers a constant), the Lloyd service (``python -m app``, as bench/throughput.py starts it),
MLServer with its scikit-learn runtime (``mlserver start``, ``parallel_workers`` 0: one process)
and MLflow's scoring server (``mlflow models serve --env-manager local -w 1``, one model per
server, so one server for the k-means model and one for the mixture). The peers are optional:
each runs from a virtual environment of its own made by ``scripts/bench-peers-setup``
(.bench-peers/mlserver, .bench-peers/mlflow); one that is absent is skipped.

Every server serves KMeans(8) and GaussianMixture(8, 'full') fitted on the same 20,000 x 16
rows with the same params and seed as the service's models (bench/throughput.py's make_data):
the peers get the very estimators fitted here, loaded with joblib (their venvs pin the service's
scikit-learn, numpy and joblib; where they differ, the peer's venv refits them from the same rows)
and saved in the peer's format inside its venv. Each peer's 1-row answers are checked against
scikit-learn in-process (labels equal, probabilities within 1e-9 relative) before it is measured.

Cases:
1. 1-row ``predict`` on the k-means model and 1-row ``predict_proba`` on the mixture, 8
   connections driven by ``wrk`` (a warm-up, then ``--duration`` seconds): throughput and p99,
   each server in its own protocol (Lloyd ``{"instances": [[...]]}``; MLServer the V2 inference
   protocol, ``/v2/models/<name>/infer``; MLflow ``{"inputs": [[...]]}`` to ``/invocations``).
   The floor answers one request kind: its numbers stand in both rows.
2. One 100,000 x 16 request as JSON, k-means ``predict``, timed with httpx (one untimed request,
   whose labels are checked, then ``--repeats``); the floor only parses it.

A wrk run with a non-2xx answer or a socket error, a wrong answer or a server that does not start
is listed under FAILURES (exit code 1) and left out of the medians.

The peers run with as many BLAS/OpenMP threads as Lloyd serves with (1; ``--peer-threads
default`` leaves them their libraries' default, one per core). Install the peers with
``scripts/bench-peers-setup``.

Run: .venv/bin/python bench/peers.py [--rounds 3] [--duration 10] [--repeats 3]
     [--peer-threads 1|default] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import orjson
import sklearn
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput as T

PEERS_DIR = T.REPO_ROOT / ".bench-peers"
SETUP = "scripts/bench-peers-setup"
NAMES = ("floor", "Lloyd", "MLServer", "MLflow")
PEERS = ("MLServer", "MLflow")
MODELS = (("km", "predict"), ("gmm", "predict_proba"))  # model name, operation
# The issue's claim: Lloyd's 1-row throughput over each peer's, and its figures on this machine.
CLAIMS = {"MLServer": 5.0, "MLflow": 8.0}
ISSUE_FIGURES = {
    "MLServer": "about 420-530 req/s for 1-row requests; ~360 ms for 100,000 x 16 JSON",
    "MLflow": "about 310 req/s for 1-row requests; ~3,700 ms for 100,000 x 16 JSON",
}
# No compression of answers by any server (MLServer gzips by default when asked to): the
# time measured is the server's work, not zlib's.
IDENTITY = {"Accept-Encoding": "identity"}


# -- peers: their venvs, their model files, their servers ---------------------------------------
@dataclass
class Peer:
    name: str
    folder: str  # under .bench-peers/
    module: str  # what its venv must import

    @property
    def python(self) -> Path:
        return PEERS_DIR / self.folder / "bin" / "python"

    @property
    def bin(self) -> Path:
        return PEERS_DIR / self.folder / "bin"


PEER_SPECS = {
    "MLServer": Peer("MLServer", "mlserver", "mlserver_sklearn"),
    "MLflow": Peer("MLflow", "mlflow", "mlflow.pyfunc.scoring_server"),
}

# Runs inside a peer's venv: the estimators of the main venv (joblib) when the versions match,
# else refitted from the same rows; saved in the peer's model format. Prints its versions.
PREPARE = r"""
import json, sys
from pathlib import Path
import joblib, numpy, sklearn
spec = json.loads(sys.argv[1])
folder = Path(spec["folder"])
versions = {"scikit-learn": sklearn.__version__, "numpy": numpy.__version__,
            "joblib": joblib.__version__}
refit = versions != spec["versions"]
if refit:
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits
    X = numpy.load(spec["train"])
    with threadpool_limits(limits=1):
        models = {"km": KMeans(**spec["kmeans"]).fit(X),
                  "gmm": GaussianMixture(**spec["gmm"]).fit(X)}
else:
    models = {name: joblib.load(path) for name, path in spec["pickles"].items()}
if spec["peer"] == "MLServer":
    import mlserver
    versions["mlserver"] = mlserver.__version__
    for name, operation in spec["models"]:
        (folder / name).mkdir(parents=True)
        joblib.dump(models[name], folder / name / "model.joblib")
        parameters = {"uri": "./model.joblib", "version": "v1"}
        if operation != "predict":  # the runtime's output for every request without "outputs"
            parameters["extra"] = {"predict_fn": operation}
        settings = {"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": parameters}
        (folder / name / "model-settings.json").write_text(json.dumps(settings))
else:
    import mlflow, mlflow.sklearn
    versions["mlflow"] = mlflow.__version__
    for name, operation in spec["models"]:
        mlflow.sklearn.save_model(
            models[name], str(folder / name), pyfunc_predict_fn=operation,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        )
print(json.dumps({"versions": versions, "refit": refit}))
"""


def peer_available(peer: Peer) -> bool:
    if not peer.python.exists():
        return False
    done = subprocess.run(
        [str(peer.python), "-c", f"import {peer.module}"], capture_output=True, check=False
    )
    return done.returncode == 0


def prepare_peer(peer: Peer, folder: Path, pickles: dict[str, Path]) -> dict:
    """The peer's model files in ``folder``, written by its own venv's Python."""
    spec = {
        "peer": peer.name,
        "folder": str(folder),
        "versions": {
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "joblib": joblib.__version__,
        },
        "pickles": {name: str(path) for name, path in pickles.items()},
        "train": str(pickles["km"].parent / "train.npy"),
        "kmeans": T.KMEANS_PARAMS,
        "gmm": T.GMM_PARAMS,
        "models": MODELS,
    }
    done = subprocess.run(
        [str(peer.python), "-c", PREPARE, json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=folder.parent,
        env=T.base_env(),
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"saving the {peer.name} models failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class PeerServer(T.Server):
    """T.Server, in a working directory of the run's own (the peers write files beside them)."""

    def __init__(
        self, label: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path
    ) -> None:
        self.label, self.log = label, log
        self.port = T.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        env = {k: v.replace("{port}", str(self.port)) for k, v in env.items()}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        T.LIVE[self.process.pid] = self.process


def peer_env(peer: Peer, threads: int | None) -> dict[str, str]:
    """T.base_env with the peer's venv first on the PATH and, unless ``threads`` is None (the
    libraries' default: one per core), that many BLAS/OpenMP threads."""
    env = T.base_env()
    if threads is not None:
        env |= dict.fromkeys(T.THREAD_VARIABLES, str(threads))
    env["PATH"] = f"{peer.bin}:{env.get('PATH', '')}"  # MLflow runs `uvicorn` from the PATH
    env.pop("VIRTUAL_ENV", None)
    return env


def start_mlserver(folder: Path, threads: int | None) -> PeerServer:
    peer = PEER_SPECS["MLServer"]
    run = folder / "mlserver-run"
    run.mkdir(exist_ok=True)
    env = peer_env(peer, threads) | {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "{port}",
        "MLSERVER_GRPC_PORT": str(T.free_port()),
        "MLSERVER_METRICS_PORT": str(T.free_port()),
        "MLSERVER_PARALLEL_WORKERS": "0",  # inference in the server's own process: one process
        "MLSERVER_DEBUG": "false",  # no access log, INFO logging
        "MLSERVER_METRICS_DIR": str(run / "metrics"),
        "MLSERVER_ENVIRONMENTS_DIR": str(run / "envs"),
    }
    argv = [str(peer.bin / "mlserver"), "start", str(folder / "mlserver-models")]
    server = PeerServer("MLServer", argv, env, folder / "mlserver.log", run)

    def ready(base: str) -> bool:
        return all(
            httpx.get(f"{base}/v2/models/{name}/ready", timeout=2.0).status_code == 200
            for name, _ in MODELS
        )

    try:
        server.wait_ready(ready)
    except BaseException:
        server.stop()
        raise
    return server


def start_mlflow(folder: Path, model: str, threads: int | None) -> PeerServer:
    peer = PEER_SPECS["MLflow"]
    run = folder / "mlflow-run"
    run.mkdir(exist_ok=True)
    # The scoring server is uvicorn: no access log, as the floor and the service run.
    env = peer_env(peer, threads) | {"UVICORN_ACCESS_LOG": "false"}
    argv = [
        str(peer.bin / "mlflow"),
        "models",
        "serve",
        "-m",
        str(folder / "mlflow-models" / model),
        "--env-manager",
        "local",
        "-w",
        "1",
        "-h",
        "127.0.0.1",
        "-p",
        "{port}",
    ]
    server = PeerServer(f"MLflow {model}", argv, env, folder / f"mlflow-{model}.log", run)
    try:
        server.wait_ready(lambda base: httpx.get(f"{base}/ping", timeout=2.0).status_code == 200)
    except BaseException:
        server.stop()
        raise
    return server


# -- protocols: request bodies, answers --------------------------------------------------------
def lloyd_body(rows: np.ndarray) -> bytes:
    return orjson.dumps({"instances": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def v2_body(rows: np.ndarray) -> bytes:
    """The V2 inference protocol: one FP64 tensor, its data flat in row-major order."""
    tensor = {
        "name": "input-0",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": np.ascontiguousarray(rows).ravel(),
    }
    return orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)


def mlflow_body(rows: np.ndarray) -> bytes:
    return orjson.dumps({"inputs": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def lloyd_answer(operation: str, answer: dict) -> np.ndarray:
    return np.asarray(answer["labels" if operation == "predict" else "probabilities"])


def v2_answer(operation: str, answer: dict) -> np.ndarray:
    output = answer["outputs"][0]
    values = np.asarray(output["data"]).reshape(output["shape"])
    return values.reshape(-1) if operation == "predict" else values


def mlflow_answer(operation: str, answer: dict) -> np.ndarray:
    return np.asarray(answer["predictions"])


@dataclass
class Protocol:
    body: Callable[[np.ndarray], bytes]
    answer: Callable[[str, dict], np.ndarray]
    one_row: bytes = b""
    big: bytes = b""


PROTOCOLS = {
    "Lloyd": Protocol(lloyd_body, lloyd_answer),
    "MLServer": Protocol(v2_body, v2_answer),
    "MLflow": Protocol(mlflow_body, mlflow_answer),
}
JSON = {"Content-Type": "application/json"}


# -- measuring ---------------------------------------------------------------------------------
class Run:
    """Samples (per server, case and round), failures and notes of the whole run."""

    def __init__(self, args: argparse.Namespace, data: T.Data, folder: Path) -> None:
        self.args, self.data, self.folder = args, data, folder
        self.results = T.Results()
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.versions: dict[str, str] = {}
        with threadpool_limits(limits=T.SERVING_THREADS):
            row = data.big[:1]
            self.expected = {
                "predict": data.kmeans.predict(row),
                "predict_proba": data.mixture.predict_proba(row),
                "big": data.kmeans.predict(data.big),
            }

    def add(self, key: str, value: float) -> None:
        self.results.add(key, value)

    def samples(self, key: str) -> list[float]:
        return self.results.samples.get(key, [])

    def fail(self, text: str) -> None:
        T.log(f"    FAILED: {text}")
        self.failures.append(text)


def write_wrk_script(folder: Path, label: str, body: bytes, headers: dict[str, str]) -> Path:
    """A wrk script that POSTs ``body`` with ``headers`` (T.wrk_script writes Lloyd's)."""
    slug = "".join(c if c.isalnum() else "-" for c in label)
    body_path = folder / f"wrk-{slug}.body"
    body_path.write_bytes(body)
    script = folder / f"wrk-{slug}.lua"
    lines = [
        'wrk.method = "POST"',
        f'local f = assert(io.open("{body_path}", "rb"))',
        'wrk.body = f:read("*a")',
        "f:close()",
        *(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()),
    ]
    script.write_text("\n".join(lines) + "\n")
    return script


def measure_wrk(run: Run, key: str, url: str, script: Path) -> None:
    """A warm-up run, then the measured one: kept only without non-2xx and socket errors."""
    T.run_wrk(url, script, run.args.warmup)
    result = T.run_wrk(url, script, run.args.duration)
    T.log(
        f"    {key}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 "
        f"{result.p99_ms:.2f} ms ({result.requests} requests, non-2xx {result.non_2xx}, "
        f"socket errors {result.socket_errors})"
    )
    if math.isnan(result.rps) or result.non_2xx or result.socket_errors:
        run.fail(
            f"wrk {key} ({url}): non-2xx {result.non_2xx}, socket errors "
            f"{result.socket_errors}; the run is left out:\n{result.output[-1200:]}"
        )
        return
    run.add(f"{key}/rps", result.rps)
    run.add(f"{key}/p99", result.p99_ms)


def check_one_row(
    run: Run, name: str, http: httpx.Client, urls: dict[str, str], protocol: Protocol
) -> bool:
    """Each operation's 1-row answer equals scikit-learn's in-process (labels exactly,
    probabilities within 1e-9 relative); a few requests, which warm the code paths too."""
    good = True
    for operation, url in urls.items():
        response = None
        for _ in range(5):
            response = http.post(url, content=protocol.one_row, headers=JSON)
            if response.status_code != 200:
                run.fail(f"{name} {operation}, 1 row: HTTP {response.status_code} {response.text}")
                return False
        got = protocol.answer(operation, response.json())
        if not T.same_answer(got, run.expected[operation]):
            run.fail(
                f"{name} {operation}, 1 row: {got.tolist()} differs from scikit-learn's "
                f"{run.expected[operation].tolist()}"
            )
            good = False
    if good:
        T.log(f"    {name}: 1-row {' and '.join(urls)} equal scikit-learn's in-process")
    return good


def time_big(
    run: Run, name: str, http: httpx.Client, url: str, body: bytes, protocol: Protocol | None
) -> None:
    """One untimed 100,000-row request (its labels checked, but the floor's), then repeats."""
    headers = JSON | IDENTITY
    what = f"{name} {T.BIG_ROWS:,}-row JSON predict"
    response = http.post(url, content=body, headers=headers)
    if response.status_code != 200:
        run.fail(f"{what}: HTTP {response.status_code} {response.text[:1000]}")
        return
    if protocol is not None and not T.same_answer(
        protocol.answer("predict", response.json()), run.expected["big"]
    ):
        run.fail(f"{what}: the labels differ from scikit-learn's")
        return
    times = []
    for _ in range(run.args.repeats):
        started = time.perf_counter()
        response = http.post(url, content=body, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            run.fail(f"{what}: HTTP {response.status_code} {response.text[:1000]}")
            return
        times.append(elapsed)
    run.results.samples[f"{name}/big/ms"].extend(times)
    T.log(f"    {name}/big: {', '.join(f'{t:,.0f}' for t in times)} ms")


# -- one server's turn in a round ---------------------------------------------------------------
def floor_turn(run: Run, scripts: dict[str, Path]) -> None:
    with (
        T.start_floor("FastAPI", run.folder) as server,
        httpx.Client(timeout=T.REQUEST_TIMEOUT) as http,
    ):
        T.log(f"  floor (FastAPI + orjson, pid {server.pid})")
        url = f"{server.base}/predict"
        measure_wrk(run, "floor/1row", url, scripts["Lloyd"])
        time_big(run, "floor", http, url, run.data.big_json, None)


def lloyd_turn(run: Run, service_folder: Path, key: str, scripts: dict[str, Path]) -> None:
    protocol = PROTOCOLS["Lloyd"]
    with T.start_service(service_folder, key) as server, T.client(server.base, key) as http:
        code = T.code_version()
        run.results.code_versions.append(code)
        T.log(f"  Lloyd (python -m app, pid {server.pid}, code {code})")
        urls = {
            operation: f"{server.base}/v1/models/{model}/{operation}" for model, operation in MODELS
        }
        if not check_one_row(run, "Lloyd", http, urls, protocol):
            return
        for operation, url in urls.items():
            measure_wrk(run, f"Lloyd/{operation}", url, scripts["Lloyd"])
        time_big(run, "Lloyd", http, urls["predict"], protocol.big, protocol)


def mlserver_turn(run: Run, scripts: dict[str, Path]) -> None:
    protocol = PROTOCOLS["MLServer"]
    with (
        start_mlserver(run.folder, run.args.peer_threads) as server,
        httpx.Client(timeout=T.REQUEST_TIMEOUT) as http,
    ):
        T.log(f"  MLServer (mlserver start, parallel_workers 0, pid {server.pid})")
        urls = {operation: f"{server.base}/v2/models/{model}/infer" for model, operation in MODELS}
        if not check_one_row(run, "MLServer", http, urls, protocol):
            return
        for operation, url in urls.items():
            measure_wrk(run, f"MLServer/{operation}", url, scripts["MLServer"])
        time_big(run, "MLServer", http, urls["predict"], protocol.big, protocol)


def mlflow_turn(run: Run, scripts: dict[str, Path]) -> None:
    """MLflow's scoring server serves one model: one server for each, one after the other."""
    protocol = PROTOCOLS["MLflow"]
    for model, operation in MODELS:
        with (
            start_mlflow(run.folder, model, run.args.peer_threads) as server,
            httpx.Client(timeout=T.REQUEST_TIMEOUT) as http,
        ):
            T.log(f"  MLflow {model} (mlflow models serve -w 1, pid {server.pid})")
            url = f"{server.base}/invocations"
            if not check_one_row(run, "MLflow", http, {operation: url}, protocol):
                continue
            measure_wrk(run, f"MLflow/{operation}", url, scripts["MLflow"])
            if operation == "predict":
                time_big(run, "MLflow", http, url, protocol.big, protocol)


def guarded(run: Run, name: str, turn: Callable[[], None]) -> None:
    """A server that does not start or answers wrongly fails its turn, not the run."""
    try:
        turn()
    except (RuntimeError, httpx.HTTPError, ValueError, KeyError) as error:
        run.fail(f"{name}: {type(error).__name__}: {str(error)[-2000:]}")


# -- the table ---------------------------------------------------------------------------------
def number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "req/s" or value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def cell(values: list[float], unit: str) -> str:
    if not values:
        return "not measured"
    middle = number(T.median(values), unit)
    if len(values) == 1:
        return f"{middle} (n=1)"
    return f"{middle} ({number(min(values), unit)}-{number(max(values), unit)})"


def ratio_cell(lloyd: list[float], peer: list[float], higher_is_better: bool, claim: float | None):
    """Lloyd's advantage, median over median: throughput Lloyd/peer, times peer/Lloyd; the
    range of the per-round ratios (rounds paired in order) when every round has both."""
    if not lloyd or not peer:
        return ""

    def ratio(mine: float, theirs: float) -> float:
        return mine / theirs if higher_is_better else theirs / mine

    middle = ratio(T.median(lloyd), T.median(peer))
    text = f"{middle:.2f}x"
    if len(lloyd) == len(peer) > 1:
        paired = [ratio(a, b) for a, b in zip(lloyd, peer, strict=True)]
        text += f" ({min(paired):.2f}-{max(paired):.2f})"
    if claim is not None:
        text += f"; claim > {claim:g}x: {'yes' if middle > claim else '**NO**'}"
    return text


def sample_key(name: str, operation: str, metric: str) -> str:
    """Where a server's samples are: ``<server>/<operation or big>/<metric>``; the floor's
    one 1-row wrk run stands for both operations."""
    if name == "floor" and operation != "big":
        return f"floor/1row/{metric}"
    return f"{name}/{operation}/{metric}"


def build_table(run: Run, peers: list[str]) -> str:
    cases = []
    for model, (_, operation) in zip(("KMeans(8)", "GMM(8, full)"), MODELS, strict=True):
        title = f"1 row, {T.CONNECTIONS} conns: {operation} {model}"
        cases.append((f"{title}: throughput (req/s)", operation, "rps", "req/s", True))
        cases.append((f"{title}: p99 (ms)", operation, "p99", "ms", False))
    big = f"{T.BIG_ROWS:,} x {T.FEATURES} JSON, 1 request: predict KMeans(8) (ms)"
    cases.append((big, "big", "ms", "ms", False))

    header = ["case", *NAMES] + [f"Lloyd vs {peer}" for peer in PEERS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    measured = ["floor", "Lloyd", *peers]
    for title, operation, metric, unit, higher in cases:
        row = [title]
        for name in NAMES:
            values = run.samples(sample_key(name, operation, metric))
            row.append(cell(values, unit) if name in measured else "skipped")
        lloyd = run.samples(sample_key("Lloyd", operation, metric))
        for peer in PEERS:
            theirs = run.samples(sample_key(peer, operation, metric))
            claim = CLAIMS[peer] if metric == "rps" else None
            row.append(ratio_cell(lloyd, theirs, higher, claim) if peer in peers else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def log_notes(run: Run, folder: Path) -> None:
    """Tracebacks in the servers' logs: the floor's and Lloyd's through T.check_log (failures
    but for wrk's disconnects); the peers' noted with their last line."""
    for path in sorted(folder.glob("*.log")) + sorted(folder.glob("*/*.log")):
        if path.name.startswith(("floor", "service")):
            checked = T.Results()
            T.check_log(path, checked)
            run.notes.extend(checked.notes)
            run.failures.extend(checked.failures)
            continue
        text = path.read_text(errors="replace")
        count = text.count("Traceback (most recent call last):")
        if count:
            last = [line for line in text.splitlines() if line and not line[0].isspace()]
            run.notes.append(f"{path.name}: {count} traceback(s) logged; last line: {last[-1]}")


# -- main --------------------------------------------------------------------------------------
def prepare(run: Run, folder: Path, peers: list[str]) -> list[str]:
    """The estimators fitted in-process, as joblib pickles and in each peer's format; the peers
    whose models could be saved."""
    data = run.data
    models = folder / "models"
    models.mkdir()
    np.save(models / "train.npy", data.train, allow_pickle=False)
    pickles = {"km": models / "km.joblib", "gmm": models / "gmm.joblib"}
    joblib.dump(data.kmeans, pickles["km"])
    joblib.dump(data.mixture, pickles["gmm"])
    ready = []
    for name in peers:
        target = folder / ("mlserver-models" if name == "MLServer" else "mlflow-models")
        try:
            done = prepare_peer(PEER_SPECS[name], target, pickles)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
            run.fail(f"{name}: {error}")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in done["versions"].items())
        how = "refitted in its venv from the same rows" if done["refit"] else "the same pickles"
        run.versions[name] = f"{versions} ({how})"
        T.log(f"  {name}: models saved ({versions}; {how})")
        ready.append(name)
    return ready


def run_all(run: Run, key: str, peers: list[str]) -> list[str]:
    folder, data, args = run.folder, run.data, run.args
    service_folder = folder / "service"
    service_folder.mkdir()
    T.log("setup: the service trains its models km and gmm (checked against scikit-learn)")
    T.setup_models(service_folder, key, data, run.results)
    run.failures.extend(run.results.failures)
    T.log("setup: the peers' models")
    peers = prepare(run, folder, peers)
    for protocol in PROTOCOLS.values():
        protocol.one_row = protocol.body(data.big[:1])
        protocol.big = protocol.body(data.big)
    scripts = {"Lloyd": T.wrk_script(folder, PROTOCOLS["Lloyd"].one_row, key)}
    for name in peers:
        scripts[name] = write_wrk_script(folder, name, PROTOCOLS[name].one_row, JSON)
    turns: dict[str, Callable[[], None]] = {
        "floor": lambda: floor_turn(run, scripts),
        "Lloyd": lambda: lloyd_turn(run, service_folder, key, scripts),
        "MLServer": lambda: mlserver_turn(run, scripts),
        "MLflow": lambda: mlflow_turn(run, scripts),
    }
    for number_ in range(1, args.rounds + 1):
        T.log(f"round {number_}/{args.rounds} (load average {T.loadavg()})")
        for name in ["floor", "Lloyd", *peers]:
            guarded(run, name, turns[name])
    T.stop_all()
    log_notes(run, folder)
    return peers


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=float, help="seconds of wrk warm-up (2; 1 below 5 s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed 100,000-row requests (3)")
    parser.add_argument(
        "--peer-threads",
        default=str(T.SERVING_THREADS),
        help=f"BLAS/OpenMP threads of the peers ({T.SERVING_THREADS}, as Lloyd serves; "
        "'default': the libraries' own, one per core)",
    )
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args()
    args.peer_threads = None if args.peer_threads == "default" else int(args.peer_threads)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.duration >= 5 else 1.0)

    peers, skipped = [], []
    for name in PEERS:
        peer = PEER_SPECS[name]
        if peer_available(peer):
            peers.append(name)
        else:
            where = peer.python.parent.parent.relative_to(T.REPO_ROOT)
            skipped.append(f"{name}: skipped, no working venv at {where} (install: {SETUP})")
            T.log(skipped[-1])
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    load_start, code_start = T.loadavg(), T.code_version()
    T.log(
        f"code {code_start}; load average at start {load_start}; {T.CORES} cores; "
        f"{args.rounds} round(s), wrk {args.duration:g} s (+{args.warmup:g} s warm-up) x "
        f"{T.CONNECTIONS} connections, {args.repeats} timed {T.BIG_ROWS:,}-row requests"
    )
    data = T.make_data()
    key = T.new_key()
    try:
        with tempfile.TemporaryDirectory(prefix="lloyd-peers-") as tmp:
            run = Run(args, data, Path(tmp))
            try:
                peers = run_all(run, key, peers)
            finally:
                T.stop_all()  # before the folder the servers write in is removed
    except KeyboardInterrupt:
        T.log("interrupted: every server stopped")
        sys.exit(130)
    finally:
        T.stop_all()
    load_end, code_end = T.loadavg(), T.code_version()
    seen = list(dict.fromkeys([code_start, *run.results.code_versions, code_end]))
    code = seen[0] if len(seen) == 1 else f"CHANGED during the run: {' -> '.join(seen)}"
    versions = [f"- {name}: {text}" for name, text in run.versions.items()]
    output = [
        "",
        f"Lloyd and its peers, {time.strftime('%Y-%m-%d %H:%M:%S')}: {args.rounds} round(s), "
        f"wrk {args.duration:g} s x {T.CONNECTIONS} connections, {args.repeats} timed "
        f"{T.BIG_ROWS:,}-row request(s) per server and round; load average (1, 5, 15 min) at "
        f"start {load_start}, at end {load_end}; {T.CORES} cores; code {code}",
        "",
        build_table(run, peers),
        "",
        "Cells: median (min-max over the rounds). Ratios: Lloyd's advantage, median over "
        "median (range of the per-round ratios): throughput Lloyd/peer, p99 and time "
        "peer/Lloyd. Claim (the issue): Lloyd's 1-row throughput > 5x MLServer's and > 8x "
        "MLflow's.",
        "",
        "Setup:",
        "- floor: bench/throughput_floor.py's FastAPI app (uvicorn, 1 worker, no access log): "
        "parses the body with orjson, answers a constant; one wrk run per round, shown in both "
        "1-row cases; for 100,000 rows it only parses.",
        "- Lloyd: python -m app (SQLite, API key, metrics on, LLOYD_SERVING_THREADS=1), "
        '{"instances": [[...]]} to /v1/models/{km,gmm}/{predict,predict_proba}.',
        "- MLServer: mlserver start, mlserver_sklearn.SKLearnModel, parallel_workers 0 (one "
        "process), debug off (no access log), metrics on (its default); the mixture's "
        "model-settings.json sets predict_fn predict_proba; V2 inference protocol JSON (one "
        "FP64 tensor, data flat) to /v2/models/{km,gmm}/infer.",
        "- MLflow: mlflow models serve --env-manager local -w 1 (uvicorn, one worker) with "
        "UVICORN_ACCESS_LOG=false, one server per model (saved with mlflow.sklearn.save_model, "
        "skops format, no signature; the mixture with pyfunc_predict_fn='predict_proba'); "
        '{"inputs": [[...]]} to /invocations.',
        f"- BLAS/OpenMP threads: Lloyd serves with {T.SERVING_THREADS} (its default); the peers "
        + (
            f"with their libraries' default (one per core: {T.CORES})"
            if args.peer_threads is None
            else f"with {args.peer_threads} (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, "
            "MKL_NUM_THREADS; --peer-threads default leaves them one per core)"
        )
        + ". The 100,000-row requests ask for no compression (Accept-Encoding: identity).",
        "- Every server's answers were checked against scikit-learn in-process before it was "
        "measured (1 row: labels exact, probabilities within 1e-9; 100,000 rows: labels).",
        *versions,
        *(f"- {line}" for line in skipped),
        "",
        "The issue's figures on this kind of machine: "
        + "; ".join(f"{name} {text}" for name, text in ISSUE_FIGURES.items())
        + ".",
    ]
    T.finish_report(output, run.notes, run.failures, "FAILURES", args.out)


if __name__ == "__main__":
    main()
