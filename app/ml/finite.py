"""all_finite: whether an array holds no NaN and no infinity, in one pass where it can."""

from __future__ import annotations

import math

import numpy as np


def all_finite(values: np.ndarray) -> bool:
    """True when every value of a float array is finite. A finite sum proves it in one
    reduction, without the temporary array of ``np.isfinite``; a sum that overflows, or meets a
    NaN or an infinity, is checked value by value."""
    return math.isfinite(np.add.reduce(values, axis=None)) or bool(np.isfinite(values).all())
