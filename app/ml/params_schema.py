"""JSON Schemas of hyperparameters, read from scikit-learn's own ``_parameter_constraints``."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, Options, StrOptions

# Options a client may never choose, whatever the estimator allows.
REFUSED_OPTIONS = frozenset({"precomputed"})


def _interval_schema(interval: Interval) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer" if interval.type is Integral else "number"}
    left_closed = interval.closed in ("left", "both")
    right_closed = interval.closed in ("right", "both")
    if interval.left is not None and math.isfinite(interval.left):
        schema["minimum" if left_closed else "exclusiveMinimum"] = interval.left
    if interval.right is not None and math.isfinite(interval.right):
        schema["maximum" if right_closed else "exclusiveMaximum"] = interval.right
    return schema


def constraint_schema(constraint: Any) -> dict[str, Any] | None:
    """JSON Schema of one scikit-learn constraint, or None when JSON cannot express it."""
    if isinstance(constraint, Interval):
        return _interval_schema(constraint)
    if isinstance(constraint, StrOptions):
        allowed = sorted(set(constraint.options) - set(constraint.deprecated) - REFUSED_OPTIONS)
        return {"type": "string", "enum": allowed} if allowed else None
    if isinstance(constraint, Options):
        return {"enum": sorted(constraint.options)}
    if constraint is None:
        return {"type": "null"}
    if constraint == "boolean":
        return {"type": "boolean"}
    if constraint == "random_state":
        return {
            "anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**32 - 1}, {"type": "null"}]
        }
    if constraint == "array-like":
        return {"type": "array"}
    if constraint is dict:
        return {"type": "object"}
    # callables, "verbose", sparse matrices, estimator objects, ...: not expressible in JSON.
    return None


def json_default(value: Any) -> Any:
    """A default value as JSON, or a marker that it has none."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def params_schema(
    estimator_class: type,
    *,
    refused: frozenset[str],
    descriptions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON Schema of an estimator's hyperparameters, without the ``refused`` ones."""
    defaults = estimator_class().get_params(deep=False)
    constraints = getattr(estimator_class, "_parameter_constraints", {})
    properties: dict[str, Any] = {}
    for name, default in sorted(defaults.items()):
        if name in refused:
            continue
        options = [s for c in constraints.get(name, []) if (s := constraint_schema(c))]
        schema: dict[str, Any] = (
            options[0] if len(options) == 1 else {"anyOf": options} if options else {}
        )
        schema = {**schema, "default": json_default(default)}
        if descriptions and name in descriptions:
            schema["description"] = descriptions[name]
        properties[name] = schema
    return {
        "type": "object",
        "title": f"{estimator_class.__name__} hyperparameters",
        "properties": properties,
        "additionalProperties": False,
    }
