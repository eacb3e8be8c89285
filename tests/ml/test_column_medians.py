"""column_medians against np.median(X, axis=0), compared bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml.column_medians import column_medians


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = []
    for n in (1, 2, 3, 4, 5, 10, 11, 64, 1001, 2000):
        for d in (1, 3, 16):
            arrays.append(rng.normal(size=(n, d)))
            # Ties, signed zeros (equal, yet of different bits), infinities, extremes.
            arrays.append(rng.integers(-2, 3, size=(n, d)).astype(np.float64))
            arrays.append(rng.choice([0.0, -0.0, 1.0, -1.0], size=(n, d)))
            arrays.append(
                rng.choice([0.0, -0.0, np.inf, -np.inf, 1e308, -1e308, 5e-324], size=(n, d))
            )
            arrays.append(np.asfortranarray(rng.normal(size=(n, d)) * 1e300))
    return arrays


ARRAYS = _arrays()


@pytest.mark.parametrize("index", range(len(ARRAYS)))
def test_column_medians_equal_numpys_bit_for_bit(index):
    X = ARRAYS[index]
    with np.errstate(invalid="ignore", over="ignore"):  # -inf + inf, 1e308 + 1e308
        assert same_bits(column_medians(X), np.median(X, axis=0))


def test_the_service_training_shape_equals_numpy():
    X = np.random.default_rng(1).normal(size=(200_001, 16))
    for rows in (X, X[:-1]):  # an odd and an even count
        assert same_bits(column_medians(rows), np.median(rows, axis=0))


@pytest.mark.parametrize(
    "X",
    [
        np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]]),
        np.arange(12, dtype=np.float32).reshape(4, 3),
        np.arange(12, dtype=np.int64).reshape(6, 2),
    ],
    ids=["nan", "float32", "int64"],
)
def test_nan_and_other_dtypes_are_numpys_own_answer(X):
    with np.errstate(invalid="ignore"):
        assert same_bits(column_medians(X), np.median(X, axis=0))


def test_the_rows_are_left_untouched():
    X = np.random.default_rng(2).normal(size=(101, 4))
    X.setflags(write=False)
    before = X.copy()
    column_medians(X)
    assert same_bits(X, before)
