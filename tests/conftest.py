"""Shared fixtures: a fresh SQLite file and model store per test, the real app built by the
factory, a client that runs its lifespan, and a PostgreSQL schema per test where one answers."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

# The S3 server fixtures (moto's, over real HTTP): s3_endpoint, s3_store_url.
pytest_plugins = ["tests.s3"]

TESTS = Path(__file__).parent
# Marked `slow` (scripts/test -m "not slow" runs the rest, the fast part, in under a minute):
# the end-to-end tests and the client's, which start real servers, and the modules whose many
# tests each train through worker processes in an app of their own, or start Dask or S3.
SLOW = [
    TESTS / "e2e",
    TESTS / "client",
    *(
        TESTS / "api" / f"test_{name}.py"
        for name in (
            "detectors_api",
            "bad_input",
            "lifecycle",
            "model_selection",
            "auth",
            "jobs",
            "limits",
            "models",
            "request_id",
            "training_handoff",
            "clusterers",
            "openapi_examples",
        )
    ),
    TESTS / "registry" / "test_model_registry.py",
    TESTS / "jobs" / "test_dask_executor.py",
    TESTS / "registry" / "test_s3_store.py",
]


@functools.cache
def is_slow(path: Path) -> bool:
    return any(path == slow or slow in path.parents for slow in SLOW)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``-m "not slow"``, the slow modules are not even imported: collecting them (the
    schemathesis module builds its cases from two apps' OpenAPI documents) would cost the fast
    part more than many of its tests."""
    if config.getoption("markexpr", "").replace(" ", "") == "notslow" and is_slow(collection_path):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_slow(Path(item.path)):
            item.add_marker(pytest.mark.slow)


POSTGRES_URL = os.environ.get(
    "LLOYD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "database_url": f"sqlite:///{tmp_path / 'lloyd.db'}",
        "models_store": tmp_path / "models_store",
        # Each test starts apps in this one process: frozen objects would outlive their test.
        "gc_freeze": False,
    } | overrides
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app on a fresh SQLite file and store, lifespan (migrations included) run."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _postgres_reachable() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def postgres_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    return _postgres_reachable()


@pytest.fixture
def postgres_url(postgres_available: str | None) -> Iterator[str]:
    """A URL whose connections live in a fresh schema of the test database, dropped afterwards."""
    if postgres_available:
        pytest.skip(postgres_available)
    schema = f"lloyd_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each registry test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lloyd.db'}"
    return request.getfixturevalue("postgres_url")
