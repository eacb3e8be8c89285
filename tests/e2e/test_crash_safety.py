"""Crash safety: the real server is SIGKILLed again and again while clients train (before any
artifact is written, during an artifact's write, between its rename and its row's commit, and
after a commit), then started again on the same SQLite file and store. Straight after every kill,
every version row has its artifact with the recorded sha256; after every restart, the store
holds no temporary file and no artifact without a row, and every version a client saw
acknowledged (201) is still there and serves."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sklearn.datasets import make_blobs

from app.registry.artifacts import TEMP_PREFIX, ArtifactStore
from tests.e2e.server import free_port, kill_group, primed_server, release, server_env, serving

SEED = 20_251_123
# Kill moments, one per cycle, in an order drawn from SEED:
#   fit:     a random moment soon after the clients start, before anything is written;
#   write:   while a temporary file is in the store (an artifact is being written);
#   rename:  as soon as a new artifact shows up (its row is being committed, or just was);
#   ack:     as soon as a client gets a 201 (after a commit, other trainings under way);
#   random:  a random moment within a few seconds.
# write and rename wait for their 1st to 3rd occurrence, ack for its 2nd to 4th (drawn from SEED).
KILL_MOMENTS = ["fit", "write", "rename", "ack", "write", "random"]
PLANT_AFTER = "ack"  # after this kill, stray files are left in the store on purpose
STARTUP_TIMEOUT_SECONDS = 90.0  # a busy 2-core machine can be slow to import scikit-learn
TRIGGER_TIMEOUT_SECONDS = 60.0  # a moment not seen by then: kill anyway
CLIENTS = 3
NAMES = ("crash-a", "crash-b")  # few names, so that concurrent trainings race for versions

SMALL_X, _ = make_blobs(n_samples=200, n_features=4, centers=3, random_state=1)
BIG_X, _ = make_blobs(n_samples=1500, n_features=60, centers=20, random_state=2)
TRAININGS: list[tuple[str, dict[str, Any], list[list[float]]]] = [
    ("kmeans", {"n_clusters": 3, "n_init": 1, "random_state": 0}, SMALL_X.tolist()),
    ("gaussian_mixture", {"n_components": 3, "random_state": 0}, SMALL_X.tolist()),
    # About 2 MB of covariances: a write long enough for a kill to land inside it.
    (
        "gaussian_mixture",
        {"n_components": 20, "max_iter": 10, "random_state": 0},
        BIG_X.tolist(),
    ),
]


@dataclass(frozen=True)
class Acknowledged:
    """A version a client was told about with a 201."""

    name: str
    version: int
    sha256: str
    n_features: int


@dataclass
class Clients:
    """Client threads that train until the server dies under them."""

    base_url: str
    seed: int
    acknowledged: list[Acknowledged] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(CLIENTS):
            rng = random.Random(self.seed * 100 + index)
            thread = threading.Thread(target=self._train, args=(rng,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a client still runs after its server was killed"

    def _train(self, rng: random.Random) -> None:
        with httpx.Client(base_url=self.base_url, timeout=300) as http:
            while True:
                algorithm, params, rows = rng.choices(TRAININGS, weights=[2, 2, 3])[0]
                body = {
                    "name": rng.choice(NAMES),
                    "algorithm": algorithm,
                    "params": params,
                    "data": {"instances": rows},
                }
                try:
                    response = http.post("/v1/models", json=body)
                except httpx.TransportError:
                    return  # the server was killed: whatever was under way was not acknowledged
                if response.status_code != 201:
                    with self.lock:
                        self.unexpected.append(f"{response.status_code}: {response.text}")
                    return
                version = response.json()
                with self.lock:
                    self.acknowledged.append(
                        Acknowledged(
                            name=version["name"],
                            version=version["version"],
                            sha256=version["artifact"]["sha256"],
                            n_features=version["n_features"],
                        )
                    )


def wait_for_moment(moment: str, folder: Path, clients: Clients, rng: random.Random) -> str:
    """Return when the kill moment comes; says which it was, or that it timed out."""
    if moment == "fit":
        time.sleep(rng.uniform(0.05, 0.6))
        return moment
    if moment == "random":
        time.sleep(rng.uniform(0.5, 4.0))
        return moment
    count = rng.randint(2, 4) if moment == "ack" else rng.randint(1, 3)
    existing = set(os.listdir(folder))
    shows = {
        "write": lambda name: name.startswith(TEMP_PREFIX),
        "rename": lambda name: name.endswith(".joblib") and name not in existing,
        "ack": None,
    }[moment]
    seen: set[str] = set()
    deadline = time.monotonic() + TRIGGER_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if shows is None:
            if len(clients.acknowledged) >= count:
                return f"ack #{count}"
        else:
            seen.update(filter(shows, os.listdir(folder)))
            if len(seen) >= count:
                return f"{moment} #{count}"
        time.sleep(0.0005)  # an artifact of 2 MB takes some milliseconds to write and fsync
    return f"{moment} #{count} timed out"


@dataclass(frozen=True)
class Row:
    artifact_path: str
    sha256: str
    size: int


def version_rows(database: Path) -> dict[tuple[str, int], Row]:
    """Every version row, read straight from the SQLite file."""
    with closing(sqlite3.connect(database, timeout=60)) as connection:
        rows = connection.execute(
            "SELECT m.name, v.version, v.artifact_path, v.artifact_sha256, v.artifact_size "
            "FROM model_versions v JOIN models m ON m.id = v.model_id"
        ).fetchall()
    return {(name, version): Row(path, sha, size) for name, version, path, sha, size in rows}


def assert_every_row_has_its_artifact(rows: dict[tuple[str, int], Row], store: Path) -> None:
    broken = []
    for key, row in rows.items():
        path = store / row.artifact_path
        if not path.is_file():
            broken.append(f"{key}: {row.artifact_path} is missing")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != row.sha256 or len(data) != row.size:
            broken.append(f"{key}: {row.artifact_path} does not match its row")
    assert not broken, broken


def assert_store_is_clean(rows: dict[tuple[str, int], Row], store: Path) -> None:
    """No temporary file, and no artifact that no row refers to."""
    names = os.listdir(store / "artifacts")
    assert [n for n in names if n.startswith(TEMP_PREFIX)] == []
    artifacts = {n for n in names if n.endswith(".joblib")}
    assert artifacts == {Path(row.artifact_path).name for row in rows.values()}


def assert_acknowledged_versions_are_kept(
    acknowledged: list[Acknowledged], rows: dict[tuple[str, int], Row]
) -> None:
    lost = [a for a in acknowledged if (a.name, a.version) not in rows]
    assert lost == [], lost
    changed = [a for a in acknowledged if rows[(a.name, a.version)].sha256 != a.sha256]
    assert changed == [], changed


def assert_serve(http: httpx.Client, versions: list[Acknowledged]) -> None:
    for acked in versions:
        probe = [[0.5] * acked.n_features, [-1.0] * acked.n_features]
        response = http.post(
            f"/v1/models/{acked.name}/versions/{acked.version}/predict", json={"instances": probe}
        )
        assert response.status_code == 200, (acked, response.text)
        answer = response.json()
        assert (answer["model"], answer["version"]) == (acked.name, acked.version)
        assert len(answer["labels"]) == len(probe)


def plant_strays(store: Path) -> list[str]:
    """What a crash leaves, left on purpose: a complete artifact no row refers to, and a
    half-written temporary file."""
    artifacts = ArtifactStore(store)
    orphan = Path(artifacts.write(artifacts.serialize({"not": "registered"})).path).name
    fd, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=artifacts.folder)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"half an artifact")
    return [orphan, Path(temporary).name]


class Servers:
    """Servers on one database and store, one after another; each is primed (its imports done)
    while the one before it runs, so that a restart takes a second, not several."""

    def __init__(self, database: Path, store: Path, log: Path) -> None:
        self.log = log
        self.env = server_env(
            f"sqlite:///{database}",
            store,
            LLOYD_MAX_CONCURRENT_JOBS="2",
            # Never a 202 on a slow machine: every training answers 201 or dies with the server.
            LLOYD_SYNC_TIMEOUT_SECONDS="600",
        )
        self.primed = primed_server(self.env, log)

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        kill_group(self.primed)

    @contextmanager
    def start(self, *, last: bool = False) -> Iterator[tuple[subprocess.Popen, httpx.Client, str]]:
        """The next server, a client of it, and what it logged while it started (/healthz
        answers only once the lifespan, and with it the sweep, has run)."""
        process = self.primed
        if not last:
            self.primed = primed_server(self.env, self.log)
        port = free_port()
        log_start = self.log.stat().st_size
        try:
            release(process, port)
        except BaseException:
            kill_group(process)
            raise
        with (
            serving(process, port, self.log, startup_timeout=STARTUP_TIMEOUT_SECONDS) as url,
            httpx.Client(base_url=url, timeout=300) as http,
        ):
            yield process, http, self.log.read_text()[log_start:]


def test_sigkill_at_any_moment_loses_no_acknowledged_version_and_leaves_nothing(tmp_path):
    rng = random.Random(SEED)
    moments = rng.sample(KILL_MOMENTS, len(KILL_MOMENTS))
    database, store, log = tmp_path / "lloyd.db", tmp_path / "store", tmp_path / "server.log"
    acknowledged: list[Acknowledged] = []
    unchecked: list[Acknowledged] = []  # acknowledged since the last restart
    planted: list[str] = []
    sweeps = 0
    began = time.monotonic()

    def note(event: str) -> None:  # a timeline, shown by pytest with a failure
        print(f"{time.monotonic() - began:5.1f} s  {event}")

    with Servers(database, store, log) as servers:
        for moment in moments:
            with servers.start() as (process, http, start_up):
                sweeps += swept(start_up, note)
                note(f"next kill: {moment}")
                check_restart(http, database, store, acknowledged, unchecked, start_up, planted)
                unchecked = []
                clients = Clients(http.base_url, seed=rng.randrange(2**32))
                clients.start()
                note(f"kill at {wait_for_moment(moment, store / 'artifacts', clients, rng)}")
                kill_group(process)
                clients.join()
                assert clients.unexpected == []  # inside, so that the server log is shown
            acknowledged += clients.acknowledged
            unchecked += clients.acknowledged
            # The row is committed only once its artifact is durable: true whenever the crash
            # came, before any clean-up.
            assert_every_row_has_its_artifact(version_rows(database), store)
            planted = plant_strays(store) if moment == PLANT_AFTER else []

        with servers.start(last=True) as (_, http, start_up):
            sweeps += swept(start_up, note)
            check_restart(http, database, store, acknowledged, acknowledged, start_up, planted)
            assert acknowledged, "no training was ever acknowledged: the run proved nothing"
            # Version numbers go on from the last committed one.
            name, latest = max(version_rows(database))
            algorithm, params, instances = TRAININGS[0]
            body = {"name": name, "algorithm": algorithm, "params": params}
            response = http.post("/v1/models", json=body | {"data": {"instances": instances}})
            assert response.status_code == 201, response.text
            assert response.json()["version"] == latest + 1
    note(f"{len(acknowledged)} versions acknowledged; {sweeps} start-up sweep(s) removed files")


def swept(start_up: str, note: Callable[[str], None]) -> bool:
    """Whether the start-up sweep removed something; notes what it said."""
    said = [line for line in start_up.splitlines() if "removed from the models store" in line]
    note(f"started: {said[0] if said else 'nothing to sweep'}")
    return bool(said)


def check_restart(
    http: httpx.Client,
    database: Path,
    store: Path,
    acknowledged: list[Acknowledged],
    to_serve: list[Acknowledged],
    start_up: str,
    planted: list[str],
) -> None:
    """The invariants after a restart: every row has its artifact, the store holds nothing
    else (the files planted are named in the start-up log), every acknowledged version is kept,
    and those of ``to_serve`` answer over HTTP."""
    assert all(name in start_up for name in planted), start_up
    rows = version_rows(database)
    assert_every_row_has_its_artifact(rows, store)
    assert_store_is_clean(rows, store)
    assert_acknowledged_versions_are_kept(acknowledged, rows)
    assert_serve(http, to_serve)
