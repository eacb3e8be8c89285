"""What one 1-row request costs inside the process, without the network: the service against its
floors, called as ASGI apps in one event loop.

Prints the median microseconds per request (medians over rounds of sequential requests) of:
- the orjson floors of bench/throughput_floor.py (bare FastAPI and Starlette endpoints that parse
  the body and answer a constant);
- the service's 1-row ``predict`` (KMeans(8)) and ``predict_proba`` (GaussianMixture(8, full)),
  16 features, with an API key, metrics and the registry on, through the app's one path (its
  edge layer, exception handlers, router and operation route);
and the ratios to the FastAPI floor. Over HTTP (bench/throughput.py) each request also pays the
server's own work, the same for every app. Run: .venv/bin/python bench/request_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import throughput_floor  # noqa: E402

from app.api_keys import hash_key, new_key  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

MODELS = {
    "km": ("kmeans", {"n_clusters": 8, "n_init": 1, "random_state": 0}),
    "gmm": ("gaussian_mixture", {"n_components": 8, "random_state": 0}),
}


def scope(path: str, body: bytes, key: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def per_request_us(app: Any, path: str, body: bytes, key: str, count: int) -> float:
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    started = time.perf_counter()
    for _ in range(count):
        await app(scope(path, body, key), receive, send)
    elapsed = time.perf_counter() - started
    if statuses != {200}:
        raise RuntimeError(f"{path}: statuses {statuses}")
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round (3000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (5)")
    args = parser.parse_args()

    key = new_key()
    folder = Path(tempfile.mkdtemp(prefix="lloyd-overhead-"))
    settings = Settings(
        database_url=f"sqlite:///{folder / 'lloyd.db'}",
        models_store=folder / "store",
        api_keys=f"{hash_key(key)}:read+write",
        log_level="warning",
    )
    app = create_app(settings)
    X, _ = make_blobs(n_samples=20_000, n_features=16, centers=8, random_state=0)
    body = orjson.dumps({"instances": X[:1].tolist()})
    auth = {"Authorization": f"Bearer {key}"}

    with TestClient(app) as client:
        for name, (algorithm, params) in MODELS.items():
            trained = client.post(
                "/v1/models",
                json={
                    "name": name,
                    "algorithm": algorithm,
                    "params": params,
                    "data": {"instances": X.tolist()},
                },
                headers=auth,
            )
            trained.raise_for_status()
        cases = [
            ("floor FastAPI (orjson, constant answer)", throughput_floor.fastapi_app, "/predict"),
            ("floor Starlette", throughput_floor.starlette_app, "/predict"),
            ("service predict KMeans(8)", app, "/v1/models/km/predict"),
            ("service predict_proba GMM(8, full)", app, "/v1/models/gmm/predict_proba"),
        ]
        for _, target, path in cases:  # warm-up: resolutions cached, models loaded
            client.portal.call(per_request_us, target, path, body, key, 200)
        # Interleaved: every case once per round, so that the machine's drift hits them alike.
        rounds: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for _ in range(args.rounds):
            for label, target, path in cases:
                rounds[label].append(
                    client.portal.call(per_request_us, target, path, body, key, args.requests)
                )
        floor = statistics.median(rounds[cases[0][0]])
        for label, figures in rounds.items():
            median = statistics.median(figures)
            print(
                f"{label:42s} {median:7.1f} us  ({min(figures):.1f}-{max(figures):.1f})"
                f"  {median / floor:5.2f}x FastAPI floor",
                flush=True,
            )


if __name__ == "__main__":
    main()
