"""Training: a TrainSpec and its rows turned into a job whose result is a fitted, stored,
immutable model version; the same job rebuilt from its saved spec and rows by any replica."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import joblib
import numpy as np
import scipy
import sklearn

import app
from app.errors import InvalidInput, LloydError, PayloadTooLarge, UnknownAlgorithm
from app.jobs.execution import Task
from app.jobs.runner import JobHandle, JobPlan
from app.ml.catalog import ALGORITHMS, Algorithm
from app.ml.fitting import FitResult
from app.ml.preprocessing import build_preprocessor
from app.registry.job_store import JobClaim, JobCompletion, JobRecord, NewJob
from app.registry.records import ModelVersion, NewVersion
from app.services.fitting_tasks import fit_errors, fit_for_training
from app.services.job_service import JobService
from app.settings import Settings

TRAINING = "training"


def library_versions() -> dict[str, str]:
    return {
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "joblib": joblib.__version__,
        "python": platform.python_version(),
        "lloyd": app.__version__,
    }


@dataclass(frozen=True)
class TrainSpec:
    """One training, as the service takes it: everything but the rows."""

    name: str
    algorithm: str
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: list[dict[str, Any]] = field(default_factory=list)
    contamination: float = 0.1
    refit_without_outliers: bool = False
    feature_names: list[str] | None = None
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Whether another replica may run the job again if this one dies while it runs (its
    # rows are then kept in the store until the job ends).
    retryable: bool = True

    def document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> TrainSpec:
        return cls(**document)


def resolve_algorithm(name: str) -> Algorithm:
    algorithm = ALGORITHMS.get(name)
    if algorithm is None:
        raise UnknownAlgorithm(
            f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}",
            at=["algorithm"],
        )
    return algorithm


def refuse_nul(text: str, at: list[str | int]) -> None:
    """Text the registry stores may not hold NUL: PostgreSQL refuses it (SQLite would not), so
    it is refused on every database alike."""
    if "\x00" in text:
        raise InvalidInput("text must not contain the NUL character (\\u0000)", at=at)


def check_text(
    *,
    name: str,
    description: str | None,
    tags: dict[str, str],
    settings: Settings,
    at: list[str | int],
) -> None:
    """The configured limits on what a version stores as text (the schema's are the ceilings);
    NUL refused everywhere."""
    if len(name) > settings.max_name_length:
        raise InvalidInput(
            f"the name has {len(name)} characters; at most {settings.max_name_length} "
            "(LLOYD_MAX_NAME_LENGTH)",
            at=[*at, "name"],
        )
    description = description or ""
    if len(description) > settings.max_description_length:
        raise InvalidInput(
            f"the description has {len(description)} characters; at most "
            f"{settings.max_description_length} (LLOYD_MAX_DESCRIPTION_LENGTH)",
            at=[*at, "description"],
        )
    refuse_nul(description, [*at, "description"])
    if len(tags) > settings.max_tags:
        raise InvalidInput(
            f"{len(tags)} tags; at most {settings.max_tags} (LLOYD_MAX_TAGS)", at=[*at, "tags"]
        )
    for key, value in tags.items():
        if len(value) > settings.max_tag_length:
            raise InvalidInput(
                f"tag {key!r} has {len(value)} characters; at most {settings.max_tag_length} "
                "(LLOYD_MAX_TAG_LENGTH)",
                at=[*at, "tags", key],
            )
        refuse_nul(key + value, [*at, "tags", key])


def check_rows(X: np.ndarray, settings: Settings) -> None:
    if X.size > settings.max_training_cells:
        raise PayloadTooLarge(
            f"{X.shape[0]} rows x {X.shape[1]} features is more than the "
            f"{settings.max_training_cells} cells one training accepts (LLOYD_MAX_TRAINING_CELLS)"
        )


@dataclass(frozen=True)
class PreparedTraining:
    """A training checked in the API process, before any worker is started."""

    algorithm: Algorithm
    X: np.ndarray
    feature_names: list[str] | None
    preprocessing: list[dict[str, Any]]


def prepare(spec: TrainSpec, X: np.ndarray, settings: Settings) -> PreparedTraining:
    """Every check that needs no fit: algorithm, hyperparameters, preprocessing, rows, text."""
    algorithm = resolve_algorithm(spec.algorithm)
    check_rows(X, settings)
    check_text(
        name=spec.name,
        description=spec.description,
        tags=spec.tags,
        settings=settings,
        at=[],
    )
    with fit_errors(algorithm.name):
        algorithm.build(spec.params)
        build_preprocessor(spec.preprocessing)
        # Before a worker starts: an algorithm whose memory grows with the square of the rows.
        algorithm.check_training_rows(X.shape[0])
    return PreparedTraining(algorithm, X, spec.feature_names, spec.preprocessing)


def new_version(
    prepared: PreparedTraining,
    result: FitResult,
    *,
    description: str | None,
    tags: dict[str, str],
) -> NewVersion:
    return NewVersion(
        algorithm=prepared.algorithm.name,
        params=result.params,
        preprocessing=prepared.preprocessing,
        feature_names=prepared.feature_names,
        n_samples=prepared.X.shape[0],
        n_features=prepared.X.shape[1],
        metrics=result.metrics,
        anomaly=result.model.anomaly.summary,
        operations=list(prepared.algorithm.operations),
        library_versions=library_versions(),
        training_seconds=result.training_seconds,
        description=description,
        tags=tags,
    )


def version_result(version: ModelVersion) -> dict[str, Any]:
    """A training job's result document."""
    return {"model": version.name, "version": version.version}


def plan_training(service: JobService, spec: TrainSpec, prepared: PreparedTraining) -> JobPlan:
    """The job of one training: a fit in a worker, then its version registered in the
    transaction that marks the job succeeded."""
    algorithm = prepared.algorithm.name
    task = Task(
        fit_for_training,
        {
            "algorithm": algorithm,
            "params": spec.params,
            "preprocessing": prepared.preprocessing,
            "X": prepared.X,
            "feature_names": prepared.feature_names,
            "contamination": spec.contamination,
            "refit_without_outliers": spec.refit_without_outliers,
        },
    )

    def finish(results: list[Any], claim: JobClaim) -> ModelVersion:
        result: FitResult = results[0]
        service.metrics.training_duration.labels(algorithm).observe(result.training_seconds)
        return service.registry.register(
            spec.name,
            new_version(prepared, result, description=spec.description, tags=spec.tags),
            result.model,
            completes=JobCompletion(claim, version_result),
        )

    def done(status: str) -> None:
        service.metrics.trainings.labels(algorithm, status).inc()

    return JobPlan([task], finish, on_done=done)


def start_training(
    service: JobService, spec: TrainSpec, X: np.ndarray
) -> tuple[JobRecord, JobHandle]:
    """Check ``spec`` and its rows ``X``, then fit them in a worker as a job whose result is
    the next version of ``spec.name``. Returns at once; the handle's ``done`` is set when the
    job ends, and its ``outcome`` is then the version."""
    try:
        prepared = prepare(spec, X, service.settings)
    except LloydError:
        if spec.algorithm in ALGORITHMS:
            service.metrics.trainings.labels(spec.algorithm, "failed").inc()
        raise
    new = NewJob(
        kind=TRAINING,
        model_name=spec.name,
        algorithm=prepared.algorithm.name,
        total=1,
        request={
            "name": spec.name,
            "algorithm": prepared.algorithm.name,
            "params": spec.params,
            "n_samples": X.shape[0],
            "n_features": X.shape[1],
        },
        spec=spec.document(),
        retryable=spec.retryable,
    )
    return service.start(new, X, plan_training(service, spec, prepared))


def replan_training(service: JobService, job: JobRecord, X: np.ndarray) -> JobPlan:
    """The plan of a training job another replica started, from its saved spec and rows."""
    assert job.spec is not None
    spec = TrainSpec.from_document(job.spec)
    return plan_training(service, spec, prepare(spec, X, service.settings))
