"""Predict latency with and without a long model-selection job running on the same server.

Starts the real server (uvicorn, a temporary SQLite file and model store), trains a small
k-means model (8 clusters, 16 features), then a second client sends sequential 1-row predict
requests to it: first with nothing else running, then while a grid job (Gaussian mixtures over
n_components 1..10 x the 4 covariance types on 20,000 x 16 rows) keeps every worker busy.
Prints p50, p99 and mean latency of both phases, over several repeats, and the ratio of the
p99s against the target of issue 4 (p99 with the job within 2x of p99 without it).

Run: .venv/bin/python bench/predict_during_grid.py [--requests 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.datasets import make_blobs

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 2.0
WARMUP_REQUESTS = 200
PHASE_SECONDS = 120.0  # a phase stops here even if it has not sent every request
STARTUP_SECONDS = 60.0
GRID_ROWS = 20_000
FEATURES = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    """The server in its own session, so that it and its worker processes can be killed as one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLOYD_")} | {
        "LLOYD_DATABASE_URL": f"sqlite:///{folder / 'lloyd.db'}",
        "LLOYD_MODELS_STORE": str(folder / "store"),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with (folder / "server.log").open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(http: httpx.Client, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"server exited with {server.returncode}:\n{log.read_text()}")
        with suppress(httpx.TransportError):
            if http.get("/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    sys.exit(f"server not healthy after {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop_server(server: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def train(http: httpx.Client) -> None:
    X, _ = make_blobs(n_samples=5_000, n_features=FEATURES, centers=8, random_state=0)
    response = http.post(
        "/v1/models",
        json={
            "name": "bench-kmeans",
            "algorithm": "kmeans",
            "params": {"n_clusters": 8, "random_state": 0},
            "data": {"instances": X.tolist()},
        },
        timeout=300,
    )
    response.raise_for_status()


def grid_body() -> dict[str, Any]:
    X, _ = make_blobs(n_samples=GRID_ROWS, n_features=FEATURES, centers=6, random_state=1)
    return {
        "algorithm": "gaussian_mixture",
        # Two initialisations each: busy for minutes, longer than a phase of measurement.
        "params": {"random_state": 0, "n_init": 2, "max_iter": 500},
        "grid": {
            "n_components": {"min": 1, "max": 10},
            "covariance_type": ["full", "tied", "spherical", "diag"],
        },
        "data": {"instances": X.tolist()},
        "wait": False,
    }


def measure(predictor: httpx.Client, rows: list[list[float]], n: int) -> list[float]:
    """Latencies in ms of up to ``n`` sequential 1-row predicts (fewer if the phase runs out of
    time)."""
    latencies: list[float] = []
    deadline = time.monotonic() + PHASE_SECONDS
    for i in range(n):
        body = {"instances": [rows[i % len(rows)]]}
        started = time.perf_counter()
        response = predictor.post("/v1/models/bench-kmeans/predict", json=body)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        if time.monotonic() > deadline:
            break
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies)
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
        "n": float(len(values)),
    }


def job_status(http: httpx.Client, job_id: str) -> dict[str, Any]:
    return http.get(f"/v1/jobs/{job_id}").json()


def one_repeat(
    admin: httpx.Client, predictor: httpx.Client, rows: list[list[float]], n: int, body: dict
) -> tuple[dict[str, float], dict[str, float], str]:
    without = summary(measure(predictor, rows, n))

    response = admin.post("/v1/model-selection", json=body, timeout=300)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + STARTUP_SECONDS
    while job_status(admin, job_id)["status"] == "queued":
        if time.monotonic() > deadline:
            sys.exit("the grid job never started")
        time.sleep(0.05)
    with_job = summary(measure(predictor, rows, n))
    job = job_status(admin, job_id)
    busy = f"{job['status']} {job['progress']['done']}/{job['progress']['total']}"
    with_job["busy_throughout"] = float(job["status"] == "running")
    if job["status"] == "running":
        admin.delete(f"/v1/jobs/{job_id}", timeout=120)
    return without, with_job, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="predicts per phase")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = make_blobs(n_samples=100, n_features=FEATURES, centers=8, random_state=2)[0].tolist()
    body = grid_body()
    with tempfile.TemporaryDirectory(prefix="lloyd-bench-") as folder:
        port = free_port()
        server = start_server(Path(folder), port)
        try:
            base = f"http://127.0.0.1:{port}"
            with (
                httpx.Client(base_url=base, timeout=60) as admin,
                httpx.Client(base_url=base, timeout=60) as predictor,
            ):
                wait_healthy(admin, server, Path(folder) / "server.log")
                train(admin)
                measure(predictor, rows, WARMUP_REQUESTS)
                results = []
                for repeat in range(1, args.repeats + 1):
                    without, with_job, busy = one_repeat(
                        admin, predictor, rows, args.requests, body
                    )
                    results.append((without, with_job))
                    print(
                        f"repeat {repeat}: without p50 {without['p50']:.2f} p99 "
                        f"{without['p99']:.2f} ms ({without['n']:.0f} req); with job p50 "
                        f"{with_job['p50']:.2f} p99 {with_job['p99']:.2f} ms "
                        f"({with_job['n']:.0f} req); job at the end: {busy}",
                        flush=True,
                    )
        finally:
            stop_server(server)
    report(results)


def report(results: list[tuple[dict[str, float], dict[str, float]]]) -> None:
    def median(phase: int, key: str) -> float:
        return statistics.median(r[phase][key] for r in results)

    print()
    print(f"1-row predict latency, median of {len(results)} repeats (ms)")
    print(f"{'phase':<26}{'p50':>8}{'p99':>8}{'mean':>8}")
    for phase, name in ((0, "no job running"), (1, "grid job running")):
        print(
            f"{name:<26}{median(phase, 'p50'):>8.2f}{median(phase, 'p99'):>8.2f}"
            f"{median(phase, 'mean'):>8.2f}"
        )
    ratios = [r[1]["p99"] / r[0]["p99"] for r in results]
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    if not all(r[1]["busy_throughout"] for r in results):
        print("warning: the grid job ended before a measurement did; make it longer")
    print(
        f"p99 with / p99 without: {ratio:.2f} (per repeat: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); target <= {TARGET_RATIO:g}: {verdict}"
    )


if __name__ == "__main__":
    main()
