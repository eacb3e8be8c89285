"""Training: turn a TrainRequest into a fitted, stored, immutable model version."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import scipy
import sklearn

import app
from app.api.schemas import TrainRequest
from app.errors import InvalidInput, LloydError, PayloadTooLarge, UnknownAlgorithm
from app.jobs.runner import JobHandle, JobRunner, Task
from app.ml.catalog import ALGORITHMS, Algorithm
from app.ml.fitting import FitResult
from app.ml.preprocessing import build_preprocessor
from app.observability import ServiceMetrics
from app.registry.job_store import JobRecord, JobStore
from app.registry.model_registry import ModelRegistry
from app.registry.records import NewVersion
from app.services.fitting_tasks import fit_errors, fit_for_training
from app.services.rows import instances_to_array, records_to_array
from app.settings import Settings


def library_versions() -> dict[str, str]:
    return {
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "joblib": joblib.__version__,
        "python": platform.python_version(),
        "lloyd": app.__version__,
    }


def resolve_algorithm(name: str) -> Algorithm:
    algorithm = ALGORITHMS.get(name)
    if algorithm is None:
        raise UnknownAlgorithm(
            f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}",
            at=["body", "algorithm"],
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


def training_matrix(
    spec: TrainRequest, settings: Settings, rows: np.ndarray | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """The training rows (``rows`` when the request parser already read them from a ``.npy``
    body) and their feature names, checked against each other and the limits."""
    if rows is not None or spec.data.records is None:
        X = (
            rows
            if rows is not None
            else instances_to_array(spec.data.instances or [], loc=["data", "instances"])
        )
        names = spec.feature_names
        if names is not None and len(names) != X.shape[1]:
            # With a .npy body, the other fields came in the Lloyd-Request header.
            where = ["body"] if rows is None else ["header", "lloyd-request"]
            raise InvalidInput(
                f"{len(names)} feature_names for rows of {X.shape[1]} values",
                at=[*where, "feature_names"],
            )
    else:
        X, names = records_to_array(
            spec.data.records, feature_names=spec.feature_names, loc=["data", "records"]
        )
    if names is not None and len(set(names)) != len(names):
        raise InvalidInput(
            "feature_names must be unique",
            at=["body", "feature_names"],
        )
    for index, name in enumerate(names or []):
        given = spec.feature_names is not None
        refuse_nul(name, ["body", "feature_names", index] if given else ["body", "data", "records"])
    if X.size > settings.max_training_cells:
        raise PayloadTooLarge(
            f"{X.shape[0]} rows x {X.shape[1]} features is more than the "
            f"{settings.max_training_cells} cells one training accepts (LLOYD_MAX_TRAINING_CELLS)"
        )
    return X, names


@dataclass(frozen=True)
class PreparedTraining:
    """A training request checked in the API process, before any worker is started."""

    algorithm: Algorithm
    X: np.ndarray
    feature_names: list[str] | None
    preprocessing: list[dict[str, Any]]


def prepare(
    spec: TrainRequest, settings: Settings, rows: np.ndarray | None = None
) -> PreparedTraining:
    """Every check that needs no fit: algorithm, hyperparameters, preprocessing, rows, text."""
    algorithm = resolve_algorithm(spec.algorithm)
    X, feature_names = training_matrix(spec, settings, rows)
    check_text(
        name=spec.name,
        description=spec.description,
        tags=spec.tags,
        settings=settings,
        at=["body"],
    )
    preprocessing = [step.model_dump() for step in spec.preprocessing]
    with fit_errors(algorithm.name):
        algorithm.build(spec.params)
        build_preprocessor(preprocessing)
    return PreparedTraining(algorithm, X, feature_names, preprocessing)


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


def start_training(
    *,
    registry: ModelRegistry,
    jobs: JobStore,
    runner: JobRunner,
    spec: TrainRequest,
    settings: Settings,
    metrics: ServiceMetrics,
    rows: np.ndarray | None = None,
) -> tuple[JobRecord, JobHandle]:
    """Check ``spec``, then fit it in a worker process as a job whose result is the next version
    of ``spec.name``. Returns at once; the handle's ``done`` is set when the job ends. ``rows``:
    the training rows when they came as a ``.npy`` body (``spec.data`` is then empty)."""
    try:
        prepared = prepare(spec, settings, rows)
    except LloydError:
        if spec.algorithm in ALGORITHMS:
            metrics.trainings.labels(spec.algorithm, "failed").inc()
        raise
    algorithm = prepared.algorithm.name
    job = jobs.create(
        kind="training",
        model_name=spec.name,
        algorithm=algorithm,
        total=1,
        request={
            "name": spec.name,
            "algorithm": algorithm,
            "params": spec.params,
            "n_samples": prepared.X.shape[0],
            "n_features": prepared.X.shape[1],
        },
    )
    task = Task(
        fit_for_training,
        {
            "algorithm": algorithm,
            "params": spec.params,
            "preprocessing": prepared.preprocessing,
            "X": prepared.X,
            "feature_names": prepared.feature_names,
            "contamination": spec.anomaly.contamination,
            "refit_without_outliers": spec.anomaly.refit_without_outliers,
        },
    )

    outcome: dict[str, Any] = {}

    def finish(results: list[FitResult]) -> dict[str, Any]:
        result = results[0]
        metrics.training_duration.labels(algorithm).observe(result.training_seconds)
        version = registry.register(
            spec.name,
            new_version(prepared, result, description=spec.description, tags=spec.tags),
            result.model,
        )
        outcome["version"] = version
        return {"model": version.name, "version": version.version}

    def done(status: str) -> None:
        metrics.trainings.labels(algorithm, status).inc()

    return job, runner.submit(job, [task], finish, on_done=done, outcome=outcome)
