"""Lloyd's Open Inference Protocol (/v2) against its own /v1, and against MLServer's /v2 on the
same model: what the second transport costs, and what it saves.

Cases (KMeans(8) fitted on bench/throughput.py's 20,000 x 16 rows, ``predict``):
1. 1 row, ``wrk`` with 8 connections (a warm-up, then ``--duration`` seconds): Lloyd's /v1 JSON
   (``{"instances": [[...]]}``), Lloyd's /v2 JSON (one FP64 tensor, data flat, no outputs named:
   ``predict``) and MLServer's /v2 with the very same body; throughput and p99.
2. 100,000 x 16 rows in one request, timed with httpx (one untimed request, whose labels are
   checked, then ``--repeats``): Lloyd's /v1 ``.npy`` in and out, Lloyd's /v2 binary tensor data in
   and out, Lloyd's /v2 JSON, and MLServer's /v2 JSON (it reads no binary tensor data over REST).

Interleaved rounds: each round starts Lloyd (``python -m app``, as bench/throughput.py does) and
then MLServer (one process, ``parallel_workers`` 0, 1 BLAS thread as Lloyd), or the other way
round, one server at a time; within Lloyd's turn /v1 and /v2 alternate which goes first. Every
server's answers are checked against scikit-learn in-process first (labels exact). MLServer is
optional: it runs from the venv ``scripts/bench-peers-setup mlserver`` makes (.bench-peers/), and
is skipped when that is absent (``--no-peer`` skips it anyway). Medians (min-max over the rounds)
and ratios, median over median.

Run: .venv/bin/python bench/v2_protocol.py [--rounds 3] [--duration 10] [--repeats 3]
     [--no-peer] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import joblib
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers as P
import throughput as T

NPY = T.NPY
JSON = {"Content-Type": "application/json"}
IDENTITY = {"Accept-Encoding": "identity"}
ONE_ROW = ("Lloyd /v1 JSON", "Lloyd /v2 JSON", "MLServer /v2 JSON")
BIG = ("Lloyd /v1 .npy", "Lloyd /v2 binary", "Lloyd /v2 JSON", "MLServer /v2 JSON")


def v2_binary(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The binary tensor data extension: the JSON object, then the rows' bytes; the labels
    asked for as binary data too."""
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": rows.nbytes},
            }
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
    }
    text = json.dumps(header).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(text)),
    }
    return text + np.ascontiguousarray(rows, dtype="<f8").tobytes(), headers


def v2_labels(response: httpx.Response) -> np.ndarray:
    """The ``predict`` output of a /v2 answer, JSON or binary."""
    length = response.headers.get("inference-header-content-length")
    if length is None:
        output = response.json()["outputs"][0]
        return np.asarray(output["data"]).reshape(-1)
    output = json.loads(response.content[: int(length)])["outputs"][0]
    dtype = {"INT64": "<i8", "INT32": "<i4"}[output["datatype"]]
    return np.frombuffer(response.content[int(length) :], dtype=dtype)


def v1_npy_labels(response: httpx.Response) -> np.ndarray:
    return np.load(io.BytesIO(response.content), allow_pickle=False).reshape(-1)


class Bench:
    """The run's data, bodies, expected answers and samples."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args, self.folder = args, folder
        self.data = T.make_data()
        self.results = T.Results()
        self.failures: list[str] = []
        row = self.data.big[:1]
        with threadpool_limits(limits=T.SERVING_THREADS):
            self.expected_one = self.data.kmeans.predict(row)
            self.expected_big = self.data.kmeans.predict(self.data.big)
        self.v1_one = self.data.one_row_json
        self.v2_one = P.v2_body(row)
        self.v2_big_json = P.v2_body(self.data.big)
        self.v2_big_binary, self.v2_binary_headers = v2_binary(self.data.big)

    def fail(self, text: str) -> None:
        T.log(f"    FAILED: {text}")
        self.failures.append(text)


def wrk_once(bench: Bench, label: str, url: str, script: Path) -> None:
    T.run_wrk(url, script, bench.args.warmup)
    run = T.run_wrk(url, script, bench.args.duration)
    T.log(
        f"    {label}: {run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms "
        f"({run.requests} requests, non-2xx {run.non_2xx}, socket errors {run.socket_errors})"
    )
    if math.isnan(run.rps) or run.non_2xx or run.socket_errors:
        bench.fail(f"wrk {label}: non-2xx {run.non_2xx}, socket errors {run.socket_errors}")
        return
    bench.results.add(f"{label}/rps", run.rps)
    bench.results.add(f"{label}/p99", run.p99_ms)


def timed(
    bench: Bench,
    label: str,
    send: Callable[[], httpx.Response],
    labels: Callable[[httpx.Response], np.ndarray],
) -> None:
    """One untimed request (its labels checked), then ``--repeats`` timed ones."""
    response = send()
    if response.status_code != 200:
        bench.fail(f"{label}: HTTP {response.status_code} {response.text[:500]}")
        return
    if not np.array_equal(labels(response), bench.expected_big):
        bench.fail(f"{label}: the labels differ from scikit-learn's")
        return
    times = []
    for _ in range(bench.args.repeats):
        started = time.perf_counter()
        response = send()
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            bench.fail(f"{label}: HTTP {response.status_code}")
            return
    bench.results.samples[f"{label}/ms"].extend(times)
    T.log(f"    {label}: {', '.join(f'{t:,.0f}' for t in times)} ms")


def one_row_ok(bench: Bench, label: str, response: httpx.Response, labels: np.ndarray) -> bool:
    if response.status_code != 200:
        bench.fail(f"{label}, 1 row: HTTP {response.status_code} {response.text[:500]}")
        return False
    if not np.array_equal(labels, bench.expected_one):
        bench.fail(f"{label}, 1 row: {labels.tolist()} differs from scikit-learn's")
        return False
    return True


def lloyd_turn(bench: Bench, service: Path, key: str, scripts: dict[str, Path], first: int) -> None:
    data = bench.data
    with T.start_service(service, key) as server, T.client(server.base, key) as http:
        T.log(f"  Lloyd (python -m app, pid {server.pid}, code {T.code_version()})")
        v1, v2 = f"{server.base}/v1/models/km/predict", f"{server.base}/v2/models/km/infer"
        for _ in range(20):  # the version resolved and cached, the code paths warm
            answer = http.post(v1, content=bench.v1_one, headers=JSON)
            labels = np.asarray(answer.json()["labels"]) if answer.is_success else np.array([])
            if not one_row_ok(bench, "Lloyd /v1", answer, labels):
                return
            answer = http.post(v2, content=bench.v2_one, headers=JSON)
            labels = v2_labels(answer) if answer.is_success else np.array([])
            if not one_row_ok(bench, "Lloyd /v2", answer, labels):
                return
        order = [("Lloyd /v1 JSON", v1), ("Lloyd /v2 JSON", v2)]
        for label, url in order if first % 2 else order[::-1]:
            wrk_once(bench, label, url, scripts[label])
        big = [
            (
                "Lloyd /v1 .npy",
                lambda: http.post(
                    v1, content=data.big_npy, headers={"Content-Type": NPY, "Accept": NPY}
                ),
                v1_npy_labels,
            ),
            (
                "Lloyd /v2 binary",
                lambda: http.post(v2, content=bench.v2_big_binary, headers=bench.v2_binary_headers),
                v2_labels,
            ),
            (
                "Lloyd /v2 JSON",
                lambda: http.post(v2, content=bench.v2_big_json, headers=JSON | IDENTITY),
                v2_labels,
            ),
        ]
        for label, send, labels in big if first % 2 else big[::-1]:
            timed(bench, label, send, labels)


def mlserver_turn(bench: Bench, scripts: dict[str, Path]) -> None:
    with (
        P.start_mlserver(bench.folder, T.SERVING_THREADS) as server,
        httpx.Client(timeout=T.REQUEST_TIMEOUT) as http,
    ):
        T.log(f"  MLServer (mlserver start, parallel_workers 0, pid {server.pid})")
        url = f"{server.base}/v2/models/km/infer"
        for _ in range(5):
            response = http.post(url, content=bench.v2_one, headers=JSON)
            labels = v2_labels(response) if response.is_success else np.array([])
            if not one_row_ok(bench, "MLServer /v2", response, labels):
                return
        wrk_once(bench, "MLServer /v2 JSON", url, scripts["MLServer /v2 JSON"])
        timed(
            bench,
            "MLServer /v2 JSON",
            lambda: http.post(url, content=bench.v2_big_json, headers=JSON | IDENTITY),
            v2_labels,
        )


def prepare_mlserver(bench: Bench) -> bool:
    """MLServer's model folder, written by its own venv from the very estimators fitted here."""
    models = bench.folder / "models"
    models.mkdir()
    np.save(models / "train.npy", bench.data.train, allow_pickle=False)
    pickles = {"km": models / "km.joblib", "gmm": models / "gmm.joblib"}
    joblib.dump(bench.data.kmeans, pickles["km"])
    joblib.dump(bench.data.mixture, pickles["gmm"])
    try:
        done = P.prepare_peer(P.PEER_SPECS["MLServer"], bench.folder / "mlserver-models", pickles)
    except (RuntimeError, ValueError) as error:
        bench.fail(f"MLServer: {error}")
        return False
    versions = ", ".join(f"{k} {v}" for k, v in done["versions"].items())
    T.log(
        f"  MLServer: models saved ({versions}; {'refitted' if done['refit'] else 'same pickles'})"
    )
    return True


# -- the report --------------------------------------------------------------------------------
def cell(values: list[float], unit: str) -> str:
    if not values:
        return "not measured"
    low, high = P.number(min(values), unit), P.number(max(values), unit)
    return f"{P.number(T.median(values), unit)} ({low}-{high})"


def ratio(values: list[float], baseline: list[float], higher_is_better: bool) -> str:
    if not values or not baseline:
        return ""
    a, b = T.median(values), T.median(baseline)
    return f"{(a / b if higher_is_better else b / a):.2f}x"


def table(bench: Bench) -> str:
    samples = bench.results.samples
    lines = [
        "| case | measured | median (min-max) | vs Lloyd /v1 | vs MLServer /v2 |",
        "|---|---|---|---|---|",
    ]
    for label in ONE_ROW:
        for metric, unit, higher in (("rps", "req/s", True), ("p99", "ms", False)):
            values = samples.get(f"{label}/{metric}", [])
            lines.append(
                f"| 1 row, {T.CONNECTIONS} conns: {metric} | {label} | {cell(values, unit)} | "
                f"{ratio(values, samples.get(f'Lloyd /v1 JSON/{metric}', []), higher)} | "
                f"{ratio(values, samples.get(f'MLServer /v2 JSON/{metric}', []), higher)} |"
            )
    for label in BIG:
        values = samples.get(f"{label}/ms", [])
        lines.append(
            f"| {T.BIG_ROWS:,} x {T.FEATURES}, 1 request (ms) | {label} | {cell(values, 'ms')} | "
            f"{ratio(values, samples.get('Lloyd /v1 .npy/ms', []), False)} | "
            f"{ratio(values, samples.get('MLServer /v2 JSON/ms', []), False)} |"
        )
    return "\n".join(lines)


def run_all(bench: Bench, key: str, with_peer: bool) -> None:
    service = bench.folder / "service"
    service.mkdir()
    T.log("setup: the service trains km (and gmm), checked against scikit-learn")
    T.setup_models(service, key, bench.data, bench.results)
    bench.failures.extend(bench.results.failures)
    if with_peer:
        with_peer = prepare_mlserver(bench)
    auth = {"Authorization": f"Bearer {key}"} | JSON
    scripts = {
        "Lloyd /v1 JSON": P.write_wrk_script(bench.folder, "v1", bench.v1_one, auth),
        "Lloyd /v2 JSON": P.write_wrk_script(bench.folder, "v2", bench.v2_one, auth),
        "MLServer /v2 JSON": P.write_wrk_script(bench.folder, "mlserver", bench.v2_one, JSON),
    }
    for number in range(1, bench.args.rounds + 1):
        T.log(f"round {number}/{bench.args.rounds} (load average {T.loadavg()})")
        turns: list[Callable[[], None]] = [
            lambda number=number: lloyd_turn(bench, service, key, scripts, number),
        ]
        if with_peer:
            turns.append(lambda: mlserver_turn(bench, scripts))
        for turn in turns if number % 2 else turns[::-1]:
            try:
                turn()
            except (RuntimeError, httpx.HTTPError, ValueError, KeyError) as error:
                bench.fail(f"{type(error).__name__}: {str(error)[-1500:]}")


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed 100,000-row requests (3)")
    parser.add_argument("--no-peer", action="store_true", help="leave MLServer out")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    args.warmup = 2.0 if args.duration >= 5 else 1.0
    peer = P.PEER_SPECS["MLServer"]
    with_peer = not args.no_peer and P.peer_available(peer)
    skipped = []
    if not args.no_peer and not with_peer:
        skipped.append(f"MLServer skipped: no working venv (install: {P.SETUP} mlserver)")
        T.log(skipped[-1])
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    load_start, code = T.loadavg(), T.code_version()
    key = T.new_key()
    try:
        with tempfile.TemporaryDirectory(prefix="lloyd-v2-") as tmp:
            bench = Bench(args, Path(tmp))
            try:
                run_all(bench, key, with_peer)
            finally:
                T.stop_all()
    except KeyboardInterrupt:
        T.log("interrupted: every server stopped")
        sys.exit(130)
    finally:
        T.stop_all()
    output = [
        "",
        f"/v2 against /v1 and MLServer, {time.strftime('%Y-%m-%d %H:%M:%S')}: {args.rounds} "
        f"round(s), wrk {args.duration:g} s x {T.CONNECTIONS} connections, {args.repeats} timed "
        f"{T.BIG_ROWS:,}-row request(s); load average at start {load_start}, at end "
        f"{T.loadavg()}; {T.CORES} cores; code {code}",
        "",
        table(bench),
        "",
        "Ratios: median over median; throughput measured/baseline, p99 and time "
        "baseline/measured (above 1: better than the baseline). Every answer checked against "
        "scikit-learn in-process (labels exact) before it was measured.",
        *(f"- {line}" for line in skipped),
    ]
    T.finish_report(output, bench.results.notes, bench.failures, "FAILURES", args.out)


if __name__ == "__main__":
    main()
