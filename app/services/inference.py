"""Inference: run an operation of a version on rows; inline when tiny, else in a thread.

The service's own inputs: an ``Operation``, and an ``OperationInput`` (the rows as a matrix, as
``instances`` or as ``records``, and the operation's options). Its errors locate a bad value in
those inputs (``["instances", 0]``, ``["n_samples"]``); a transport says where that is on its
wire (see ``app.api.operation_routes``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.errors import ExplanationUnavailable, InvalidInput, PayloadTooLarge, UnsupportedOperation
from app.ml.anomaly import SCORE_DIRECTION
from app.ml.catalog import Operation
from app.ml.exceptions import InferenceInputError
from app.ml.explain import DEFAULT_TOP_FEATURES, explain, top_contributions
from app.ml.finite import all_finite
from app.ml.model import FittedModel
from app.registry.model_registry import ModelRegistry
from app.registry.records import ModelVersion
from app.services.rows import instances_to_array, named_columns_to_array, records_to_array
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class OperationInput:
    """An operation's input. Rows come as exactly one of ``matrix`` (already float64: a
    transport's fast parser or a binary body), ``instances`` or ``records``; none for ``sample``
    and for ``bic``/``aic`` on the training set. ``columns`` names the matrix's columns (a CSV
    header): for a model with feature names they are mapped to its features as records' keys
    are, else the columns are taken in order. The rest are the options of ``anomalies``
    (``threshold`` or ``contamination``, ``explain``, ``top_features``) and of ``sample``."""

    matrix: np.ndarray | None = None
    instances: Sequence[Sequence[float]] | None = None
    records: Sequence[Mapping[str, float]] | None = None
    threshold: float | None = None
    contamination: float | None = None
    explain: bool = False
    top_features: int | None = None
    n_samples: int = 1
    random_state: int | None = None
    columns: Sequence[str] | None = None

    @property
    def has_rows(self) -> bool:
        return not (self.matrix is None and self.instances is None and self.records is None)

    @property
    def row_count(self) -> int:
        rows = self.matrix if self.matrix is not None else (self.records or self.instances or ())
        return len(rows)


NO_INPUT = OperationInput()


def check_supported(version: ModelVersion, operation: str) -> None:
    if operation not in version.operations:
        raise UnsupportedOperation(
            f"{version.algorithm} does not support {str(operation)!r}; "
            f"it supports: {', '.join(version.operations)}",
            extra={"supported": version.operations},
        )


def rows_of(version: ModelVersion, given: OperationInput, settings: Settings) -> np.ndarray:
    """The input's rows as a matrix of the model's width, within the row limit."""
    count = given.row_count
    if count > settings.max_inference_rows:
        raise PayloadTooLarge(
            f"{count} rows is more than the {settings.max_inference_rows} one request accepts "
            "(LLOYD_MAX_INFERENCE_ROWS); split the batch"
        )
    if given.records is not None:
        if version.feature_names is None:
            raise InvalidInput(
                f"{version.label} was trained without feature names: post 'instances'",
                at=["records"],
            )
        X, _ = records_to_array(given.records, feature_names=version.feature_names, loc=["records"])
        return X
    X = (
        given.matrix
        if given.matrix is not None
        else instances_to_array(given.instances or [], loc=["instances"])
    )
    if given.columns is not None and version.feature_names is not None:
        X = named_columns_to_array(
            X, given.columns, feature_names=version.feature_names, loc=["columns"]
        )
    if X.shape[1] != version.n_features:
        raise InvalidInput(
            f"rows have {X.shape[1]} features; {version.label} was trained on {version.n_features}",
            at=["instances", 0],
        )
    return X


def compute(
    model: FittedModel,
    version: ModelVersion,
    operation: Operation,
    X: np.ndarray | None,
    given: OperationInput,
) -> dict[str, Any]:
    """The operation's response fields (numpy arrays left as they are for the JSON writer)."""
    try:
        # Overflow is checked below, on the answer; numpy need not warn about it in the logs.
        with np.errstate(over="ignore", invalid="ignore"):
            result = _compute(model, operation, X, given)
    except InferenceInputError as exc:
        raise InvalidInput(f"{exc} ({version.label})") from exc
    for field, value in result.items():
        # Finite inputs near the float64 limit can overflow inside the model (a squared
        # distance, a density): refuse them rather than answer null where a number is promised.
        if not _finite(value):
            raise InvalidInput(
                f"the rows overflow float64 in {operation} ({field} is not finite): "
                f"rescale the features ({version.label})",
                at=["instances" if X is not None else "n_samples"],
            )
    return result


def _finite(value: Any) -> bool:
    """False for a float, or an array of floats, holding NaN or an infinity. Labels and flags
    are integers and booleans: always finite."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind != "f" or all_finite(value)
    return not isinstance(value, float) or math.isfinite(value)


def _compute(
    model: FittedModel, operation: Operation, X: np.ndarray | None, given: OperationInput
) -> dict[str, Any]:
    if operation == "sample":
        instances, components = model.sample(given.n_samples, given.random_state)
        return {"instances": instances, "components": components}
    if X is None:  # every other operation has rows (see perform)
        raise ValueError(f"{operation!r} takes rows")
    if operation == "predict":
        return {"labels": model.predict(X)}
    if operation == "predict_proba":
        proba, classes = model.predict_proba(X)
        return {"probabilities": proba, "classes": classes}
    if operation == "transform":
        return {"distances": model.transform(X)}
    if operation == "score_samples":
        return {"scores": model.score_samples(X)}
    if operation == "score":
        return {"score": model.score(X), "n_samples": len(X)}
    if operation == "anomalies":
        return _anomalies(model, X, given)
    if operation in ("bic", "aic"):
        value = model.bic(X) if operation == "bic" else model.aic(X)
        return {operation: value, "n_samples": len(X)}
    raise ValueError(f"unknown operation {operation!r}")


def _anomalies(model: FittedModel, X: np.ndarray, given: OperationInput) -> dict[str, Any]:
    scores = model.anomaly_scores(X)
    if given.threshold is not None:
        threshold, source = given.threshold, "threshold"
    elif given.contamination is not None:
        threshold, source = model.anomaly.threshold_for(given.contamination), "contamination"
    else:
        threshold, source = model.anomaly.threshold, "stored"
    contamination = (
        given.contamination
        if source == "contamination"
        else (model.anomaly.contamination if source == "stored" else None)
    )
    answer = {
        "anomaly_scores": scores,
        "is_anomaly": scores > threshold,
        "percentiles": model.anomaly.percentiles(scores),
        "threshold": threshold,
        "threshold_source": source,
        "contamination": contamination,
        "score_direction": SCORE_DIRECTION,
    }
    if given.explain:
        try:
            explanation = explain(model, X)
        except ValueError as exc:
            raise ExplanationUnavailable(
                f"this version cannot explain its scores ({exc}); retrain it to get explanations"
            ) from exc
        answer["explanation"] = {
            "method": explanation.method,
            "decomposes": explanation.decomposes,
        }
        answer["contributions"] = top_contributions(
            explanation,
            X,
            feature_names=model.feature_names,
            top=given.top_features or DEFAULT_TOP_FEATURES,
        )
    return answer


class InferenceService:
    """Runs operations of the registry's versions; built once per app, in its lifespan."""

    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def perform(
        self, version: ModelVersion, operation: Operation, given: OperationInput = NO_INPUT
    ) -> dict[str, Any]:
        """Run ``operation``: the answer's fields (numpy arrays left as they are). Work on a
        model already in memory whose size (rows x the model's per-row cost) is within
        ``settings.inline_work_limit`` runs on the event loop: the hop to a thread costs more
        than it. Everything else, loading an artifact included, runs in a thread."""
        check_supported(version, operation)
        answer: dict[str, Any] = {"model": version.name, "version": version.version}
        if operation in (Operation.BIC, Operation.AIC) and not given.has_rows:
            return answer | {
                operation.value: version.metrics[operation.value],
                "n_samples": version.n_samples,
            }
        X, count = self._rows(version, operation, given)
        model = self.registry.cached(version)
        # An explanation scores the rows once more per feature.
        passes = version.n_features + 1 if operation == Operation.ANOMALIES and given.explain else 1
        limit = self.settings.inline_work_limit
        if model is not None and count * passes * model.cost_per_row <= limit:
            return answer | compute(model, version, operation, X, given)

        def in_thread() -> dict[str, Any]:
            return compute(self.registry.load(version), version, operation, X, given)

        return answer | await run_in_threadpool(in_thread)

    def _rows(
        self, version: ModelVersion, operation: Operation, given: OperationInput
    ) -> tuple[np.ndarray | None, int]:
        """The rows as a matrix (None for ``sample``) and how many rows the work is."""
        if operation != Operation.SAMPLE:
            X = rows_of(version, given, self.settings)
            return X, len(X)
        if given.n_samples > self.settings.max_sample_rows:
            raise InvalidInput(
                f"n_samples={given.n_samples} is more than the "
                f"{self.settings.max_sample_rows} allowed (LLOYD_MAX_SAMPLE_ROWS)",
                at=["n_samples"],
            )
        return None, given.n_samples
