"""Throughput, latency, large batches, training and memory: the service against its floors.

One command runs the orjson floor (bench/throughput_floor.py: bare FastAPI and Starlette apps
that read the body, parse it with orjson and answer a constant), the real service
(``python -m app`` with a temporary SQLite file and store, an API key, metrics on) and
scikit-learn in-process, on the same data, one after another, in interleaved rounds, and prints
a table of medians, ranges (min-max over the rounds) and ratios:

1. 1-row ``predict`` (KMeans(8), 16 features) and ``predict_proba`` (GaussianMixture(8,
   'full')), 8 concurrent connections driven by ``wrk``: throughput and p99 latency of the
   service against the FastAPI floor (targets: >= 0.8x its throughput, < 3x its p99).
2. 100,000 rows x 16 features in one request (httpx): (a) JSON in, JSON out, against the
   floor's time to parse the same body over HTTP (target <= 1.25x; orjson.loads in-process
   printed too); (b) ``.npy`` in and out, against scikit-learn's own ``KMeans.predict`` and
   ``GaussianMixture.predict_proba`` in-process on the same fitted estimators, with one
   BLAS/OpenMP thread as the service serves (LLOYD_SERVING_THREADS=1) (target <= 1.5x).
3. Training through the API: ``POST /v1/models`` with a 200,000 x 16 ``.npy`` body, waiting for
   the 201, against the same fit in-process: KMeans(8, n_init=1) and GaussianMixture(8, 'full',
   exactly 10 EM iterations: max_iter=10, tol=0); the job's timestamps show where the time
   went. The service runs with LLOYD_MAX_CONCURRENT_JOBS=1, so its worker fits with every
   core's worth of BLAS/OpenMP threads; the in-process fit is given the same count through
   threadpoolctl (target <= 1.15x).
4. Memory: (a) 100 small models served with LLOYD_MODEL_CACHE_SIZE=10, two passes of predicts,
   the server's RSS after 10, 50 and 100 models (flat: within 10% of the RSS after 10) and
   ``lloyd_model_cache_size`` (<= 10); (b) the RSS high-water mark of one 100,000-row ``.npy``
   ``predict_proba`` on a fresh server after warm-up (VmHWM reset through
   /proc/<pid>/clear_refs where allowed), in copies of the 12.8 MB input array above the RSS
   before it (target <= 3).

Each server runs alone, in a process group of its own, and is stopped at the end, on Ctrl-C or
on failure. A non-2xx answer from the service is printed and listed at the end (exit code 1).

Run: .venv/bin/python bench/throughput.py [--quick] [--duration 10] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO_ROOT))

from app.api_keys import hash_key, new_key  # noqa: E402

FEATURES = 16
CLUSTERS = 8
SERVE_TRAIN_ROWS = 20_000  # training set of the served models
BIG_ROWS = 100_000
FIT_ROWS = 200_000
CONNECTIONS = 8
SERVING_THREADS = 1  # LLOYD_SERVING_THREADS of the service (its default)
CORES = os.cpu_count() or 1
SMALL_MODELS = 100
SMALL_CACHE = 10
STARTUP_SECONDS = 60.0
REQUEST_TIMEOUT = 600.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
NPY = "application/x-npy"
KMEANS_PARAMS = {"n_clusters": CLUSTERS, "n_init": 1, "random_state": 0}
GMM_PARAMS = {
    "n_components": CLUSTERS,
    "covariance_type": "full",
    "max_iter": 20,
    "random_state": 0,
}
# The GMM training case: tol=0 makes both fits run exactly max_iter EM iterations (on blobs the
# default tol stops after 2 or 3, leaving mostly the k-means initialization to compare).
GMM_FIT_PARAMS = GMM_PARAMS | {"max_iter": 10, "tol": 0.0}
FLOORS = {"FastAPI": "throughput_floor:fastapi_app", "Starlette": "throughput_floor:starlette_app"}
INPUT_MB = BIG_ROWS * FEATURES * 8 / 1e6


# -- servers -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def base_env() -> dict[str, str]:
    """This environment without LLOYD_* and thread settings: each server chooses its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LLOYD_") and k not in THREAD_VARIABLES
    }


LIVE: dict[int, subprocess.Popen] = {}


class Server:
    """One server process in a session (process group) of its own, stopped as one."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.label, self.log = label, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        env = {k: v.replace("{port}", str(self.port)) for k, v in env.items()}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        LIVE[self.process.pid] = self.process

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, probe: Callable[[str], bool]) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with {self.process.returncode}:\n{self.log.read_text()}"
                )
            with suppress(httpx.TransportError):
                if probe(self.base):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} did not get ready within {STARTUP_SECONDS:g} s")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the group (a clean shutdown), then SIGKILL whatever is left of it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    LIVE.pop(process.pid, None)


def stop_all() -> None:
    for process in list(LIVE.values()):
        stop_process(process)


def start_floor(name: str, folder: Path) -> Server:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(BENCH),
        FLOORS[name],
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    server = Server(f"floor {name}", argv, base_env(), folder / f"floor-{name}.log")
    server.wait_ready(
        lambda base: httpx.post(f"{base}/predict", content=b"{}", timeout=2.0).status_code == 200
    )
    return server


def start_service(folder: Path, key: str, *, cache_size: int | None = None) -> Server:
    """``python -m app`` on the SQLite file and store of ``folder`` (they outlive the process)."""
    env = base_env() | {
        "LLOYD_DATABASE_URL": f"sqlite:///{folder / 'lloyd.db'}",
        "LLOYD_MODELS_STORE": str(folder / "store"),
        "LLOYD_HOST": "127.0.0.1",
        "LLOYD_PORT": "{port}",
        "LLOYD_API_KEYS": f"{hash_key(key)}:read+write",
        "LLOYD_LOG_LEVEL": "warning",
        "LLOYD_MAX_CONCURRENT_JOBS": "1",
        "LLOYD_SYNC_TIMEOUT_SECONDS": "600",
    }
    if cache_size is not None:
        env["LLOYD_MODEL_CACHE_SIZE"] = str(cache_size)
    server = Server("service", [sys.executable, "-m", "app"], env, folder / "service.log")
    server.wait_ready(lambda base: httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200)
    return server


def proc_status_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: ``5`` into clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# -- results -----------------------------------------------------------------------------------
@dataclass
class Results:
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    code_versions: list[str] = field(default_factory=list)  # at each measured service start

    def add(self, key: str, value: float) -> None:
        self.samples[key].append(value)

    def fail(self, what: str, response: httpx.Response | None = None, detail: str = "") -> None:
        text = what
        if response is not None:
            body = response.text if response.headers.get("content-type", "").find("npy") < 0 else ""
            text += f": HTTP {response.status_code} {body[:1500]}"
        if detail:
            text += f": {detail}"
        print(f"  SERVICE FAILURE: {text}", flush=True)
        self.failures.append(text)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def log(text: str) -> None:
    print(text, flush=True)


# -- wrk ---------------------------------------------------------------------------------------
@dataclass
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    output: str


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_script(folder: Path, body: bytes, key: str) -> Path:
    body_path = folder / "wrk-body.json"
    body_path.write_bytes(body)
    script = folder / "wrk-post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'local f = assert(io.open("{body_path}", "rb"))\n'
        'wrk.body = f:read("*a")\n'
        "f:close()\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    return script


def run_wrk(url: str, script: Path, seconds: float) -> WrkRun:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    done = subprocess.run(
        [*argv, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    out = done.stdout + done.stderr

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(found.group(1)) * UNITS_MS[found.group(2)] if found else math.nan

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkRun(
        rps=float(rps.group(1)) if rps else math.nan,
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(count.group(1)) if count else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        output=out,
    )


def measure_wrk(
    results: Results, key: str, url: str, script: Path, args: argparse.Namespace, service: bool
) -> None:
    run_wrk(url, script, args.warmup)
    run = run_wrk(url, script, args.duration)
    log(
        f"    {key}: {run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms "
        f"({run.requests} requests, non-2xx {run.non_2xx}, socket errors {run.socket_errors})"
    )
    if math.isnan(run.rps) or run.non_2xx or run.socket_errors:
        what = f"wrk {url}: non-2xx {run.non_2xx}, socket errors {run.socket_errors}"
        if service:
            results.fail(what, detail=run.output[-1500:])
        else:
            results.notes.append(f"{what}\n{run.output[-1500:]}")
    results.add(f"{key}/rps", run.rps)
    results.add(f"{key}/p99", run.p99_ms)


# -- data --------------------------------------------------------------------------------------
@dataclass
class Data:
    train: np.ndarray  # rows the served models are trained on
    big: np.ndarray  # 100,000 rows to serve
    fit: np.ndarray  # 200,000 rows to train on
    big_json: bytes
    big_npy: bytes
    fit_npy: bytes
    train_npy: bytes
    one_row_json: bytes
    kmeans: KMeans  # fitted in-process like the service's models
    mixture: GaussianMixture


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def make_data() -> Data:
    X, _ = make_blobs(
        n_samples=SERVE_TRAIN_ROWS + BIG_ROWS + FIT_ROWS,
        centers=CLUSTERS,
        n_features=FEATURES,
        cluster_std=2.0,
        random_state=0,
    )
    train = np.ascontiguousarray(X[:SERVE_TRAIN_ROWS])
    big = np.ascontiguousarray(X[SERVE_TRAIN_ROWS : SERVE_TRAIN_ROWS + BIG_ROWS])
    fit = np.ascontiguousarray(X[SERVE_TRAIN_ROWS + BIG_ROWS :])
    with threadpool_limits(limits=SERVING_THREADS):
        kmeans = KMeans(**KMEANS_PARAMS).fit(train)
        mixture = GaussianMixture(**GMM_PARAMS).fit(train)
    return Data(
        train=train,
        big=big,
        fit=fit,
        big_json=orjson.dumps({"instances": big}, option=orjson.OPT_SERIALIZE_NUMPY),
        big_npy=npy_bytes(big),
        fit_npy=npy_bytes(fit),
        train_npy=npy_bytes(train),
        one_row_json=orjson.dumps({"instances": big[:1]}, option=orjson.OPT_SERIALIZE_NUMPY),
        kmeans=kmeans,
        mixture=mixture,
    )


# -- the service -------------------------------------------------------------------------------
def train_request(
    http: httpx.Client, results: Results, name: str, algorithm: str, params: dict, body: bytes
) -> tuple[float, dict[str, Any] | None]:
    header = orjson.dumps({"name": name, "algorithm": algorithm, "params": params}).decode()
    sent_at = time.time()
    started = time.perf_counter()
    response = http.post(
        "/v1/models",
        content=body,
        headers={"Content-Type": NPY, "Lloyd-Request": header},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        results.fail(f"POST /v1/models ({name}, {algorithm})", response)
        return elapsed, None
    answer = response.json()
    answer["_sent_at"], answer["_answered_at"] = sent_at, sent_at + elapsed
    return elapsed, answer


TRAINING_STAGES = (
    ("before_job", "request sent -> job created (upload, parse, checks)"),
    ("queued", "job created -> started"),
    ("running", "job started -> finished (worker: fit, metrics, artifact, row)"),
    ("after_job", "job finished -> 201 received"),
)


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def training_stages(http: httpx.Client, name: str, answer: dict[str, Any]) -> dict[str, float]:
    """Where a synchronous training's time went, from its job's timestamps (same clock: the
    server runs on this machine)."""
    response = http.get("/v1/jobs", params={"model": name, "limit": 1})
    if response.status_code != 200 or not response.json().get("items"):
        return {}
    job = response.json()["items"][0]
    if not job.get("started_at") or not job.get("finished_at"):
        return {}
    created, started, finished = (
        _epoch(job[k]) for k in ("created_at", "started_at", "finished_at")
    )
    return {
        "before_job": created - answer["_sent_at"],
        "queued": started - created,
        "running": finished - started,
        "after_job": answer["_answered_at"] - finished,
    }


def client(base: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT
    )


def setup_models(folder: Path, key: str, data: Data, results: Results) -> None:
    """Train the served models (kept in ``folder`` for every later start) and check answers."""
    with start_service(folder, key) as server, client(server.base, key) as http:
        for name, algorithm, params in (
            ("km", "kmeans", KMEANS_PARAMS),
            ("gmm", "gaussian_mixture", GMM_PARAMS),
        ):
            _, answer = train_request(http, results, name, algorithm, params, data.train_npy)
            if answer is None:
                raise RuntimeError(f"could not train the served model {name}")
        check_answers(http, data, results)


def same_answer(got: np.ndarray, expected: np.ndarray) -> bool:
    """Labels exactly, floats within 1e-9 relative: the issue's bar for every fast path."""
    if got.shape != expected.shape:
        return False
    if expected.dtype.kind == "f":
        return bool(np.allclose(got, expected, rtol=1e-9, atol=1e-300))
    return bool(np.array_equal(got, expected))


def check_answers(http: httpx.Client, data: Data, results: Results) -> None:
    """The service's answers equal scikit-learn's: the 1-row request of the throughput runs, and
    the 100,000 rows as JSON and as .npy."""
    one_row = data.big[:1]
    with threadpool_limits(limits=SERVING_THREADS):
        cases = [
            ("/v1/models/km/predict", "labels", data.kmeans.predict),
            ("/v1/models/gmm/predict_proba", "probabilities", data.mixture.predict_proba),
        ]
        expected = {path: (call(one_row), call(data.big)) for path, _, call in cases}
    for path, field_name, _ in cases:
        single, batch = expected[path]
        for _ in range(2):  # the first resolves the version (a query); the second, the cache
            response = post_json(http, path, data.one_row_json)
            if response.status_code != 200:
                results.fail(f"{path} (JSON, 1 row)", response)
            elif not same_answer(np.asarray(response.json()[field_name]), single):
                results.fail(f"{path} (JSON, 1 row) differs from scikit-learn in-process")
        response = post_json(http, path, data.big_json)
        if response.status_code != 200:
            results.fail(f"{path} (JSON, {BIG_ROWS} rows)", response)
        elif not same_answer(np.asarray(response.json()[field_name]), batch):
            results.fail(f"{path} (JSON) differs from scikit-learn in-process")
        response = post_npy(http, path, data.big_npy)
        if response.status_code != 200:
            results.fail(f"{path} (.npy, {BIG_ROWS} rows)", response)
        elif not same_answer(np.load(io.BytesIO(response.content), allow_pickle=False), batch):
            results.fail(f"{path} (.npy) differs from scikit-learn in-process")
    log(
        "  answers checked against scikit-learn in-process (1 row as JSON; 100,000 rows as "
        "JSON and .npy): labels exact, floats within 1e-9"
    )


def post_json(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def post_npy(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": NPY, "Accept": NPY})


def timed(
    results: Results, key: str, send: Callable[[], httpx.Response], repeats: int, what: str
) -> None:
    """``repeats`` timed requests after one untimed one; failures are reported, not timed."""
    response = send()
    if response.status_code != 200:
        results.fail(what, response)
        return
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = send()
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            results.fail(what, response)
            return
        times.append(elapsed)
        results.add(key, elapsed)
    log(f"    {key}: {', '.join(f'{t * 1000:.0f}' for t in times)} ms")


def peak_memory(server: Server, http: httpx.Client, data: Data, results: Results) -> None:
    """4b: the RSS high-water mark of one 100,000-row .npy predict_proba, right after warm-up."""
    reset = reset_hwm(server.pid)
    before = proc_status_kb(server.pid)
    response = post_npy(http, "/v1/models/gmm/predict_proba", data.big_npy)
    after = proc_status_kb(server.pid)
    if response.status_code != 200:
        results.fail("peak memory: .npy predict_proba", response)
        return
    peak_mb = (after["VmHWM"] - before["VmRSS"]) / 1024 * 1.048576  # kB -> MB (1e6 bytes)
    # Without a reset, VmHWM is the process's lifetime peak: only an upper bound of the request's.
    bound = "" if reset else " (VmHWM not reset: lifetime peak, an upper bound)"
    if not reset and after["VmHWM"] <= before["VmHWM"]:
        bound = " (VmHWM not reset and not raised: the request's peak is at most this)"
    results.add("mem/peak_mb", peak_mb)
    results.add("mem/peak_copies", peak_mb / INPUT_MB)
    results.add("mem/rss_before_mb", before["VmRSS"] / 1024)
    log(
        f"    peak: RSS before {before['VmRSS'] / 1024:.1f} MiB, VmHWM after "
        f"{after['VmHWM'] / 1024:.1f} MiB: +{peak_mb:.1f} MB = {peak_mb / INPUT_MB:.2f} copies "
        f"of the {INPUT_MB:.1f} MB input{bound}"
    )
    if not reset:
        results.notes.append(f"peak memory: could not reset VmHWM{bound}")


def service_round(
    folder: Path,
    key: str,
    data: Data,
    results: Results,
    scripts: dict[str, Path],
    args: argparse.Namespace,
) -> None:
    with start_service(folder, key) as server, client(server.base, key) as http:
        code = code_version()
        results.code_versions.append(code)
        log(f"  service (pid {server.pid}, code {code})")
        # Warm-up: both models into the cache, the code paths run once.
        for path in ("/v1/models/km/predict", "/v1/models/gmm/predict_proba"):
            for _ in range(20):
                response = post_json(http, path, data.one_row_json)
                if response.status_code != 200:
                    results.fail(f"{path} (1 row)", response)
                    break
            post_npy(http, path, npy_bytes(data.big[:100]))
        peak_memory(server, http, data, results)
        measure_wrk(
            results,
            "wrk/service/predict",
            f"{server.base}/v1/models/km/predict",
            scripts["json"],
            args,
            True,
        )
        measure_wrk(
            results,
            "wrk/service/predict_proba",
            f"{server.base}/v1/models/gmm/predict_proba",
            scripts["json"],
            args,
            True,
        )
        for operation, model in (("predict", "km"), ("predict_proba", "gmm")):
            path = f"/v1/models/{model}/{operation}"
            timed(
                results,
                f"big/service/json/{operation}",
                lambda path=path: post_json(http, path, data.big_json),
                args.repeats,
                f"{path} (JSON, {BIG_ROWS} rows)",
            )
            timed(
                results,
                f"big/service/npy/{operation}",
                lambda path=path: post_npy(http, path, data.big_npy),
                args.repeats,
                f"{path} (.npy, {BIG_ROWS} rows)",
            )
        # A small training first: the worker machinery's first start is not what is measured.
        train_request(
            http, results, "warm", "kmeans", {"n_clusters": 2, "n_init": 1}, data.train_npy
        )
        for algorithm, params in (("kmeans", KMEANS_PARAMS), ("gaussian_mixture", GMM_FIT_PARAMS)):
            if algorithm == "gaussian_mixture" and args.no_gmm_fit:
                continue
            elapsed, answer = train_request(
                http, results, f"fit-{algorithm}", algorithm, params, data.fit_npy
            )
            if answer is None:
                continue
            results.add(f"fit/service/{algorithm}", elapsed)
            results.add(f"fit/service_reported/{algorithm}", answer.get("training_seconds", 0))
            stages = training_stages(http, f"fit-{algorithm}", answer)
            for stage, seconds in stages.items():
                results.add(f"fit/stage/{stage}/{algorithm}", seconds)
            n_iter = answer.get("metrics", {}).get("n_iter")
            log(
                f"    fit {algorithm}: {elapsed:.2f} s through the API "
                f"(training_seconds {answer.get('training_seconds', 0):.2f}, n_iter {n_iter}; "
                + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
                + ")"
            )


def floor_round(
    name: str,
    folder: Path,
    data: Data,
    results: Results,
    scripts: dict[str, Path],
    args: argparse.Namespace,
) -> None:
    with start_floor(name, folder) as server, httpx.Client(timeout=REQUEST_TIMEOUT) as http:
        log(f"  floor {name} (pid {server.pid})")
        url = f"{server.base}/predict"
        measure_wrk(results, f"wrk/floor/{name}", url, scripts["json"], args, False)
        timed(
            results,
            f"big/floor/{name}",
            lambda: post_json(http, url, data.big_json),
            args.repeats,
            f"floor {name} {BIG_ROWS} rows",
        )
        if name == "FastAPI":
            timed(
                results,
                "big/floor/npy",
                lambda: http.post(
                    f"{server.base}/npy", content=data.big_npy, headers={"Content-Type": NPY}
                ),
                args.repeats,
                f"floor {name} .npy {BIG_ROWS} rows",
            )


def in_process_round(data: Data, results: Results, args: argparse.Namespace) -> None:
    log("  in-process")

    def best_of(key: str, call: Callable[[], object], repeats: int) -> None:
        call()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        results.samples[key].extend(times)
        log(f"    {key}: {', '.join(f'{t * 1000:.0f}' for t in times)} ms")

    best_of("big/orjson_loads", lambda: orjson.loads(data.big_json), args.repeats)
    for threads in (SERVING_THREADS, CORES):
        with threadpool_limits(limits=threads):
            best_of(
                f"big/sklearn{threads}/predict", lambda: data.kmeans.predict(data.big), args.repeats
            )
            best_of(
                f"big/sklearn{threads}/predict_proba",
                lambda: data.mixture.predict_proba(data.big),
                args.repeats,
            )
    # The service's worker count (CORES threads) first; 1 thread too, as a gauge of how much a
    # busy machine takes from the multi-threaded fit.
    for threads in (CORES, 1) if CORES > 1 else (1,):
        for algorithm, make in (
            ("kmeans", lambda: KMeans(**KMEANS_PARAMS)),
            ("gaussian_mixture", lambda: GaussianMixture(**GMM_FIT_PARAMS)),
        ):
            if algorithm == "gaussian_mixture" and args.no_gmm_fit:
                continue
            started = time.perf_counter()
            with threadpool_limits(limits=threads), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: by design
                model = make().fit(data.fit)
            elapsed = time.perf_counter() - started
            results.add(f"fit/inproc{'' if threads == CORES else threads}/{algorithm}", elapsed)
            log(
                f"    fit {algorithm}: {elapsed:.2f} s in-process, {threads} thread(s) "
                f"(n_iter {model.n_iter_})"
            )


# -- 4a: many models through a small cache -----------------------------------------------------
def metric_value(text: str, name: str) -> float | None:
    found = re.search(rf"^{name}(?:\{{[^}}]*\}})?\s+(\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def cache_memory(folder: Path, key: str, results: Results, models: int, marks: list[int]) -> None:
    log(f"memory: {models} small k-means models, LLOYD_MODEL_CACHE_SIZE={SMALL_CACHE}")
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=5, size=(3, FEATURES))
    server = start_service(folder, key, cache_size=SMALL_CACHE)
    with server, client(server.base, key) as http:
        started = time.perf_counter()
        for i in range(models):
            X = centers[rng.integers(0, 3, 300)] + rng.normal(size=(300, FEATURES))
            params = {"n_clusters": 3, "n_init": 1, "random_state": i}
            _, answer = train_request(
                http, results, f"small-{i:03d}", "kmeans", params, npy_bytes(X)
            )
            if answer is None:
                return
        log(f"  trained {models} models in {time.perf_counter() - started:.1f} s")
        rss_trained = proc_status_kb(server.pid)["VmRSS"] / 1024
        results.add("cache/rss_trained", rss_trained)
        row = orjson.dumps({"instances": centers[:1]}, option=orjson.OPT_SERIALIZE_NUMPY)
        for number in (1, 2):
            for i in range(models):
                response = post_json(http, f"/v1/models/small-{i:03d}/predict", row)
                if response.status_code != 200:
                    results.fail(f"predict on small-{i:03d}", response)
                    return
                if i + 1 in marks:
                    rss = proc_status_kb(server.pid)["VmRSS"] / 1024
                    results.add(f"cache/rss/{i + 1}", rss)
                    log(f"  pass {number}, after {i + 1} models: RSS {rss:.1f} MiB")
        text = http.get("/metrics").text
        size = metric_value(text, "lloyd_model_cache_size")
        if size is None:
            results.fail("/metrics has no lloyd_model_cache_size")
        else:
            results.add("cache/size", size)
            log(f"  lloyd_model_cache_size {size:g}")


# -- the table ---------------------------------------------------------------------------------
@dataclass
class Row:
    case: str
    what: str
    values: list[float]
    unit: str
    ratio: float | None = None
    ratio_text: str = ""
    target: str = ""
    met: bool | None = None


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g}{(' ' + unit) if unit else ''}"


def build_rows(r: Results) -> list[Row]:
    s = r.samples
    ms = {k: [v * 1000 for v in vs] for k, vs in s.items() if k.startswith("big/")}
    rows: list[Row] = []

    def ratio_row(
        case: str,
        what: str,
        values: list[float],
        unit: str,
        reference: list[float],
        ref_name: str,
        target: str = "",
        check: Callable[[float], bool] | None = None,
    ) -> Row:
        ratio = median(values) / median(reference) if values and reference else math.nan
        met = None if check is None or math.isnan(ratio) else check(ratio)
        return Row(case, what, values, unit, ratio, f"{ratio:.2f}x {ref_name}", target, met)

    floor_rps = s.get("wrk/floor/FastAPI/rps", [])
    floor_p99 = s.get("wrk/floor/FastAPI/p99", [])
    case1 = f"1. 1 row, {CONNECTIONS} conns"
    for name in FLOORS:
        rps = s.get(f"wrk/floor/{name}/rps", [])
        p99 = s.get(f"wrk/floor/{name}/p99", [])
        rows.append(
            ratio_row(
                case1, f"orjson floor {name}: throughput", rps, "req/s", floor_rps, "FastAPI floor"
            )
        )
        rows.append(
            ratio_row(case1, f"orjson floor {name}: p99", p99, "ms", floor_p99, "FastAPI floor")
        )
    for operation, model in (("predict", "KMeans(8)"), ("predict_proba", "GMM(8, full)")):
        rps = s.get(f"wrk/service/{operation}/rps", [])
        p99 = s.get(f"wrk/service/{operation}/p99", [])
        rows.append(
            ratio_row(
                case1,
                f"service {operation} {model}: throughput",
                rps,
                "req/s",
                floor_rps,
                "FastAPI floor",
                ">= 0.8x",
                lambda x: x >= 0.8,
            )
        )
        rows.append(
            ratio_row(
                case1,
                f"service {operation} {model}: p99",
                p99,
                "ms",
                floor_p99,
                "FastAPI floor",
                "< 3x",
                lambda x: x < 3.0,
            )
        )

    case2a = f"2a. {BIG_ROWS:,} rows JSON"
    floor_big = ms.get("big/floor/FastAPI", [])
    for name in FLOORS:
        rows.append(
            ratio_row(
                case2a,
                f"orjson floor {name} over HTTP (parse only)",
                ms.get(f"big/floor/{name}", []),
                "ms",
                floor_big,
                "FastAPI floor",
            )
        )
    rows.append(
        ratio_row(
            case2a,
            "orjson.loads in-process",
            ms.get("big/orjson_loads", []),
            "ms",
            floor_big,
            "FastAPI floor",
        )
    )
    for operation in ("predict", "predict_proba"):
        rows.append(
            ratio_row(
                case2a,
                f"service {operation}, JSON in and out",
                ms.get(f"big/service/json/{operation}", []),
                "ms",
                floor_big,
                "FastAPI floor",
                "<= 1.25x",
                lambda x: x <= 1.25,
            )
        )

    case2b = f"2b. {BIG_ROWS:,} rows .npy"
    rows.append(
        Row(
            case2b,
            "orjson floor FastAPI: .npy body in, np.load, constant out, over HTTP (info)",
            ms.get("big/floor/npy", []),
            "ms",
        )
    )
    for operation, call in (
        ("predict", "KMeans.predict"),
        ("predict_proba", "GaussianMixture.predict_proba"),
    ):
        reference = ms.get(f"big/sklearn{SERVING_THREADS}/{operation}", [])
        rows.append(
            Row(
                case2b, f"scikit-learn {call} in-process, {SERVING_THREADS} thread", reference, "ms"
            )
        )
        rows.append(
            ratio_row(
                case2b,
                f"scikit-learn {call} in-process, {CORES} threads (info)",
                ms.get(f"big/sklearn{CORES}/{operation}", []),
                "ms",
                reference,
                "1 thread",
            )
        )
        rows.append(
            ratio_row(
                case2b,
                f"service {operation}, .npy in and out",
                ms.get(f"big/service/npy/{operation}", []),
                "ms",
                reference,
                "scikit-learn",
                "<= 1.5x",
                lambda x: x <= 1.5,
            )
        )

    case3 = f"3. train {FIT_ROWS:,} x {FEATURES} .npy"
    for algorithm, label in (
        ("kmeans", "KMeans(8, n_init=1)"),
        ("gaussian_mixture", "GMM(8, full, 10 EM iterations)"),
    ):
        reference = s.get(f"fit/inproc/{algorithm}", [])
        if not reference and not s.get(f"fit/service/{algorithm}"):
            continue
        rows.append(Row(case3, f"{label}.fit in-process, {CORES} threads", reference, "s"))
        if CORES > 1:
            rows.append(
                ratio_row(
                    case3,
                    f"{label}.fit in-process, 1 thread (info)",
                    s.get(f"fit/inproc1/{algorithm}", []),
                    "s",
                    reference,
                    f"{CORES} threads",
                )
            )
        rows.append(
            ratio_row(
                case3,
                f"service POST /v1/models {label} (201)",
                s.get(f"fit/service/{algorithm}", []),
                "s",
                reference,
                "in-process",
                "<= 1.15x",
                lambda x: x <= 1.15,
            )
        )
        rows.append(
            ratio_row(
                case3,
                "  its training_seconds (info)",
                s.get(f"fit/service_reported/{algorithm}", []),
                "s",
                reference,
                "in-process",
            )
        )
        for stage, label in TRAINING_STAGES:
            values = s.get(f"fit/stage/{stage}/{algorithm}", [])
            if values:
                rows.append(Row(case3, f"  {label} (info)", values, "s"))

    marks = sorted(int(k.rsplit("/", 1)[1]) for k in s if k.startswith("cache/rss/"))
    case4a = f"4a. {marks[-1] if marks else SMALL_MODELS} models, cache {SMALL_CACHE}"
    if marks:
        first = s[f"cache/rss/{marks[0]}"][0]
        rows.append(
            Row(
                case4a,
                "server RSS after training them (info)",
                s.get("cache/rss_trained", []),
                "MiB",
            )
        )
        for mark in marks:
            values = s[f"cache/rss/{mark}"]
            last = mark == marks[-1]
            ratio = max(values) / first
            rows.append(
                Row(
                    case4a,
                    f"server RSS after {mark} models (passes 1, 2)",
                    values,
                    "MiB",
                    ratio,
                    f"{ratio:.2f}x after {marks[0]}",
                    "<= 1.10x" if last else "",
                    ratio <= 1.10 if last else None,
                )
            )
    if s.get("cache/size"):
        size = s["cache/size"][-1]
        rows.append(
            Row(
                case4a,
                "/metrics lloyd_model_cache_size",
                [size],
                "",
                None,
                "",
                f"<= {SMALL_CACHE}",
                size <= SMALL_CACHE,
            )
        )

    case4b = f"4b. peak, {BIG_ROWS:,}-row .npy predict_proba"
    if s.get("mem/peak_mb"):
        rows.append(Row(case4b, "server RSS before (after warm-up)", s["mem/rss_before_mb"], "MiB"))
        copies = median(s["mem/peak_copies"])
        rows.append(
            Row(
                case4b,
                f"VmHWM above it, in copies of the {INPUT_MB:.1f} MB input",
                s["mem/peak_mb"],
                "MB",
                copies,
                f"{copies:.2f} copies",
                "<= 3 copies",
                copies <= 3.0,
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| case | what | median | range (min-max) | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.values:
            mid = fmt(median(row.values), row.unit)
            spread = (
                f"{fmt(min(row.values), row.unit)} - {fmt(max(row.values), row.unit)} "
                f"(n={len(row.values)})"
            )
        else:
            mid, spread = "not measured", ""
        met = "" if row.met is None else ("yes" if row.met else "**NO**")
        ratio = row.ratio_text if row.ratio is not None and not math.isnan(row.ratio) else ""
        lines.append(
            f"| {row.case} | {row.what} | {mid} | {spread} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines)


def check_log(path: Path, results: Results) -> None:
    """Tracebacks in a server's log. Those ending in ClientDisconnect come from wrk closing its
    connections at the end of a run with requests in flight: noted, not failures."""
    text = path.read_text(errors="replace")
    blocks = text.split("Traceback (most recent call last):")[1:]
    if not blocks:
        return
    # A traceback's frames are indented: its first line that is not names the exception.
    ends = [
        next((line for line in block.splitlines() if line and not line[0].isspace()), "")
        for block in blocks
    ]
    disconnects = sum("ClientDisconnect" in end for end in ends)
    if disconnects:
        logged = re.findall(r"^.*ERROR.*$", text, re.M)
        example = next((line for line in logged if "500" in line), logged[0] if logged else "")
        results.notes.append(
            f"{path.name}: {disconnects} traceback(s) ending in starlette.requests."
            f"ClientDisconnect (wrk closing connections at the end of a run, requests in "
            f"flight), each logged at ERROR as e.g.: {example.strip()}"
        )
    others = [(b, e) for b, e in zip(blocks, ends, strict=True) if "ClientDisconnect" not in e]
    if others:
        first, end = others[0]
        lines = first.splitlines()
        shown = lines[: lines.index(end) + 1] if end in lines else lines
        results.fail(
            f"{path.name} holds {len(others)} other traceback(s); the end of the first",
            detail="\n" + "\n".join(shown[-14:]),
        )


# -- main --------------------------------------------------------------------------------------
def code_version() -> str:
    """The checkout's commit, and whether app/ differs from it (the service is what is measured)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted changes in app/' if dirty else ''}"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_all(
    folder: Path, key: str, results: Results, args: argparse.Namespace, marks: list[int]
) -> None:
    data = make_data()
    log(
        f"data: served models trained on {SERVE_TRAIN_ROWS:,} x {FEATURES}; large "
        f"request {BIG_ROWS:,} x {FEATURES}: JSON {len(data.big_json) / 1e6:.1f} MB, "
        f".npy {len(data.big_npy) / 1e6:.1f} MB; training {FIT_ROWS:,} x {FEATURES} "
        f".npy {len(data.fit_npy) / 1e6:.1f} MB"
    )
    scripts = {"json": wrk_script(folder, data.one_row_json, key)}
    service_folder = folder / "service"
    service_folder.mkdir()
    log("setup: training the served models")
    setup_models(service_folder, key, data, results)
    for number in range(1, args.rounds + 1):
        log(f"round {number}/{args.rounds} (load average {loadavg()})")
        floor_round("FastAPI", folder, data, results, scripts, args)
        service_round(service_folder, key, data, results, scripts, args)
        floor_round("Starlette", folder, data, results, scripts, args)
        in_process_round(data, results, args)
    cache_folder = folder / "cache"
    cache_folder.mkdir()
    cache_memory(cache_folder, key, results, args.models, marks)
    for path in sorted(folder.glob("*.log")) + sorted(folder.glob("*/*.log")):
        check_log(path, results)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, short runs: a smoke test")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (3; 1 with --quick)")
    parser.add_argument("--repeats", type=int, help="timed large requests per server and round")
    parser.add_argument("--models", type=int, help=f"models of 4a ({SMALL_MODELS}; 20 quick)")
    parser.add_argument("--no-gmm-fit", action="store_true", help="skip the GMM training case")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds = args.rounds or 1
        args.duration = min(args.duration, 3.0)
    args.rounds = args.rounds or 3
    args.repeats = args.repeats or (2 if args.quick else max(2, math.ceil(5 / args.rounds)))
    args.models = args.models or (20 if args.quick else SMALL_MODELS)
    args.warmup = 1.0 if args.quick else 2.0
    marks = sorted({m for m in (10, args.models // 2, args.models) if 0 < m <= args.models})

    # Ctrl-C or SIGTERM: unwind through the finally below, which stops every server.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # even where started with SIGINT ignored
    load_start, code_start = loadavg(), code_version()
    log(
        f"code {code_start}; load average at start: {load_start}; {CORES} cores; "
        f"{args.rounds} round(s), wrk "
        f"{args.duration:g} s (+{args.warmup:g} s warm-up) x {CONNECTIONS} connections, "
        f"{args.repeats} timed large request(s) per server and round"
    )
    results = Results()
    key = new_key()
    try:
        with tempfile.TemporaryDirectory(prefix="lloyd-throughput-") as tmp:
            try:
                run_all(Path(tmp), key, results, args, marks)
            finally:
                stop_all()  # before the folder the servers write in is removed
    except KeyboardInterrupt:
        log("interrupted: every server stopped")
        sys.exit(130)
    finally:
        stop_all()
    load_end, code_end = loadavg(), code_version()
    seen = list(dict.fromkeys([code_start, *results.code_versions, code_end]))
    code = (
        seen[0]
        if len(seen) == 1
        else f"CHANGED during the run: at start {code_start}, at the service's rounds "
        f"{', '.join(results.code_versions)}, at end {code_end}"
    )
    output = [
        "",
        f"Lloyd throughput bench, {time.strftime('%Y-%m-%d %H:%M:%S')}: {args.rounds} round(s), "
        f"wrk {args.duration:g} s x {CONNECTIONS} connections; load average (1, 5, 15 min) "
        f"at start {load_start}, at end {load_end}; {CORES} cores; code {code}",
        "",
        table(build_rows(results)),
        "",
        "Ratios are median over median. Service: python -m app, SQLite, API key auth, metrics; "
        f"LLOYD_MAX_CONCURRENT_JOBS=1 (the training worker gets {CORES} BLAS/OpenMP threads; "
        f"the in-process fit runs under threadpool_limits({CORES})); serving runs with "
        f"LLOYD_SERVING_THREADS={SERVING_THREADS}, so scikit-learn in-process is timed under "
        f"threadpool_limits({SERVING_THREADS}) for 2b.",
    ]
    finish_report(output, results.notes, results.failures, "SERVICE FAILURES", args.out)


def finish_report(
    output: list[str], notes: list[str], failures: list[str], heading: str, out: Path | None
) -> None:
    """Prints the report with its notes and failures, writes it to ``out`` if given, and exits
    with 1 when anything failed."""
    if notes:
        output += ["", "Notes:"] + [f"- {note}" for note in notes]
    if failures:
        output += ["", f"{heading}:"] + [f"- {failure}" for failure in failures]
    text = "\n".join(output)
    print(text)
    if out:
        out.write_text(text + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
