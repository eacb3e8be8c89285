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
