"""Model selection on Dask: what a grid costs through DaskExecutor, against fitting in-process.

The executors alone: a 40-candidate Gaussian-mixture grid (n_components 1..10 x the 4
covariance types, random_state 0) on make_blobs' 1,250 x 2 rows (4 centers), in interleaved
rounds of
  floor     this process, one candidate after another (outcome_of, 1 BLAS thread): the sum of
            the candidates' fit times, what no executor can beat on one core
  local x2  LocalExecutor, Lloyd's own worker processes, 2 at once (what runs without Dask)
  dask x1   DaskExecutor on a 1-worker LocalCluster (1 thread)
  dask x2   DaskExecutor on a 2-worker LocalCluster
then the medians, the ratios 1-worker / 2-worker and local workers / 2 Dask workers, and Dask's
overhead per candidate: from the grid, (dask x1 - floor) / 40 (and (dask x2 - floor / 2) / 40);
measured directly, N tasks of a trivial function (and of a tiny real fit) submitted at once,
wall / N (and the same without the executor: client.map and gather, Dask's own cost); and the
round trip of a one-task job. Each cluster runs the grid once before the rounds (its workers
import scikit-learn then), and the Dask results are checked equal to the in-process ones.

Run: .venv/bin/python bench/dask_grid.py [--rounds 3] [--noops 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.datasets import make_blobs

from app.jobs.dask_executor import DaskExecutor
from app.jobs.execution import Execution, Executor, Task
from app.jobs.local_executor import LocalExecutor
from app.jobs.worker import outcome_of
from app.ml.catalog import ALGORITHMS
from app.ml.selection import expand_grid
from app.services.fitting_tasks import fit_candidate

# The grid as POST /v1/model-selection takes it (for part 2 as well).
ALGORITHM = "gaussian_mixture"
PARAMS: dict[str, Any] = {"random_state": 0}
GRID: dict[str, Any] = {
    "n_components": {"min": 1, "max": 10},
    "covariance_type": ["full", "tied", "diag", "spherical"],
}
ROWS = 1250
CENTERS = 4
TINY_ROWS = 20
POLL_SECONDS = 1.0


def grid_rows() -> np.ndarray:
    X, _ = make_blobs(n_samples=ROWS, centers=CENTERS, random_state=0)
    return X


def candidate_kwargs(X: np.ndarray) -> list[dict[str, Any]]:
    """Each candidate's kwargs, as app.services.selection builds them."""
    return [
        {
            "algorithm": ALGORITHM,
            "params": {**PARAMS, **candidate.params},
            "preprocessing": [],
            "X": X,
            "feature_names": None,
            "contamination": 0.1,
            "diagram": False,
        }
        for candidate in expand_grid(ALGORITHMS[ALGORITHM], GRID)
    ]


# -- part 1: the executor alone -------------------------------------------------------------------
def collect(execution: Execution, n: int) -> list[Any]:
    results: dict[int, Any] = {}
    try:
        while len(results) < n:
            results.update(execution.poll(POLL_SECONDS))
    finally:
        execution.close()
    return [results[index] for index in range(n)]


def through(executor: Executor, tasks: list[Task]) -> tuple[float, list[Any]]:
    """Wall seconds from submitting ``tasks`` to the last result, and the results."""
    started = time.perf_counter()
    results = collect(executor.execute(tasks), len(tasks))
    return time.perf_counter() - started, results


def raw_dask(executor: DaskExecutor, n: int) -> float:
    """Wall seconds of N trivial tasks on the executor's cluster without it: Dask's own cost."""
    started = time.perf_counter()
    executor.client.gather(executor.client.map(abs, range(n), pure=False))
    return time.perf_counter() - started


def floor(kwargs_list: list[dict[str, Any]]) -> tuple[float, list[Any]]:
    """The sum of the candidates' fit times in this process, and the results."""
    seconds, results = 0.0, []
    for kwargs in kwargs_list:
        started = time.perf_counter()
        kind, result = outcome_of(fit_candidate, kwargs, 1)
        seconds += time.perf_counter() - started
        assert kind == "ok", result
        results.append(result)
    return seconds, results


def same_numbers(got: list[Any], expected: list[Any]) -> bool:
    return all(
        a.metrics == b.metrics
        and np.array_equal(a.model.estimator.means_, b.model.estimator.means_)
        and np.array_equal(a.model.estimator.covariances_, b.model.estimator.covariances_)
        for (a, _), (b, _) in zip(got, expected, strict=True)
    )


def seconds_text(values: list[float]) -> str:
    return "".join(f"{v:>9.3f}" for v in values)


def ms_text(values: list[float]) -> str:
    return "".join(f"{v * 1e3:>10.2f}" for v in values)


def executor_part(args: argparse.Namespace) -> None:
    X = grid_rows()
    kwargs_list = candidate_kwargs(X)
    n = len(kwargs_list)
    grid_tasks = [Task(fit_candidate, kwargs) for kwargs in kwargs_list]
    tiny = np.random.RandomState(0).normal(size=(TINY_ROWS, 2))
    tiny_kwargs = {**kwargs_list[0], "params": {**PARAMS, "n_components": 1}, "X": tiny}
    print(
        f"grid: {n} candidates of {ALGORITHM} ({GRID}, params {PARAMS}) on {ROWS} x 2 rows; "
        f"{args.rounds} interleaved rounds"
    )
    one = DaskExecutor("local", local_workers=1)
    two = DaskExecutor("local", local_workers=2)
    local = LocalExecutor(max_workers=2)
    local.start()
    try:
        clusters = {"dask x1": one, "dask x2": two}
        executors: dict[str, Executor] = {"local x2": local, **clusters}
        _, reference = floor(kwargs_list)  # warm: scikit-learn's first calls fill caches
        checks = []
        for executor in executors.values():
            _, results = through(executor, grid_tasks)  # warm: the workers import their code
            checks.append(same_numbers(results, reference))
        times: dict[str, list[float]] = {"floor": [], **{name: [] for name in executors}}
        for _ in range(args.rounds):
            times["floor"].append(floor(kwargs_list)[0])
            for name, executor in executors.items():
                times[name].append(through(executor, grid_tasks)[0])
        medians = {name: statistics.median(values) for name, values in times.items()}

        print(
            f"\n{'grid, wall s':<28}"
            + "".join(f"{f'round {i + 1}':>9}" for i in range(args.rounds))
            + f"{'median':>9}"
        )
        labels = {
            "floor": "floor (in-process, sum)",
            "local x2": "local workers, 2 at once",
            "dask x1": "dask, 1 worker",
            "dask x2": "dask, 2 workers",
        }
        for name, values in times.items():
            print(f"{labels[name]:<28}{seconds_text(values)}{medians[name]:>9.3f}")
        width = 9 * (args.rounds + 1)
        ratio = medians["dask x1"] / medians["dask x2"]
        print(f"{'ratio dask 1 / 2 workers':<28}{ratio:>{width}.2f}")
        ratio = medians["local x2"] / medians["dask x2"]
        print(f"{'ratio local 2 / dask 2':<28}{ratio:>{width}.2f}")
        print(f"same numbers as in-process: {'yes' if all(checks) else 'NO'}")

        # With k workers, the floor is the sum of the fit times over k.
        per_candidate = [
            (medians[name] - medians["floor"] / workers) / n
            for workers, name in enumerate(clusters, start=1)
        ]
        print(f"\n{'overhead per task, ms':<40}{'1 worker':>10}{'2 workers':>10}")
        print(f"{f'grid: (wall - floor / workers) / {n}':<40}" + ms_text(per_candidate))
        noops = [Task(dict, {"i": i}) for i in range(args.noops)]
        tinies = [Task(fit_candidate, tiny_kwargs) for _ in range(args.noops)]
        tiny_floor = statistics.median(floor([tiny_kwargs] * 20)[0] / 20 for _ in range(3))
        rows: list[tuple[str, Callable[[DaskExecutor, int], float]]] = [
            (
                f"{args.noops} trivial tasks: wall / N",
                lambda ex, workers: through(ex, noops)[0] / args.noops,
            ),
            (
                "  the same, Dask alone (client.map)",
                lambda ex, workers: raw_dask(ex, args.noops) / args.noops,
            ),
            (
                f"{args.noops} tiny fits: (wall - fits / workers) / N",
                lambda ex, workers: through(ex, tinies)[0] / args.noops - tiny_floor / workers,
            ),
            (
                "a job of 1 trivial task: round trip",
                lambda ex, workers: statistics.median(through(ex, noops[:1])[0] for _ in range(20)),
            ),
        ]
        for label, measure in rows:
            values = [
                statistics.median(measure(executor, workers) for _ in range(args.rounds))
                for workers, executor in enumerate(clusters.values(), start=1)
            ]
            print(f"{label:<40}" + ms_text(values))
        print(f"(a tiny fit, {TINY_ROWS} rows, in-process: {tiny_floor * 1e3:.2f} ms)")
    finally:
        local.shutdown()
        two.shutdown()
        one.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--noops", type=int, default=200, help="trivial tasks per overhead measure (default 200)"
    )
    args = parser.parse_args()
    executor_part(args)


if __name__ == "__main__":
    main()
