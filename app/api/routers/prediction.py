"""Prediction router: predict, predict_proba, transform."""

from fastapi import APIRouter

from app.api.operation_routes import add_operation
from app.api.schemas import InferenceRequest, PredictOut, PredictProbaOut, TransformOut

router = APIRouter(tags=["prediction"])

add_operation(
    router,
    "predict",
    body_model=InferenceRequest,
    response_model=PredictOut,
    description="Cluster label per row, exactly scikit-learn's `predict`. `-1` is noise "
    "(DBSCAN: farther than `max_distance` from every core sample).",
)
add_operation(
    router,
    "predict_proba",
    body_model=InferenceRequest,
    response_model=PredictProbaOut,
    description="Soft clustering: per row, the probability of each class in `classes` "
    "(mixtures: component responsibilities; DBSCAN: vote shares of the nearest core samples).",
)
add_operation(
    router,
    "transform",
    body_model=InferenceRequest,
    response_model=TransformOut,
    description="k-means: the distance from each row to every centroid (in the model's space, "
    "after any preprocessing).",
)
