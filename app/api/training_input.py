"""The training and selection request bodies translated, once, into the services' own specs
and a float64 matrix of rows."""

from __future__ import annotations

import numpy as np

from app.api.schemas import ModelSelectionRequest, Rows, TrainRequest
from app.errors import InvalidInput
from app.services.rows import instances_to_array, records_to_array
from app.services.selection import RegisterSpec, SelectionSpec
from app.services.training import TrainSpec, refuse_nul


def _rows(
    data: Rows, feature_names: list[str] | None, rows: np.ndarray | None
) -> tuple[np.ndarray, list[str] | None]:
    """The rows (``rows`` when the request parser already read them from a ``.npy`` body) and
    their feature names, checked against each other."""
    if rows is not None or data.records is None:
        X = (
            rows
            if rows is not None
            else instances_to_array(data.instances or [], loc=["body", "data", "instances"])
        )
        names = feature_names
        if names is not None and len(names) != X.shape[1]:
            # With a .npy body, the other fields came in the Lloyd-Request header.
            where = ["body"] if rows is None else ["header", "lloyd-request"]
            raise InvalidInput(
                f"{len(names)} feature_names for rows of {X.shape[1]} values",
                at=[*where, "feature_names"],
            )
    else:
        X, names = records_to_array(
            data.records, feature_names=feature_names, loc=["body", "data", "records"]
        )
    if names is not None and len(set(names)) != len(names):
        raise InvalidInput("feature_names must be unique", at=["body", "feature_names"])
    for index, name in enumerate(names or []):
        given = feature_names is not None
        refuse_nul(name, ["body", "feature_names", index] if given else ["body", "data", "records"])
    return X, names


def training_input(request: TrainRequest, rows: np.ndarray | None) -> tuple[TrainSpec, np.ndarray]:
    X, names = _rows(request.data, request.feature_names, rows)
    spec = TrainSpec(
        name=request.name,
        algorithm=request.algorithm,
        params=request.params,
        preprocessing=[step.model_dump() for step in request.preprocessing],
        contamination=request.anomaly.contamination,
        refit_without_outliers=request.anomaly.refit_without_outliers,
        feature_names=names,
        description=request.description,
        tags=request.tags,
        retryable=request.retryable,
    )
    return spec, X


def selection_input(
    request: ModelSelectionRequest, rows: np.ndarray | None
) -> tuple[SelectionSpec, np.ndarray]:
    X, names = _rows(request.data, request.feature_names, rows)
    register = request.register_best
    spec = SelectionSpec(
        algorithm=request.algorithm,
        grid={
            name: values.model_dump() if hasattr(values, "model_dump") else values
            for name, values in request.grid.items()
        },
        params=request.params,
        preprocessing=[step.model_dump() for step in request.preprocessing],
        contamination=request.anomaly.contamination,
        feature_names=names,
        silhouette_diagrams=request.silhouette_diagrams,
        register=RegisterSpec(
            name=register.name,
            criterion=register.criterion,
            description=register.description,
            tags=register.tags,
        )
        if register is not None
        else None,
        retryable=request.retryable,
    )
    return spec, X
