"""Logging as the app factory configures it."""

import logging

import pytest

from app.logging_config import configure_logging


@pytest.mark.parametrize(("level", "formatted"), [("warning", False), ("info", True)])
def test_uvicorn_formats_access_lines_only_at_a_level_that_writes_them(level, formatted):
    """uvicorn builds an access line for every request whenever its access logger has a
    handler in reach (``hasHandlers``), whatever the level: above INFO it must have none."""
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        configure_logging(level, "text")
        assert logging.getLogger("uvicorn.access").hasHandlers() is formatted
        assert logging.getLogger("uvicorn.error").hasHandlers()
    finally:
        configure_logging(logging.getLevelName(saved[0]).lower(), "text")
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
