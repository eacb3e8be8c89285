"""The 1-row figures of docs/performance.md alone (case 1 of bench/throughput.py), in a few
minutes: the bare FastAPI and Starlette floors and the service (KMeans(8) predict, GMM(8, full)
predict_proba), each its own uvicorn process, driven by wrk (8 connections) in interleaved
rounds; medians, ranges and ratios to the FastAPI floor, against the targets (throughput at
least 0.8x the floor's, p99 under 3x). Needs wrk (`apt-get install wrk`).

Run: .venv/bin/python bench/one_row.py [--rounds 3] [--duration 10] [--compare DIR]

``--compare DIR`` serves the same models from another checkout too (``git worktree add DIR
<commit>``), in the same rounds: a change's cost measured side by side with what it replaces.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import throughput as bench  # noqa: E402

from app.api_keys import new_key  # noqa: E402

SERVED = {"predict": "/v1/models/km/predict", "predict_proba": "/v1/models/gmm/predict_proba"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--compare", type=Path, help="another checkout, served beside this one")
    args = parser.parse_args()
    args.warmup = 2.0
    signal.signal(signal.SIGTERM, bench.interrupt)
    key = new_key()
    results = bench.Results()
    try:
        with tempfile.TemporaryDirectory(prefix="lloyd-one-row-") as tmp:
            try:
                run(Path(tmp), key, results, args)
            finally:
                bench.stop_all()
    finally:
        bench.stop_all()
    report(results, args)


def run(folder: Path, key: str, results: bench.Results, args: argparse.Namespace) -> None:
    data = bench.make_data()
    script = bench.wrk_script(folder, data.one_row_json, key)
    service_folder = folder / "service"
    service_folder.mkdir()
    bench.setup_models(service_folder, key, data, results)
    expected = {
        "predict": data.kmeans.predict(data.big[:1]),
        "predict_proba": data.mixture.predict_proba(data.big[:1]),
    }
    services = {"service": (service_folder, bench.REPO_ROOT)}
    if args.compare is not None:
        compared = folder / "compared"
        shutil.copytree(service_folder, compared)
        services[f"compared ({args.compare.name})"] = (compared, args.compare.resolve())
    for number in range(1, args.rounds + 1):
        bench.log(f"round {number}/{args.rounds} (load average {bench.loadavg()})")
        with bench.start_floor("FastAPI", folder) as server:
            bench.measure_wrk(
                results, "FastAPI floor", f"{server.base}/predict", script, args, False
            )
        # Each round starts with the other service: neither always follows the floor.
        order = list(services.items())
        for label, (where, checkout) in order if number % 2 else order[::-1]:
            serve_round(label, where, checkout, key, data, expected, script, results, args)
        with bench.start_floor("Starlette", folder) as server:
            bench.measure_wrk(
                results, "Starlette floor", f"{server.base}/predict", script, args, False
            )


def serve_round(
    label: str,
    folder: Path,
    checkout: Path,
    key: str,
    data: bench.Data,
    expected: dict[str, np.ndarray],
    script: Path,
    results: bench.Results,
    args: argparse.Namespace,
) -> None:
    """One round of ``checkout``'s service (``python -m app`` run from there)."""
    here, bench.REPO_ROOT = bench.REPO_ROOT, checkout
    try:
        server = bench.start_service(folder, key)
    finally:
        bench.REPO_ROOT = here
    with server, bench.client(server.base, key) as http:
        for operation, path in SERVED.items():
            answer = bench.post_json(http, path, data.one_row_json).json()
            field = "labels" if operation == "predict" else "probabilities"
            if not bench.same_answer(np.asarray(answer[field]), expected[operation]):
                results.fail(f"{label} {path} differs from scikit-learn: {orjson.dumps(answer)}")
        for operation, path in SERVED.items():
            bench.measure_wrk(
                results, f"{label} {operation}", f"{server.base}{path}", script, args, True
            )


def report(results: bench.Results, args: argparse.Namespace) -> None:
    floor_rps = bench.median(results.samples["FastAPI floor/rps"])
    floor_p99 = bench.median(results.samples["FastAPI floor/p99"])
    print(f"\n1-row requests, wrk {args.duration:g} s x 8 connections, {args.rounds} rounds")
    print(f"{'case':28s} {'req/s':>8s} {'range':>17s} {'ratio':>6s}   {'p99 ms':>6s} {'ratio':>6s}")
    names = [key[: -len("/rps")] for key in results.samples if key.endswith("/rps")]
    for name in sorted(names, key=lambda n: (not n.endswith("floor"), n)):
        rps = results.samples[f"{name}/rps"]
        p99 = results.samples[f"{name}/p99"]
        rps_ratio = bench.median(rps) / floor_rps
        p99_ratio = bench.median(p99) / floor_p99
        verdict = ""
        if not name.endswith("floor"):
            met = rps_ratio >= 0.8 and p99_ratio < 3
            verdict = "  target >= 0.8x, p99 < 3x: " + ("met" if met else "NOT MET")
        print(
            f"{name:28s} {bench.median(rps):8,.0f} {min(rps):8,.0f}-{max(rps):<8,.0f} "
            f"{rps_ratio:5.2f}x   {bench.median(p99):6.2f} {p99_ratio:5.2f}x{verdict}"
        )
    for failure in results.failures:
        print(f"FAILURE: {failure}")
    sys.exit(1 if results.failures else 0)


if __name__ == "__main__":
    main()
