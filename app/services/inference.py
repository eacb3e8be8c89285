"""Inference: run an operation of a version on posted rows; inline when tiny, else in a thread."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.api.schemas import AnomaliesRequest, InferenceRequest, Rows, SampleRequest
from app.errors import ExplanationUnavailable, InvalidInput, PayloadTooLarge, UnsupportedOperation
from app.ml.anomaly import SCORE_DIRECTION
from app.ml.exceptions import InferenceInputError
from app.ml.explain import DEFAULT_TOP_FEATURES, explain, top_contributions
from app.ml.finite import all_finite
from app.ml.model import FittedModel
from app.registry.model_registry import ModelRegistry
from app.registry.records import ModelVersion
from app.services.rows import instances_to_array, records_to_array
from app.settings import Settings


def check_supported(version: ModelVersion, operation: str) -> None:
    if operation not in version.operations:
        raise UnsupportedOperation(
            f"{version.algorithm} does not support {operation!r}; "
            f"it supports: {', '.join(version.operations)}",
            extra={"supported": version.operations},
        )


def rows_of(
    version: ModelVersion,
    body: Rows,
    settings: Settings,
    rows: np.ndarray | None = None,
    rows_at: tuple[str, ...] = ("instances",),
) -> np.ndarray:
    """The posted rows as a matrix of the model's width, within the row limit. ``rows``: the
    matrix the request parser already read (JSON fast path or ``.npy``), if it did."""
    if rows is not None:
        count = len(rows)
    else:
        count = len(body.records if body.records is not None else body.instances or [])
    if count > settings.max_inference_rows:
        raise PayloadTooLarge(
            f"{count} rows is more than the {settings.max_inference_rows} one request accepts "
            "(LLOYD_MAX_INFERENCE_ROWS); split the batch"
        )
    if body.records is not None:
        if version.feature_names is None:
            raise InvalidInput(
                f"{version.label} was trained without feature names: post 'instances'",
                at=["body", "records"],
            )
        X, _ = records_to_array(body.records, feature_names=version.feature_names, loc=["records"])
        return X
    X = rows if rows is not None else instances_to_array(body.instances or [], loc=["instances"])
    if X.shape[1] != version.n_features:
        raise InvalidInput(
            f"rows have {X.shape[1]} features; {version.label} was trained on {version.n_features}",
            at=["body", *rows_at, 0],
        )
    return X


def compute(
    model: FittedModel, version: ModelVersion, operation: str, X: np.ndarray | None, body: Any
) -> dict[str, Any]:
    """The operation's response fields (numpy arrays left as they are for the JSON writer)."""
    try:
        # Overflow is checked below, on the answer; numpy need not warn about it in the logs.
        with np.errstate(over="ignore", invalid="ignore"):
            result = _compute(model, operation, X, body)
    except InferenceInputError as exc:
        raise InvalidInput(f"{exc} ({version.label})") from exc
    for field, value in result.items():
        # Finite inputs near the float64 limit can overflow inside the model (a squared
        # distance, a density): refuse them rather than answer null where a number is promised.
        if not _finite(value):
            raise InvalidInput(
                f"the rows overflow float64 in {operation} ({field} is not finite): "
                f"rescale the features ({version.label})",
                at=["body", "instances" if X is not None else "n_samples"],
            )
    return result


def _finite(value: Any) -> bool:
    """False for a float, or an array of floats, holding NaN or an infinity. Labels and flags
    are integers and booleans: always finite."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind != "f" or all_finite(value)
    return not isinstance(value, float) or math.isfinite(value)


def _compute(model: FittedModel, operation: str, X: np.ndarray | None, body: Any) -> dict[str, Any]:
    if operation == "sample":
        instances, components = model.sample(body.n_samples, body.random_state)
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
        return _anomalies(model, X, body)
    if operation in ("bic", "aic"):
        value = model.bic(X) if operation == "bic" else model.aic(X)
        return {operation: value, "n_samples": len(X)}
    raise ValueError(f"unknown operation {operation!r}")


def _anomalies(model: FittedModel, X: np.ndarray, body: AnomaliesRequest) -> dict[str, Any]:
    scores = model.anomaly_scores(X)
    if body.threshold is not None:
        threshold, source = body.threshold, "threshold"
    elif body.contamination is not None:
        threshold, source = model.anomaly.threshold_for(body.contamination), "contamination"
    else:
        threshold, source = model.anomaly.threshold, "stored"
    contamination = (
        body.contamination
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
    if body.explain:
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
            top=body.top_features or DEFAULT_TOP_FEATURES,
        )
    return answer


async def perform(
    *,
    registry: ModelRegistry,
    version: ModelVersion,
    operation: str,
    body: InferenceRequest | SampleRequest | None,
    settings: Settings,
    rows: np.ndarray | None = None,
    rows_at: tuple[str, ...] = ("instances",),
) -> dict[str, Any]:
    """Run ``operation``. Work on a model already in memory whose size (rows x the model's
    per-row cost) is within ``settings.inline_work_limit`` runs on the event loop: the hop to a
    thread costs more than it. Everything else, loading an artifact included, runs in a thread."""
    check_supported(version, operation)
    answer: dict[str, Any] = {"model": version.name, "version": version.version}
    if operation in ("bic", "aic") and body is None:
        return answer | {operation: version.metrics[operation], "n_samples": version.n_samples}
    if operation == "sample":
        body = body or SampleRequest()
        assert isinstance(body, SampleRequest)
        if body.n_samples > settings.max_sample_rows:
            raise InvalidInput(
                f"n_samples={body.n_samples} is more than the {settings.max_sample_rows} allowed "
                "(LLOYD_MAX_SAMPLE_ROWS)",
                at=["body", "n_samples"],
            )
        X, count = None, body.n_samples
    else:
        assert isinstance(body, Rows)
        X = rows_of(version, body, settings, rows, rows_at)
        count = len(X)
    model = registry.cached(version)
    # An explanation scores the rows once more per feature.
    passes = version.n_features + 1 if isinstance(body, AnomaliesRequest) and body.explain else 1
    if model is not None and count * passes * model.cost_per_row <= settings.inline_work_limit:
        return answer | compute(model, version, operation, X, body)

    def in_thread() -> dict[str, Any]:
        return compute(registry.load(version), version, operation, X, body)

    return answer | await run_in_threadpool(in_thread)
