"""The training and selection request bodies translated, once, into the services' own specs
and a float64 matrix of rows."""

from __future__ import annotations

import numpy as np

from app.api.schemas import ModelSelectionRequest, Rows, TrainRequest
from app.errors import InvalidInput
from app.services.rows import instances_to_array, named_columns_to_array, records_to_array
from app.services.selection import RegisterSpec, SelectionSpec
from app.services.training import TrainSpec, refuse_nul


def _rows(
    data: Rows,
    feature_names: list[str] | None,
    rows: np.ndarray | None,
    columns: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """The rows (``rows`` when the request parser already read them from a ``.npy`` or CSV
    body) and their feature names, checked against each other. A CSV header's ``columns`` name
    the features as records' keys do: in ``feature_names``' order when those are given too."""
    names: list[str] | None
    if columns is not None and rows is not None:
        X, names = _named_rows(rows, columns, feature_names)
    elif rows is not None or data.records is None:
        X, names = _positional_rows(data, feature_names, rows)
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


def _positional_rows(
    data: Rows, feature_names: list[str] | None, rows: np.ndarray | None
) -> tuple[np.ndarray, list[str] | None]:
    """Rows whose columns are in order (``instances``, or a body of rows without a header),
    named by ``feature_names`` when given."""
    X = (
        rows
        if rows is not None
        else instances_to_array(data.instances or [], loc=["body", "data", "instances"])
    )
    if feature_names is not None and len(feature_names) != X.shape[1]:
        # With a .npy or CSV body, the other fields came in the Lloyd-Request header.
        where = ["body"] if rows is None else ["header", "lloyd-request"]
        raise InvalidInput(
            f"{len(feature_names)} feature_names for rows of {X.shape[1]} values",
            at=[*where, "feature_names"],
        )
    return X, feature_names


def _named_rows(
    rows: np.ndarray, columns: tuple[str, ...], feature_names: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Rows whose columns a CSV header names: the header gives the feature names, or, when
    ``feature_names`` are given too, the same names in their order."""
    if feature_names is None:
        return rows, list(columns)
    X = named_columns_to_array(rows, columns, feature_names=feature_names, loc=["body", "columns"])
    return X, feature_names


def training_input(
    request: TrainRequest, rows: np.ndarray | None, columns: tuple[str, ...] | None = None
) -> tuple[TrainSpec, np.ndarray]:
    """``columns``: the rows' names from a CSV header (see ``_rows``)."""
    X, names = _rows(request.data, request.feature_names, rows, columns)
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
    request: ModelSelectionRequest,
    rows: np.ndarray | None,
    columns: tuple[str, ...] | None = None,
) -> tuple[SelectionSpec, np.ndarray]:
    X, names = _rows(request.data, request.feature_names, rows, columns)
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
