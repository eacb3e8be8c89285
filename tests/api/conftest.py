"""Fixtures of the API tests: scikit-learn's own fits of each case, made once per session."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.api.contract import Case
from tests.api.reference import Reference


@pytest.fixture(scope="session")
def fitted() -> Callable[[Case], Reference]:
    """``fitted(case)``: the case fitted by scikit-learn directly, fitted once and then shared
    (the references are only read; ``sample`` draws from a copy)."""
    references: dict[str, Reference] = {}

    def fitted(case: Case) -> Reference:
        if case.id not in references:
            references[case.id] = Reference.fit(case)
        return references[case.id]

    return fitted
