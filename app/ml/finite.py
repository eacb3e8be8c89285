"""all_finite: whether an array holds no NaN and no infinity, in one pass where it can."""

from __future__ import annotations

import math

import numpy as np


def all_finite(values: np.ndarray) -> bool:
    """True when every value of a float array is finite. A finite sum proves it in one
    reduction, without the temporary array of ``np.isfinite``; a sum that overflows, or meets a
    NaN or an infinity, is checked value by value."""
    if values.size <= _SMALL:  # Python's sum of a short list costs half a numpy reduction
        total = sum(values.ravel().tolist())
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is answered below
            total = np.add.reduce(values, axis=None)
    return math.isfinite(total) or bool(np.isfinite(values).all())


# Up to this many values, a sum in Python floats (a 1-row request's features, its answer).
_SMALL = 64
