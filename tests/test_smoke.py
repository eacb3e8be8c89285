"""The app starts on both databases and answers its health checks."""

import gc

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings


def test_ready_on_both_databases(tmp_path, database_url):
    settings = make_settings(tmp_path, database_url=database_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "database": True, "store": True}


def test_start_up_objects_are_frozen_out_of_the_collectors_reach(tmp_path):
    before = gc.get_freeze_count()
    try:
        with TestClient(create_app(make_settings(tmp_path, gc_freeze=True))) as client:
            assert client.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
