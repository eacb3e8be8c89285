"""The app starts on both databases and answers its health checks."""

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
