"""Training: turn a TrainRequest into a fitted, stored, immutable model version."""

from __future__ import annotations

import platform

import joblib
import numpy as np
import scipy
import sklearn

import app
from app.api.schemas import TrainRequest
from app.errors import (
    InvalidInput,
    InvalidParameter,
    PayloadTooLarge,
    TrainingFailed,
    UnknownAlgorithm,
)
from app.ml.catalog import ALGORITHMS, Algorithm
from app.ml.exceptions import FitError, HyperparameterError
from app.ml.fitting import fit_model
from app.observability import ServiceMetrics
from app.registry.model_registry import ModelRegistry
from app.registry.records import ModelVersion, NewVersion
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


def training_matrix(spec: TrainRequest, settings: Settings) -> tuple[np.ndarray, list[str] | None]:
    """The training rows and their feature names, checked against each other and the limits."""
    if spec.data.records is not None:
        X, names = records_to_array(
            spec.data.records, feature_names=spec.feature_names, loc=["data", "records"]
        )
    else:
        X = instances_to_array(spec.data.instances or [], loc=["data", "instances"])
        names = spec.feature_names
        if names is not None and len(names) != X.shape[1]:
            raise InvalidInput(
                f"{len(names)} feature_names for rows of {X.shape[1]} values",
                at=["body", "feature_names"],
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


def train(
    *,
    registry: ModelRegistry,
    spec: TrainRequest,
    settings: Settings,
    metrics: ServiceMetrics,
) -> ModelVersion:
    """Fit ``spec`` and register the result as the next version of ``spec.name``. Blocking: call
    it from a worker thread."""
    algorithm = resolve_algorithm(spec.algorithm)
    X, feature_names = training_matrix(spec, settings)
    refuse_nul(spec.description or "", ["body", "description"])
    for key, value in spec.tags.items():
        refuse_nul(key + value, ["body", "tags", key])
    preprocessing = [step.model_dump() for step in spec.preprocessing]
    try:
        result = fit_model(
            algorithm=algorithm,
            params=spec.params,
            preprocessing=preprocessing,
            X=X,
            feature_names=feature_names,
            contamination=spec.anomaly.contamination,
            refit_without_outliers=spec.anomaly.refit_without_outliers,
        )
    except HyperparameterError as exc:
        metrics.trainings.labels(algorithm.name, "failed").inc()
        where = ["body", "params", exc.parameter]
        if exc.parameter.startswith("preprocessing"):
            where = ["body", exc.parameter]
        raise InvalidParameter(exc.message, at=where) from exc
    except FitError as exc:
        metrics.trainings.labels(algorithm.name, "failed").inc()
        raise TrainingFailed(f"{algorithm.name} could not be fitted: {exc}") from exc
    metrics.trainings.labels(algorithm.name, "succeeded").inc()
    metrics.training_duration.labels(algorithm.name).observe(result.training_seconds)
    new = NewVersion(
        algorithm=algorithm.name,
        params=result.params,
        preprocessing=preprocessing,
        feature_names=feature_names,
        n_samples=X.shape[0],
        n_features=X.shape[1],
        metrics=result.metrics,
        anomaly=result.model.anomaly.summary,
        operations=list(algorithm.operations),
        library_versions=library_versions(),
        training_seconds=result.training_seconds,
        description=spec.description,
        tags=spec.tags,
    )
    return registry.register(spec.name, new, result.model)
