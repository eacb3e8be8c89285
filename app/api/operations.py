"""The inference operations of ``/v1``, as one declarative table: each row is what serving and
documenting an operation needs (its body, its answer and which of its fields are per row, the
scope it needs, its OpenAPI text and examples). ``create_app`` builds two routes from each row
(a model's latest version, and a named one) with ``app.api.operation_routes``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from app.api.schemas import (
    AicOut,
    AnomaliesOut,
    AnomaliesRequest,
    BicOut,
    CriterionRequest,
    InferenceRequest,
    PredictOut,
    PredictProbaOut,
    SampleOut,
    SampleRequest,
    ScoreOut,
    ScoreSamplesOut,
    TransformOut,
)
from app.ml.catalog import Operation


@dataclass(frozen=True)
class OperationEntry:
    """One operation as ``/v1`` serves it."""

    operation: Operation
    tag: Literal["prediction", "scoring"]
    body: type[BaseModel]
    answer: type[BaseModel]
    # The answer's per-row fields: a .npy answer's array (one field of a structured array each,
    # in this order); every other field goes to its Lloyd-Response header.
    row_fields: tuple[str, ...]
    description: str
    # No body at all is a request too (sample: one row; bic and aic: the training-set value).
    body_optional: bool = False
    scope: Literal["read", "write"] = "read"
    # The model its documented examples run on, as the `name` parameter's example: one a
    # training example trains (TrainRequest's), with an algorithm that has the operation.
    example_model: str = "line-7"

    @property
    def takes_rows(self) -> bool:
        """Whether the body carries rows (and may therefore be a ``.npy`` array)."""
        return "instances" in self.body.model_fields


OPERATIONS: tuple[OperationEntry, ...] = (
    OperationEntry(
        Operation.PREDICT,
        "prediction",
        InferenceRequest,
        PredictOut,
        ("labels",),
        "Cluster label per row, exactly scikit-learn's `predict`. `-1` is noise (DBSCAN: "
        "farther than `max_distance` from every core sample; agglomerative, spectral, HDBSCAN: "
        "from every clustered training row).",
    ),
    OperationEntry(
        Operation.PREDICT_PROBA,
        "prediction",
        InferenceRequest,
        PredictProbaOut,
        ("probabilities",),
        "Soft clustering: per row, the probability of each class in `classes` (mixtures: "
        "component responsibilities; DBSCAN, agglomerative, spectral, HDBSCAN: vote shares of "
        "the nearest core samples or clustered training rows, with `-1`, noise, as the first "
        "class: a row `predict` calls noise has probability 1 of `-1` and 0 of every cluster, "
        "any other row 0 of `-1`).",
    ),
    OperationEntry(
        Operation.TRANSFORM,
        "prediction",
        InferenceRequest,
        TransformOut,
        ("distances",),
        "k-means: the distance from each row to every centroid; BIRCH: to every subcluster "
        "centre (in the model's space, after any preprocessing).",
        example_model="press-3",
    ),
    OperationEntry(
        Operation.SCORE_SAMPLES,
        "scoring",
        InferenceRequest,
        ScoreSamplesOut,
        ("scores",),
        "scikit-learn's `score_samples`: the log-density of each row for mixtures. Higher is "
        "more normal.",
    ),
    OperationEntry(
        Operation.SCORE,
        "scoring",
        InferenceRequest,
        ScoreOut,
        ("score",),
        "scikit-learn's `score`: minus the inertia for k-means, the mean log-likelihood per row "
        "for mixtures.",
    ),
    OperationEntry(
        Operation.ANOMALIES,
        "scoring",
        AnomaliesRequest,
        AnomaliesOut,
        ("anomaly_scores", "is_anomaly", "percentiles"),
        "Anomaly scores (higher is more anomalous: distance to the nearest centroid, exemplar "
        "or subcluster, to the nearest DBSCAN core sample or clustered training row, or "
        "negative log-density), `is_anomaly` against the threshold stored at training (or the "
        "one a `contamination` or `threshold` in the request gives), and each row's percentile "
        "among the training rows. For DBSCAN, agglomerative, spectral and HDBSCAN the stored "
        "threshold is `max_distance`: a row is an anomaly exactly when `predict` calls it "
        "noise.",
    ),
    OperationEntry(
        Operation.SAMPLE,
        "scoring",
        SampleRequest,
        SampleOut,
        ("instances", "components"),
        "Draw rows from a mixture, in the original feature space (back through the "
        "preprocessing), with the component each came from.",
        body_optional=True,
    ),
    OperationEntry(
        Operation.BIC,
        "scoring",
        CriterionRequest,
        BicOut,
        ("bic",),
        "Bayesian information criterion on the posted rows; with no body, the training-set value.",
        body_optional=True,
    ),
    OperationEntry(
        Operation.AIC,
        "scoring",
        CriterionRequest,
        AicOut,
        ("aic",),
        "Akaike information criterion on the posted rows; with no body, the training-set value.",
        body_optional=True,
    ),
)
