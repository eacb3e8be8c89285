"""Preprocessing steps a client may ask for, built as a scikit-learn Pipeline."""

from __future__ import annotations

from typing import Any

from sklearn.base import TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.ml.exceptions import HyperparameterError

STEPS: dict[str, type[TransformerMixin]] = {
    "standard_scaler": StandardScaler,
    "pca": PCA,
}
# Per step, the options a client may set (the rest stay scikit-learn's defaults).
STEP_OPTIONS: dict[str, frozenset[str]] = {
    "standard_scaler": frozenset({"with_mean", "with_std"}),
    "pca": frozenset({"n_components", "whiten", "svd_solver", "random_state"}),
}


def build_preprocessor(steps: list[dict[str, Any]]) -> Pipeline | None:
    """An unfitted Pipeline for ``steps`` (each ``{"step": name, **options}``), or None."""
    if not steps:
        return None
    built = []
    for index, spec in enumerate(steps):
        options = dict(spec)
        name = options.pop("step", None)
        if name not in STEPS:
            raise HyperparameterError(
                f"preprocessing[{index}].step",
                f"unknown preprocessing step {name!r}; known: {', '.join(STEPS)}",
            )
        options = {k: v for k, v in options.items() if v is not None or k == "n_components"}
        unknown = set(options) - STEP_OPTIONS[name]
        if unknown:
            raise HyperparameterError(
                f"preprocessing[{index}].{sorted(unknown)[0]}",
                f"unknown option(s) {sorted(unknown)} for step {name}; "
                f"accepted: {sorted(STEP_OPTIONS[name])}",
            )
        transformer = STEPS[name](**options)
        try:
            transformer._validate_params()
        except ValueError as exc:
            raise HyperparameterError(f"preprocessing[{index}]", str(exc)) from exc
        built.append((f"{index}_{name}", transformer))
    return Pipeline(built)
