"""all_finite against np.isfinite(...).all(), on both sides of its short-array path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.ml.finite import _SMALL, all_finite

SPECIALS = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("size", [1, 16, _SMALL, _SMALL + 1, 10_000])
@pytest.mark.parametrize("special", [None, *SPECIALS])
def test_one_special_value_anywhere(size: int, special: float | None) -> None:
    for position in {0, size // 2, size - 1}:
        values = np.ones((1, size))
        if special is not None:
            values[0, position] = special
        assert all_finite(values) is (special is None)


@pytest.mark.parametrize("size", [2, _SMALL, _SMALL + 1, 1000])
def test_finite_values_whose_sum_overflows(size: int) -> None:
    values = np.full((size, 1), np.finfo(np.float64).max)
    assert all_finite(values)
    values[-1] = -np.finfo(np.float64).max  # and a sum that cancels
    assert all_finite(values)


def test_infinities_of_both_signs_whose_sum_is_nan() -> None:
    assert not all_finite(np.array([[np.inf, -np.inf]]))


@given(arrays(np.float64, st.integers(1, 2 * _SMALL)))
def test_same_as_numpy(values: np.ndarray) -> None:
    assert all_finite(values) == bool(np.isfinite(values).all())
