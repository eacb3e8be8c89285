"""Concurrent trainings of one name: each gets its own version, numbered without gaps."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.api.contract import BLOBS, artifact_hashes, call, training_body

TRAININGS = 6


def test_concurrent_trainings_of_one_name_get_versions_1_to_6(client, settings):
    start = threading.Barrier(TRAININGS)

    def post(seed: int):
        body = training_body(name="line-7", params={"n_clusters": 3, "random_state": seed})
        start.wait()  # all six requests leave at the same moment
        return client.post("/v1/models", json=body)

    with ThreadPoolExecutor(max_workers=TRAININGS) as pool:
        responses = list(pool.map(post, range(TRAININGS)))

    assert [r.status_code for r in responses] == [201] * TRAININGS, [r.text for r in responses]
    docs = [r.json() for r in responses]
    assert sorted(d["version"] for d in docs) == list(range(1, TRAININGS + 1))
    # Each version holds the training that was answered with its number.
    by_seed = {d["params"]["random_state"]: d for d in docs}
    assert set(by_seed) == set(range(TRAININGS))
    for seed, doc in by_seed.items():
        stored = client.get(f"/v1/models/line-7/versions/{doc['version']}").json()
        assert stored == doc, seed
    assert artifact_hashes(settings) == {d["artifact"]["sha256"] for d in docs}
    model = client.get("/v1/models/line-7").json()
    assert (model["latest_version"], model["n_versions"]) == (TRAININGS, TRAININGS)
    rows = {"instances": BLOBS[:3].tolist()}
    for version in range(1, TRAININGS + 1):
        assert call(client, "line-7", "predict", rows, version).status_code == 200


def test_a_training_whose_model_is_deleted_meanwhile_still_answers_its_201(client, monkeypatch):
    """The 201 carries the version as registered: a delete landing between the registration and
    the answer does not turn a successful training into a 404."""
    registry = client.app.state.registry
    register = registry.register

    def register_then_deleted(name, new, model, **job):
        version = register(name, new, model, **job)
        registry.delete_model(name)  # a concurrent DELETE /v1/models/{name}
        return version

    monkeypatch.setattr(registry, "register", register_then_deleted)
    response = client.post("/v1/models", json=training_body(name="gone"))
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "gone" and response.json()["version"] == 1
    assert client.get("/v1/models/gone").status_code == 404


def test_a_predict_racing_a_delete_answers_404_not_a_damaged_store(client, monkeypatch):
    call_ok = client.post("/v1/models", json=training_body(name="race"))
    assert call_ok.status_code == 201
    registry = client.app.state.registry
    registry.cache.evict(lambda key: True)
    load = registry.load

    def load_after_a_delete(version):
        registry.delete_version(version.name, version.version)  # lands after the lookup
        return load(version)

    monkeypatch.setattr(registry, "load", load_after_a_delete)
    response = call(client, "race", "predict", {"instances": BLOBS[:2].tolist()})
    assert response.status_code == 404, response.text
    assert response.json()["code"] in ("version_not_found", "model_not_found")
