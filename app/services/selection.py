"""Model selection: check a grid, fit its candidates as one job, report and register the best;
the same job rebuilt from its saved spec and rows by any replica."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from app.errors import InvalidInput, InvalidParameter
from app.jobs.execution import Task
from app.jobs.runner import JobHandle, JobPlan
from app.ml.catalog import Algorithm
from app.ml.fitting import FitResult
from app.ml.selection import CRITERIA, SELECTABLE, Candidate, expand_grid, grid_size, summarize
from app.registry.job_store import JobClaim, JobCompletion, JobRecord, NewJob
from app.services.fitting_tasks import fit_candidate, fit_errors
from app.services.job_service import JobService
from app.services.training import (
    PreparedTraining,
    TrainSpec,
    check_text,
    new_version,
    prepare,
)

SELECTION = "model_selection"


@dataclass(frozen=True)
class RegisterSpec:
    """Register the best candidate under ``criterion`` as a new version of ``name``."""

    name: str
    criterion: str
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectionSpec:
    """One model selection, as the service takes it: everything but the rows."""

    algorithm: str
    grid: dict[str, Any]  # per hyperparameter: a list of values, or {"min", "max", "step"}
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: list[dict[str, Any]] = field(default_factory=list)
    contamination: float = 0.1
    feature_names: list[str] | None = None
    silhouette_diagrams: bool = True
    register: RegisterSpec | None = None
    retryable: bool = True

    def document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> SelectionSpec:
        register = document.get("register")
        return cls(
            **{k: v for k, v in document.items() if k != "register"},
            register=RegisterSpec(**register) if register is not None else None,
        )

    def as_training(self) -> TrainSpec:
        """The parts of a selection that a training checks the same way."""
        return TrainSpec(
            name=self.register.name if self.register else "model-selection",
            algorithm=self.algorithm,
            params=self.params,
            preprocessing=self.preprocessing,
            contamination=self.contamination,
            feature_names=self.feature_names,
        )


@dataclass(frozen=True)
class PreparedSelection:
    prepared: PreparedTraining
    candidates: list[Candidate]


def _check_algorithm_and_name(service: JobService, spec: SelectionSpec) -> None:
    if spec.algorithm not in SELECTABLE:
        raise InvalidInput(
            f"model selection supports {', '.join(SELECTABLE)}; not {spec.algorithm!r}",
            at=["algorithm"],
        )
    if spec.register is not None:
        check_text(
            name=spec.register.name,
            description=spec.register.description,
            tags=spec.register.tags,
            settings=service.settings,
            at=["register"],
        )


def _candidates(
    service: JobService, spec: SelectionSpec, algorithm: Algorithm, n_rows: int
) -> list[Candidate]:
    size = grid_size(spec.grid)  # before expanding: a huge range must not fill the memory
    if size > service.settings.max_grid_candidates:
        raise InvalidInput(
            f"the grid has {size} candidates; at most {service.settings.max_grid_candidates} "
            "(LLOYD_MAX_GRID_CANDIDATES)",
            at=["grid"],
        )
    with fit_errors(algorithm.name):
        candidates = expand_grid(algorithm, spec.grid)
    for candidate in candidates:
        _check_candidate(spec, algorithm, candidate, n_rows)
    return candidates


def _check_candidate(
    spec: SelectionSpec, algorithm: Algorithm, candidate: Candidate, n_rows: int
) -> None:
    clash = set(candidate.params) & set(spec.params)
    if clash:
        name = sorted(clash)[0]
        raise InvalidParameter(f"{name!r} is both in params and in the grid", at=["grid", name])
    try:
        with fit_errors(algorithm.name):
            algorithm.build({**spec.params, **candidate.params})
    except InvalidParameter as exc:
        bad = exc.errors[0]["loc"][-1] if exc.errors else "grid"
        raise InvalidParameter(exc.detail, at=["grid", bad]) from exc
    k = candidate.params.get(algorithm.n_clusters_param or "")
    if isinstance(k, int) and k > n_rows and algorithm.n_clusters_param is not None:
        raise InvalidParameter(
            f"{algorithm.n_clusters_param}={k} is more than the {n_rows} rows",
            at=["grid", algorithm.n_clusters_param],
        )


def _check_criterion(
    spec: SelectionSpec, algorithm: Algorithm, candidates: list[Candidate]
) -> None:
    register = spec.register
    if register is None:
        return
    if register.criterion not in CRITERIA[algorithm.name]:
        raise InvalidInput(
            f"criterion {register.criterion!r} is not one of "
            f"{', '.join(CRITERIA[algorithm.name])} for {algorithm.name}",
            at=["register", "criterion"],
        )
    if CRITERIA[algorithm.name][register.criterion] == "elbow":
        # Known now, not after the whole grid has been fitted: an elbow needs a curve.
        ks = {c.params.get(algorithm.n_clusters_param or "") for c in candidates} - {None}
        if len(ks) < 3:
            raise InvalidInput(
                f"criterion {register.criterion!r} registers the elbow of the inertia "
                f"curve: the grid needs at least 3 values of {algorithm.n_clusters_param}",
                at=["register", "criterion"],
            )


def prepare_selection(service: JobService, spec: SelectionSpec, X: np.ndarray) -> PreparedSelection:
    """Every check that needs no fit: algorithm, register, rows, grid, criterion."""
    _check_algorithm_and_name(service, spec)
    prepared = prepare(spec.as_training(), X, service.settings)
    candidates = _candidates(service, spec, prepared.algorithm, len(X))
    _check_criterion(spec, prepared.algorithm, candidates)
    return PreparedSelection(prepared, candidates)


def _report(
    spec: SelectionSpec,
    algorithm: Algorithm,
    candidates: list[Candidate],
    results: list[tuple[FitResult, dict[str, Any] | None]],
) -> dict[str, Any]:
    rows = []
    for candidate, (result, diagram) in zip(candidates, results, strict=True):
        row = {"index": candidate.index, "params": candidate.params, "metrics": result.metrics}
        if diagram is not None:
            row["silhouette_diagram"] = diagram
        rows.append(row)
    summary = summarize(algorithm, rows, list(spec.grid))
    return {
        "algorithm": algorithm.name,
        "n_candidates": len(candidates),
        "candidates": rows,
        "criteria": summary["criteria"],
        "best": summary["best"],
        "elbow": summary.get("elbow"),
        "registered": None,
    }


def plan_selection(service: JobService, spec: SelectionSpec, ready: PreparedSelection) -> JobPlan:
    """The job of one selection: every candidate a task, then the report (and the best
    registered) committed in the transaction that marks the job succeeded."""
    prepared, candidates, algorithm = ready.prepared, ready.candidates, ready.prepared.algorithm
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
                "contamination": spec.contamination,
                "diagram": diagrams,
            },
        )
        for candidate in candidates
    ]

    def finish(results: list[Any], claim: JobClaim) -> dict[str, Any]:
        report = _report(spec, algorithm, candidates, results)
        if spec.register is None:
            service.jobs.complete(claim, report)
            return report
        register = spec.register
        best = report["best"].get(register.criterion)
        if best is None:
            raise InvalidInput(
                f"no candidate has a {register.criterion} to choose by",
                at=["register", "criterion"],
            )
        result = results[best["index"]][0]

        def with_registered(version: Any) -> dict[str, Any]:
            report["registered"] = {
                "model": version.name,
                "version": version.version,
                "criterion": register.criterion,
                "index": best["index"],
            }
            return report

        service.registry.register(
            register.name,
            new_version(prepared, result, description=register.description, tags=register.tags),
            result.model,
            completes=JobCompletion(claim, with_registered),
        )
        return report

    def done(status: str) -> None:
        service.metrics.trainings.labels(f"{algorithm.name} (selection)", status).inc()

    return JobPlan(tasks, finish, on_done=done)


def start_selection(
    service: JobService, spec: SelectionSpec, X: np.ndarray
) -> tuple[JobRecord, JobHandle]:
    """Check the grid, then fit every candidate in workers as one job."""
    ready = prepare_selection(service, spec, X)
    algorithm = ready.prepared.algorithm.name
    new = NewJob(
        kind=SELECTION,
        model_name=spec.register.name if spec.register else None,
        algorithm=algorithm,
        total=len(ready.candidates),
        request={
            "algorithm": algorithm,
            "params": spec.params,
            "grid": spec.grid,
            "n_samples": X.shape[0],
            "n_features": X.shape[1],
            "register": asdict(spec.register) if spec.register else None,
        },
        spec=spec.document(),
        retryable=spec.retryable,
    )
    return service.start(new, X, plan_selection(service, spec, ready))


def replan_selection(service: JobService, job: JobRecord, X: np.ndarray) -> JobPlan:
    """The plan of a selection job another replica started, from its saved spec and rows."""
    assert job.spec is not None
    spec = SelectionSpec.from_document(job.spec)
    return plan_selection(service, spec, prepare_selection(service, spec, X))
