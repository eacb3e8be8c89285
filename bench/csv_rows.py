"""What a large CSV body costs against the same rows as JSON: 100,000 x 16 random normal rows
(every number written as the shortest text that reads back as it), parsed by the parsers the
operations' routes use (``app.api.csv_rows.read_csv``; ``app.api.bodies`` for JSON), and sent
whole through the app to ``predict`` (KMeans(8), in-process, no network).

Prints the best and median milliseconds of each, the CSV path once with plain numbers (the
simdjson fast path) and once with every cell quoted (the csv module's path). Run:
.venv/bin/python bench/csv_rows.py [--rows 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from fastapi.testclient import TestClient

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from app.api.bodies import _parse_json  # noqa: E402
from app.api.csv_rows import read_csv  # noqa: E402
from app.api.schemas import InferenceRequest  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402


def timed(works: dict[str, Callable[[], object]], rounds: int) -> None:
    """Print the best and median milliseconds of each work, the works run in turn in every
    round (so that a busy moment of the machine falls on all of them alike)."""
    times: dict[str, list[float]] = {label: [] for label in works}
    for _ in range(rounds):
        for label, work in works.items():
            began = time.perf_counter()
            work()
            times[label].append(time.perf_counter() - began)
    for label, spent in times.items():
        best, median = min(spent) * 1e3, statistics.median(spent) * 1e3
        print(f"{label:32s} best {best:7.1f} ms, median {median:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    X = np.random.default_rng(0).normal(size=(args.rows, 16))
    names = [f"f{i}" for i in range(16)]
    lines = [",".join(map(repr, map(float, row))) for row in X]
    plain = "\n".join([",".join(names), *lines, ""]).encode()
    quoted = "\n".join(
        [",".join(names), *(",".join(f'"{c}"' for c in line.split(",")) for line in lines), ""]
    ).encode()
    as_json = orjson.dumps({"instances": X.tolist()})
    print(f"{args.rows} x 16: CSV {len(plain) / 1e6:.1f} MB, JSON {len(as_json) / 1e6:.1f} MB")
    timed(
        {
            "parse JSON": lambda: _parse_json(InferenceRequest, as_json),
            "parse CSV": lambda: read_csv(plain, "text/csv"),
        },
        args.rounds,
    )
    timed({"parse CSV, quoted cells": lambda: read_csv(quoted, "text/csv")}, 3)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{folder}/lloyd.db",
            models_store=f"{folder}/store",
            gc_freeze=False,
            max_body_bytes=256 * 1024 * 1024,
        )
        with TestClient(create_app(settings)) as client:
            train = {
                "name": "km",
                "algorithm": "kmeans",
                "params": {"n_clusters": 8, "n_init": 1, "random_state": 0},
                "data": {"instances": X[:2000].tolist()},
            }
            assert client.post("/v1/models", json=train).status_code == 201
            url = "/v1/models/km/predict"
            requests = {
                "predict, JSON body": lambda: client.post(
                    url, content=as_json, headers={"content-type": "application/json"}
                ),
                "predict, CSV body": lambda: client.post(
                    url, content=plain, headers={"content-type": "text/csv"}
                ),
            }
            first = [work().json()["labels"] for work in requests.values()]
            assert first[0] == first[1]
            timed(requests, args.rounds)


if __name__ == "__main__":
    main()
