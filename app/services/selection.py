"""Model selection: check a grid, fit its candidates as one job, report and register the best."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.api.schemas import ModelSelectionRequest, TrainRequest
from app.errors import InvalidInput, InvalidParameter
from app.jobs.runner import JobHandle, JobRunner, Task
from app.ml.fitting import FitResult
from app.ml.selection import CRITERIA, SELECTABLE, expand_grid, grid_size, summarize
from app.observability import ServiceMetrics
from app.registry.job_store import JobRecord, JobStore
from app.registry.model_registry import ModelRegistry
from app.services.fitting_tasks import fit_candidate, fit_errors
from app.services.training import PreparedTraining, check_text, new_version, prepare
from app.settings import Settings


def _as_training(spec: ModelSelectionRequest) -> TrainRequest:
    """The parts of a selection that a training checks the same way."""
    return TrainRequest.model_validate(
        {
            "name": spec.register_best.name if spec.register_best else "model-selection",
            "algorithm": spec.algorithm,
            "params": spec.params,
            "preprocessing": [step.model_dump() for step in spec.preprocessing],
            "anomaly": spec.anomaly.model_dump(),
            "data": spec.data.model_dump(exclude_none=True),
            "feature_names": spec.feature_names,
        }
    )


def start_selection(
    *,
    registry: ModelRegistry,
    jobs: JobStore,
    runner: JobRunner,
    spec: ModelSelectionRequest,
    settings: Settings,
    metrics: ServiceMetrics,
    rows: np.ndarray | None = None,
) -> tuple[JobRecord, JobHandle]:
    """Check the grid, then fit every candidate in worker processes as one job."""
    if spec.algorithm not in SELECTABLE:
        raise InvalidInput(
            f"model selection supports {', '.join(SELECTABLE)}; not {spec.algorithm!r}",
            at=["body", "algorithm"],
        )
    if spec.register_best is not None:
        best = spec.register_best
        check_text(
            name=best.name,
            description=best.description,
            tags=best.tags,
            settings=settings,
            at=["body", "register"],
        )
    prepared = prepare(_as_training(spec), settings, rows)
    algorithm = prepared.algorithm
    grid = {
        name: values.model_dump() if hasattr(values, "model_dump") else values
        for name, values in spec.grid.items()
    }
    size = grid_size(grid)  # before expanding: a huge range must not fill the memory
    if size > settings.max_grid_candidates:
        raise InvalidInput(
            f"the grid has {size} candidates; at most {settings.max_grid_candidates} "
            "(LLOYD_MAX_GRID_CANDIDATES)",
            at=["body", "grid"],
        )
    with fit_errors(algorithm.name):
        candidates = expand_grid(algorithm, grid)
    for candidate in candidates:
        clash = set(candidate.params) & set(spec.params)
        if clash:
            name = sorted(clash)[0]
            raise InvalidParameter(
                f"{name!r} is both in params and in the grid", at=["body", "grid", name]
            )
        try:
            with fit_errors(algorithm.name):
                algorithm.build({**spec.params, **candidate.params})
        except InvalidParameter as exc:
            bad = exc.errors[0]["loc"][-1] if exc.errors else "grid"
            raise InvalidParameter(exc.detail, at=["body", "grid", bad]) from exc
        k = candidate.params.get(algorithm.n_clusters_param or "")
        if isinstance(k, int) and k > len(prepared.X):
            raise InvalidParameter(
                f"{algorithm.n_clusters_param}={k} is more than the {len(prepared.X)} rows",
                at=["body", "grid", algorithm.n_clusters_param],
            )
    register = spec.register_best
    if register is not None:
        if register.criterion not in CRITERIA[algorithm.name]:
            raise InvalidInput(
                f"criterion {register.criterion!r} is not one of "
                f"{', '.join(CRITERIA[algorithm.name])} for {algorithm.name}",
                at=["body", "register", "criterion"],
            )
        if CRITERIA[algorithm.name][register.criterion] == "elbow":
            # Known now, not after the whole grid has been fitted: an elbow needs a curve.
            ks = {c.params.get(algorithm.n_clusters_param or "") for c in candidates} - {None}
            if len(ks) < 3:
                raise InvalidInput(
                    f"criterion {register.criterion!r} registers the elbow of the inertia "
                    f"curve: the grid needs at least 3 values of {algorithm.n_clusters_param}",
                    at=["body", "register", "criterion"],
                )
    job = jobs.create(
        kind="model_selection",
        model_name=register.name if register else None,
        algorithm=algorithm.name,
        total=len(candidates),
        request={
            "algorithm": algorithm.name,
            "params": spec.params,
            "grid": grid,
            "n_samples": prepared.X.shape[0],
            "n_features": prepared.X.shape[1],
            "register": register.model_dump() if register else None,
        },
    )
    diagrams = spec.silhouette_diagrams and "silhouette" in CRITERIA[algorithm.name]
    tasks = [
        Task(
            fit_candidate,
            {
                "algorithm": algorithm.name,
                "params": {**spec.params, **candidate.params},
                "preprocessing": prepared.preprocessing,
                "X": prepared.X,
                "feature_names": prepared.feature_names,
                "contamination": spec.anomaly.contamination,
                "diagram": diagrams,
            },
        )
        for candidate in candidates
    ]

    def finish(results: list[tuple[FitResult, dict[str, Any] | None]]) -> dict[str, Any]:
        rows = []
        for candidate, (result, diagram) in zip(candidates, results, strict=True):
            row = {"index": candidate.index, "params": candidate.params, "metrics": result.metrics}
            if diagram is not None:
                row["silhouette_diagram"] = diagram
            rows.append(row)
        summary = summarize(algorithm, rows, list(grid))
        report: dict[str, Any] = {
            "algorithm": algorithm.name,
            "n_candidates": len(candidates),
            "candidates": rows,
            "criteria": summary["criteria"],
            "best": summary["best"],
            "elbow": summary.get("elbow"),
            "registered": None,
        }
        if register is not None:
            best = summary["best"].get(register.criterion)
            if best is None:
                raise InvalidInput(
                    f"no candidate has a {register.criterion} to choose by",
                    at=["body", "register", "criterion"],
                )
            result = results[best["index"]][0]
            version = registry.register(
                register.name,
                new_version(
                    PreparedTraining(
                        algorithm, prepared.X, prepared.feature_names, prepared.preprocessing
                    ),
                    result,
                    description=register.description,
                    tags=register.tags,
                ),
                result.model,
            )
            report["registered"] = {
                "model": version.name,
                "version": version.version,
                "criterion": register.criterion,
                "index": best["index"],
            }
        return report

    def done(status: str) -> None:
        metrics.trainings.labels(f"{algorithm.name} (selection)", status).inc()

    return job, runner.submit(job, tasks, finish, on_done=done)
