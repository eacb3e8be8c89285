"""API keys and scopes: every /v1 endpoint needs a key once keys are configured; `read` and
`write` scopes; keys only ever configured as hashes; health stays open; metrics can close."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api_keys import KeyRing, hash_key, parse_api_keys
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_settings

READER, WRITER, BOTH = "reader-key-1", "writer-key-2", "admin-key-3"
KEYS = f"{hash_key(READER)}:read,{hash_key(WRITER)}:write, {hash_key(BOTH)}:read+write"
BLOBS = [[0.0, 0.1], [0.2, 0.0], [0.1, 0.2], [5.0, 5.1], [5.2, 5.0], [5.1, 5.2]]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, api_keys=KEYS))) as client:
        trained = client.post(
            "/v1/models",
            json={"name": "m", "algorithm": "kmeans", "params": {"n_clusters": 2, "n_init": 1}}
            | {"data": {"instances": BLOBS}},
            headers=bearer(BOTH),
        )
        assert trained.status_code == 201, trained.text
        yield client


def v1_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every /v1 (method, concrete path) the app serves, path parameters filled in."""
    fill = {"{name}": "m", "{version}": "1", "{alias}": "prod", "{job_id}": "nope"}
    routes = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if path.startswith("/v1"):
            for placeholder, value in fill.items():
                path = path.replace(placeholder, value)
            routes.extend((method.upper(), path) for method in operations)
    return routes


def assert_problem(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_every_v1_endpoint_needs_a_key(secured: TestClient) -> None:
    routes = v1_routes(secured)
    assert len(routes) > 30
    for method, path in routes:
        response = secured.request(method, path, json={})
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {hash_key(BOTH)}"},  # the hash is not the key
        {"Authorization": f"Basic {BOTH}"},
        {"Authorization": "Bearer "},
        {"X-API-Key": BOTH},
    ],
)
def test_wrong_or_malformed_credentials_are_401(secured: TestClient, headers) -> None:
    assert_problem(secured.get("/v1/models", headers=headers), 401, "unauthorized")
    assert_problem(
        secured.post("/v1/models/m/predict", json={"instances": [[0, 0]]}, headers=headers),
        401,
        "unauthorized",
    )


def test_read_scope_reads_and_infers_but_cannot_write(secured: TestClient) -> None:
    read = bearer(READER)
    assert secured.get("/v1/models", headers=read).status_code == 200
    assert secured.get("/v1/models/m/versions/1", headers=read).status_code == 200
    assert secured.get("/v1/algorithms", headers=read).status_code == 200
    predicted = secured.post("/v1/models/m/predict", json={"instances": BLOBS}, headers=read)
    assert predicted.status_code == 200
    assert predicted.json()["labels"][0] != predicted.json()["labels"][3]
    for method, path, body in [
        ("POST", "/v1/models", {"name": "x", "algorithm": "kmeans", "data": {"instances": BLOBS}}),
        ("DELETE", "/v1/models/m", None),
        ("DELETE", "/v1/models/m/versions/1", None),
        ("PUT", "/v1/models/m/aliases/prod", {"version": 1}),
        ("DELETE", "/v1/models/m/aliases/prod", None),
        ("GET", "/v1/jobs", None),
        ("POST", "/v1/model-selection", {}),
    ]:
        response = secured.request(method, path, json=body, headers=read)
        assert_problem(response, 403, "forbidden")
        assert response.json()["required_scope"] == "write"
    # Nothing was written: the model and its only version are still there.
    assert secured.get("/v1/models/m/versions", headers=read).json()["total"] == 1


def test_write_scope_writes_but_cannot_read(secured: TestClient) -> None:
    write = bearer(WRITER)
    alias = secured.put("/v1/models/m/aliases/prod", json={"version": 1}, headers=write)
    assert alias.status_code == 200, alias.text
    assert secured.get("/v1/jobs", headers=write).status_code == 200
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/models/m/versions/1")]:
        assert_problem(secured.request(method, path, headers=write), 403, "forbidden")
    response = secured.post("/v1/models/m/predict", json={"instances": BLOBS}, headers=write)
    assert_problem(response, 403, "forbidden")
    assert response.json()["required_scope"] == "read"
    deleted = secured.delete("/v1/models/m", headers=write)
    assert deleted.status_code == 200
    assert_problem(secured.get("/v1/models/m", headers=bearer(READER)), 404, "model_not_found")


def test_unauthenticated_request_learns_nothing_about_models(secured: TestClient) -> None:
    # Authentication comes before the lookup: no 404 tells a stranger which names exist.
    for path in ("/v1/models/m/predict", "/v1/models/absent/predict"):
        assert_problem(secured.post(path, json={"instances": [[0, 0]]}), 401, "unauthorized")


def test_health_stays_open_and_metrics_can_close(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, api_keys=KEYS))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
    closed = make_settings(tmp_path, api_keys=KEYS, metrics_require_key=True)
    with TestClient(create_app(closed)) as client:
        assert client.get("/healthz").status_code == 200
        assert_problem(client.get("/metrics"), 401, "unauthorized")
        assert client.get("/metrics", headers=bearer(READER)).status_code == 200
        assert client.get("/metrics", headers=bearer(WRITER)).status_code == 200


def test_no_keys_means_open(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/models", headers=bearer("anything")).status_code == 200


def test_keys_file_adds_to_the_variable(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# line 7 scorer\n{hash_key('from-file')}:read  # comment\n\n")
    settings = make_settings(
        tmp_path, api_keys=f"{hash_key(WRITER)}:write", api_keys_file=keys_file
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/models", headers=bearer("from-file")).status_code == 200
        assert_problem(client.get("/v1/models", headers=bearer(WRITER)), 403, "forbidden")
        assert_problem(client.get("/v1/models", headers=bearer("other")), 401, "unauthorized")


@pytest.mark.parametrize(
    "entry",
    [
        "my-secret-key:read",  # a key in clear, not its hash
        hash_key("k")[:40] + ":read",
        hash_key("k") + ":admin",
        hash_key("k"),  # no scope
        hash_key("k") + ":read+",
    ],
)
def test_bad_key_configuration_is_refused_at_start_without_echoing_it(entry: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings(api_keys=entry)
    assert "my-secret-key" not in str(refused.value)


def test_missing_keys_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LLOYD_API_KEYS_FILE"):
        Settings(api_keys_file=tmp_path / "absent")


def test_key_ring_checks_every_key() -> None:
    keys = parse_api_keys(",".join(f"{hash_key(str(i))}:read" for i in range(50)))
    ring = KeyRing(keys)
    assert ring.authenticate("49") == keys[49]
    assert ring.authenticate("0") == keys[0]
    assert ring.authenticate("50") is None
    assert all(k.key_id == k.sha256[:8] for k in keys)


def test_key_ring_keeps_matches_only_and_a_bounded_number_of_them() -> None:
    keys = parse_api_keys(",".join(f"{hash_key(str(i))}:read" for i in range(3)))
    ring = KeyRing(keys)
    for guess in range(3, 3 + 2 * KeyRing.MATCHES_KEPT):
        assert ring.authenticate(str(guess)) is None
    assert ring._matched == {}  # a stranger's guesses are never kept
    assert ring.authenticate("1") == keys[1] == ring.authenticate("1")
    assert ring._matched == {"1": keys[1]}
    many = KeyRing(parse_api_keys(",".join(f"{hash_key(str(i))}:read" for i in range(300))))
    for i in range(300):
        assert many.authenticate(str(i)) is not None
        assert len(many._matched) <= KeyRing.MATCHES_KEPT
    assert many.authenticate("299").key_id == hash_key("299")[:8]


def test_open_service_beyond_loopback_warns_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    with TestClient(create_app(make_settings(tmp_path, host="0.0.0.0"))):
        pass
    assert any(
        r.levelno == logging.WARNING and "no API keys" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    for host, keys in (("127.0.0.1", ""), ("0.0.0.0", KEYS)):
        with TestClient(create_app(make_settings(tmp_path, host=host, api_keys=keys))):
            pass
        assert not any("no API keys" in r.getMessage() for r in caplog.records)


def test_openapi_documents_bearer_auth(secured: TestClient) -> None:
    schema = secured.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    predict = schema["paths"]["/v1/models/{name}/predict"]["post"]
    assert predict["security"] == [{"HTTPBearer": []}]
    assert {"401", "403"} <= predict["responses"].keys()
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_key_commands_print_entries_the_service_accepts(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "app", "new-key", "--scopes", "read"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = made.split("key:")[1].split()[0]
    entry = made.split("entry:")[1].split()[0]
    hashed = subprocess.run(
        [sys.executable, "-m", "app", "hash-key", "--scopes", "read"],
        input=key + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert hashed == entry and key not in entry
    with TestClient(create_app(make_settings(tmp_path, api_keys=entry))) as client:
        assert client.get("/v1/models", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models"),
        ("PUT", "/v1/models/m/aliases/prod"),
        ("POST", "/v1/model-selection"),
        ("POST", "/v1/models/m/predict"),
    ],
)
def test_a_strangers_body_is_never_parsed(secured: TestClient, method: str, path: str) -> None:
    # Malformed JSON, or a body of the wrong type, from a client without a key: 401, not the
    # parse error that would tell it something about the endpoint.
    for content, content_type in ((b"{not json", "application/json"), (b"x", "text/plain")):
        response = secured.request(
            method, path, content=content, headers={"content-type": content_type}
        )
        assert_problem(response, 401, "unauthorized")
