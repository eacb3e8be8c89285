"""End-to-end tests start real server processes: every one is marked ``slow``, so that
``scripts/test -m 'not slow'`` runs the fast part alone."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)
