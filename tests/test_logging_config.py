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


@pytest.fixture
def restored_logging():
    """The root's and the server loggers' state, put back after the test."""
    root = logging.getLogger()
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "gunicorn.error")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.handlers, logger.level, logger.propagate) for logger in loggers]
    root_saved = root.level, list(root.handlers)
    yield
    configure_logging(logging.getLevelName(root_saved[0]).lower(), "text")
    root.handlers[:] = root_saved[1]
    root.setLevel(root_saved[0])
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def test_access_lines_can_be_turned_off(restored_logging):
    configure_logging("info", "text", access_log=False)
    assert not logging.getLogger("uvicorn.access").hasHandlers()
    assert logging.getLogger("uvicorn.error").hasHandlers()


def test_the_server_loggers_are_taken_over_without_emptying_gunicorns(restored_logging):
    """gunicorn's UvicornWorker gives uvicorn's loggers gunicorn's own list of handlers: taking
    them over must leave gunicorn's logger its handlers, and uvicorn's levels follow the root."""
    gunicorn = logging.getLogger("gunicorn.error")
    gunicorn.handlers = [logging.StreamHandler()]
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = gunicorn.handlers  # the same list, as the worker does it
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    configure_logging("info", "json")
    assert len(gunicorn.handlers) == 1
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        assert logger.handlers == [] and logger.propagate, name
        assert logger.getEffectiveLevel() == logging.INFO, name
