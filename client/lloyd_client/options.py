"""The optional keyword arguments of ``train`` and ``select``, typed once for both clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict


class TrainOptions(TypedDict, total=False):
    """``train(name, algorithm, X, **options)``: everything the API's ``POST /v1/models`` takes
    besides the rows; a key left out takes the server's default."""

    params: Mapping[str, Any]
    """Hyperparameters (the algorithm's ``params_schema``), e.g. ``{"n_clusters": 3}``."""
    preprocessing: Sequence[Mapping[str, Any]]
    """Steps before the estimator, e.g. ``[{"step": "standard_scaler"}]``."""
    contamination: float
    """Share of training rows the stored anomaly threshold flags (server default 0.02)."""
    refit_without_outliers: bool
    """Fit, drop the training rows above the threshold, fit again on the rest."""
    feature_names: Sequence[str]
    """Column names; a DataFrame's columns when left out."""
    description: str
    tags: Mapping[str, str]
    retryable: bool
    """Whether another replica may run the job again should the one running it die."""


class SelectOptions(TypedDict, total=False):
    """``select(algorithm, X, grid, **options)``: ``POST /v1/model-selection`` besides the
    rows and the grid."""

    params: Mapping[str, Any]
    """Hyperparameters every candidate shares."""
    preprocessing: Sequence[Mapping[str, Any]]
    contamination: float
    refit_without_outliers: bool
    feature_names: Sequence[str]
    silhouette_diagrams: bool
    """k-means: each candidate's silhouette diagram data (server default true)."""
    register: str
    """Register the best candidate under ``criterion`` as a new version of this model."""
    criterion: str
    """Which best to register: ``bic``, ``aic``, ``silhouette``, ``inertia`` (the elbow), ..."""
    description: str
    """Of the registered version."""
    tags: Mapping[str, str]
    """Of the registered version."""
    retryable: bool
