"""The fits that run inside worker processes (module-level, so they can be pickled there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from app.errors import InvalidParameter, PayloadTooLarge, TrainingFailed
from app.ml.catalog import ALGORITHMS
from app.ml.exceptions import FitError, HyperparameterError, TrainingRowsError
from app.ml.fitting import FitResult, fit_model
from app.ml.selection import evaluate_candidate


@contextmanager
def fit_errors(algorithm: str) -> Iterator[None]:
    """The ml layer's errors as the service's: a bad hyperparameter (located in the spec), more
    rows than the algorithm takes (located at the rows, ``data``), or data that cannot be
    fitted."""
    try:
        yield
    except HyperparameterError as exc:
        where: list[str | int] = ["params", exc.parameter]
        if exc.parameter.startswith(("preprocessing", "grid")):
            where = [*exc.parameter.split(".")]
        raise InvalidParameter(exc.message, at=where) from exc
    except TrainingRowsError as exc:
        raise PayloadTooLarge(
            str(exc),
            at=["data"],
            extra={"max_training_rows": exc.limit, "n_rows": exc.n_rows},
        ) from exc
    except FitError as exc:
        raise TrainingFailed(f"{algorithm} could not be fitted: {exc}") from exc


def fit_for_training(
    *,
    algorithm: str,
    params: dict[str, Any],
    preprocessing: list[dict[str, Any]],
    X: np.ndarray,
    feature_names: list[str] | None,
    contamination: float,
    refit_without_outliers: bool,
) -> FitResult:
    with fit_errors(algorithm):
        return fit_model(
            algorithm=ALGORITHMS[algorithm],
            params=params,
            preprocessing=preprocessing,
            X=X,
            feature_names=feature_names,
            contamination=contamination,
            refit_without_outliers=refit_without_outliers,
        )


def fit_candidate(
    *,
    algorithm: str,
    params: dict[str, Any],
    preprocessing: list[dict[str, Any]],
    X: np.ndarray,
    feature_names: list[str] | None,
    contamination: float,
    diagram: bool,
) -> tuple[FitResult, dict[str, Any] | None]:
    with fit_errors(algorithm):
        return evaluate_candidate(
            algorithm=ALGORITHMS[algorithm],
            params=params,
            preprocessing=preprocessing,
            X=X,
            feature_names=feature_names,
            contamination=contamination,
            diagram=diagram,
        )
