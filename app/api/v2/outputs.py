"""The output tensors a version offers on the Open Inference Protocol, as one table: each names
the Lloyd operation that computes it and the field of that operation's answer it carries.

A request asks for outputs by name; the operations behind them run once each, through the
inference service, and each output is one field of an answer. ``predict`` and
``predict_proba`` are the names, shapes and meanings of MLServer's scikit-learn runtime: a
per-row result of one value is ``[n, 1]`` (as MLServer's codec sends it), of ``k`` values
``[n, k]``; a single number is ``[1]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.errors import InvalidInput
from app.ml.catalog import Operation
from app.registry.records import ModelVersion

Datatype = Literal["BOOL", "INT64", "FP64"]
# How an output's values are laid out: one per row ([n, 1]), k per row ([n, k]), one per
# class ([k]) or a single number ([1]).
Layout = Literal["row", "rows_by_class", "class", "scalar"]


@dataclass(frozen=True)
class Output:
    """One output tensor: ``field`` of the answer of ``operation``."""

    name: str
    operation: Operation
    field: str
    datatype: Datatype
    layout: Layout
    description: str


OUTPUTS: tuple[Output, ...] = (
    Output("predict", Operation.PREDICT, "labels", "INT64", "row", "Cluster label per row."),
    Output(
        "predict_proba",
        Operation.PREDICT_PROBA,
        "probabilities",
        "FP64",
        "rows_by_class",
        "Probability of each class per row.",
    ),
    Output(
        "classes",
        Operation.PREDICT_PROBA,
        "classes",
        "INT64",
        "class",
        "The class label of each column of predict_proba.",
    ),
    Output(
        "transform",
        Operation.TRANSFORM,
        "distances",
        "FP64",
        "rows_by_class",
        "Distance from each row to every centroid.",
    ),
    Output(
        "score_samples",
        Operation.SCORE_SAMPLES,
        "scores",
        "FP64",
        "row",
        "scikit-learn's score_samples (higher is more normal).",
    ),
    Output("score", Operation.SCORE, "score", "FP64", "scalar", "scikit-learn's score."),
    Output(
        "anomaly_scores",
        Operation.ANOMALIES,
        "anomaly_scores",
        "FP64",
        "row",
        "Anomaly score per row (higher is more anomalous).",
    ),
    Output(
        "is_anomaly",
        Operation.ANOMALIES,
        "is_anomaly",
        "BOOL",
        "row",
        "Whether the row scores above the threshold.",
    ),
    Output(
        "percentiles",
        Operation.ANOMALIES,
        "percentiles",
        "FP64",
        "row",
        "Share (0-100) of training rows scoring lower.",
    ),
    Output("bic", Operation.BIC, "bic", "FP64", "scalar", "Bayesian information criterion."),
    Output("aic", Operation.AIC, "aic", "FP64", "scalar", "Akaike information criterion."),
)
BY_NAME = {output.name: output for output in OUTPUTS}
# The options of the anomalies outputs (the request's parameters `contamination`, `threshold`).
ANOMALY_OUTPUTS = tuple(o.name for o in OUTPUTS if o.operation == Operation.ANOMALIES)


def outputs_of(version: ModelVersion) -> list[Output]:
    """The outputs ``version`` offers: those of the operations its algorithm supports."""
    return [output for output in OUTPUTS if output.operation in version.operations]


def default_output(version: ModelVersion) -> Output:
    """The output of a request that names none: ``predict`` (as MLServer answers), or, for a
    detector, which has no labels, ``is_anomaly`` (its prediction: inlier or outlier)."""
    return BY_NAME["predict" if Operation.PREDICT in version.operations else "is_anomaly"]


def requested(version: ModelVersion, names: list[str]) -> list[Output]:
    """The outputs a request names, in its order; 400 for a name ``version`` does not offer
    (or one named twice)."""
    offered = {output.name: output for output in outputs_of(version)}
    chosen: list[Output] = []
    for index, name in enumerate(names):
        if name not in offered:
            raise InvalidInput(
                f"{version.label} ({version.algorithm}) has no output {name!r}; "
                f"its outputs: {', '.join(offered)}",
                at=["body", "outputs", index, "name"],
            )
        if offered[name] in chosen:
            raise InvalidInput(
                f"output {name!r} is requested twice", at=["body", "outputs", index, "name"]
            )
        chosen.append(offered[name])
    return chosen


def class_count(version: ModelVersion) -> int:
    """How many clusters (components) the version has: -1 where its metrics do not say."""
    sizes = version.metrics.get("cluster_sizes")
    return len(sizes) if isinstance(sizes, list) and sizes else -1


def metadata_shape(output: Output, version: ModelVersion) -> list[int]:
    """The output's shape as model metadata states it (-1: as many as the request's rows)."""
    if output.layout == "row":
        return [-1, 1]
    if output.layout == "rows_by_class":
        return [-1, class_count(version)]
    if output.layout == "class":
        return [class_count(version)]
    return [1]
