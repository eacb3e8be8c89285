"""Scoring router: score_samples, score, anomalies, sample, bic, aic."""

from fastapi import APIRouter

from app.api.operation_routes import add_operation
from app.api.schemas import (
    AicOut,
    AnomaliesOut,
    AnomaliesRequest,
    BicOut,
    CriterionRequest,
    InferenceRequest,
    SampleOut,
    SampleRequest,
    ScoreOut,
    ScoreSamplesOut,
)

router = APIRouter(tags=["scoring"])

add_operation(
    router,
    "score_samples",
    body_model=InferenceRequest,
    response_model=ScoreSamplesOut,
    description="scikit-learn's `score_samples`: the log-density of each row for mixtures. "
    "Higher is more normal.",
)
add_operation(
    router,
    "score",
    body_model=InferenceRequest,
    response_model=ScoreOut,
    description="scikit-learn's `score`: minus the inertia for k-means, the mean "
    "log-likelihood per row for mixtures.",
)
add_operation(
    router,
    "anomalies",
    body_model=AnomaliesRequest,
    response_model=AnomaliesOut,
    description="Anomaly scores (higher is more anomalous: distance to the nearest centroid, "
    "to the nearest DBSCAN core sample, or negative log-density), `is_anomaly` against the "
    "threshold stored at training (or the one a `contamination` or `threshold` in the request "
    "gives), and each row's percentile among the training rows.",
)
add_operation(
    router,
    "sample",
    body_model=SampleRequest,
    response_model=SampleOut,
    body_optional=True,
    description="Draw rows from a mixture, in the original feature space (back through the "
    "preprocessing), with the component each came from.",
)
add_operation(
    router,
    "bic",
    body_model=CriterionRequest,
    response_model=BicOut,
    body_optional=True,
    description="Bayesian information criterion on the posted rows; with no body, the "
    "training-set value.",
)
add_operation(
    router,
    "aic",
    body_model=CriterionRequest,
    response_model=AicOut,
    body_optional=True,
    description="Akaike information criterion on the posted rows; with no body, the "
    "training-set value.",
)
