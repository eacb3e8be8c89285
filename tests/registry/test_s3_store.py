"""The artifact store on S3 (a moto server over HTTP, through s3fs) and the store's newer methods
on a local folder: atomic publication, sha256 before unpickling, the sweep by LastModified, job
inputs (put/get/remove/listing), the store id's first writer, readiness, and paths refused."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import s3fs
from sklearn.cluster import KMeans

from app.errors import ArtifactIntegrityError, ArtifactMissing
from app.registry.artifacts import (
    ARTIFACT_SUFFIX,
    TEMP_PREFIX,
    ArtifactStore,
    SweepReport,
    open_store,
)
from tests.s3 import s3_client

HOUR = 3600.0


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: proof that an object was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def fitted_kmeans() -> KMeans:
    rows = np.random.default_rng(0).normal(size=(60, 2))
    return KMeans(n_clusters=3, n_init=2, random_state=0).fit(rows)


@dataclass(frozen=True)
class S3Place:
    """A fresh prefix on the moto server: ``url`` of the store there, ``endpoint`` of the
    server, and ``fs``, a client other than the store's (an operator, a disk fault)."""

    url: str
    endpoint: str
    fs: s3fs.S3FileSystem

    def open(self, url: str | None = None) -> ArtifactStore:
        return open_store(url or self.url, s3_endpoint_url=self.endpoint)

    def key(self, key: str) -> str:
        """The path of the store's ``key``, as ``fs`` spells it."""
        return f"{self.url.removeprefix('s3://')}/{key}"


@pytest.fixture
def s3(s3_endpoint: str, s3_store_url: str) -> S3Place:
    return S3Place(s3_store_url, s3_endpoint, s3_client(s3_endpoint))


@pytest.fixture
def store(s3: S3Place) -> ArtifactStore:
    return s3.open()


# -- S3 --------------------------------------------------------------------------------------


def test_round_trip_on_s3(store, s3):
    model = fitted_kmeans()
    data = store.serialize(model)

    artifact = store.write(data)

    assert artifact.path.startswith("artifacts/") and artifact.path.endswith(ARTIFACT_SUFFIX)
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert artifact.size_bytes == len(data)
    assert s3.fs.cat_file(s3.key(artifact.path)) == data  # at the key it names, as written
    assert [key for key, _ in store.listing("artifacts/")] == [artifact.path]  # no temporary
    loaded = store.load(artifact.path, artifact.sha256, label="'line-7' version 1")
    rows = np.array([[0.0, 0.0], [2.0, -1.0]])
    assert (loaded.predict(rows) == model.predict(rows)).all()
    assert store.root == s3.url
    assert store.folder == f"{s3.url}/artifacts"
    assert store.describe() == s3.url
    assert not store.is_local


def test_a_changed_object_is_refused_and_never_unpickled(store, s3, tmp_path):
    artifact = store.write(store.serialize({"a": 1}))
    marker = tmp_path / "marker"
    s3.fs.pipe_file(s3.key(artifact.path), pickle.dumps(_CreatesFile(marker)))

    with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256") as info:
        store.load(artifact.path, artifact.sha256, label="'line-7' version 1")

    assert info.value.status == 409
    assert info.value.extra["expected_sha256"] == artifact.sha256
    assert not marker.exists()


def test_a_missing_object_is_artifact_missing(store, s3):
    artifact = store.write(b"bytes")
    s3.fs.rm_file(s3.key(artifact.path))
    with pytest.raises(ArtifactMissing, match="missing from the store") as info:
        store.load(artifact.path, artifact.sha256, label="'line-7' version 1")
    assert info.value.status == 409


def test_a_prefix_at_an_artifact_path_is_refused(store, s3):
    """S3's nearest thing to a folder: objects below the key, none at it."""
    s3.fs.pipe_file(s3.key("artifacts/folder.joblib/inside"), b"x")
    with pytest.raises(ArtifactIntegrityError) as info:
        store.load("artifacts/folder.joblib", "0" * 64, label="'line-7' version 1")
    assert info.value.status == 409


def test_delete_on_s3(store, s3):
    artifact = store.write(b"bytes")
    store.delete(artifact.path)
    assert not s3.fs.exists(s3.key(artifact.path))
    with pytest.raises(ArtifactMissing):
        store.load(artifact.path, artifact.sha256, label="x")
    store.delete(artifact.path)  # already gone: fine


def test_job_inputs_on_s3(store, s3):
    assert store.listing("jobs/") == []

    store.put("jobs/x.npy", b"first")
    store.put("jobs/x.npy", b"second")  # published again: the whole new content

    assert store.get("jobs/x.npy") == b"second"
    [(key, modified)] = store.listing("jobs/")
    assert key == "jobs/x.npy"
    assert abs(modified - time.time()) < 60  # the object's LastModified, in epoch seconds
    assert store.listing("jobs") == store.listing("jobs/")
    assert s3.fs.cat_file(s3.key("jobs/x.npy")) == b"second"

    store.remove("jobs/x.npy")
    assert store.listing("jobs/") == []
    with pytest.raises(ArtifactMissing):
        store.get("jobs/x.npy")
    store.remove("jobs/x.npy")  # already gone: fine


def test_sweep_on_s3_removes_old_orphans_and_temporaries_only(store, s3):
    kept = store.write(store.serialize("referenced"))
    orphan = store.write(b"orphan")
    s3.fs.pipe_file(s3.key(f"artifacts/{TEMP_PREFIX}stray"), b"half an artifact")
    others = ["artifacts/README", "artifacts/kept/nested.joblib", "outside.joblib", "jobs/x.npy"]
    for key in others:
        s3.fs.pipe_file(s3.key(key), b"x")
    referenced = {kept.path}

    # Everything was written just now: within a minute's grace, nothing goes.
    young = store.sweep(referenced, older_than_seconds=60, now=time.time() + 30)
    assert young == SweepReport()

    # An hour later (``now`` ages every object without waiting), the leftovers go.
    report = store.sweep(referenced, older_than_seconds=60, now=time.time() + HOUR)

    assert report == SweepReport(
        orphans=[orphan.path.removeprefix("artifacts/")], temporary=[f"{TEMP_PREFIX}stray"]
    )
    assert not s3.fs.exists(s3.key(orphan.path))
    assert store.load(kept.path, kept.sha256, label="x") == "referenced"
    assert all(s3.fs.exists(s3.key(key)) for key in others)
    assert store.sweep(referenced, older_than_seconds=60, now=time.time() + HOUR) == SweepReport()


def test_the_first_store_id_wins_on_s3(s3):
    first = s3.open()
    second = s3.open()  # another replica
    assert first.read_store_id() is None

    assert first.write_store_id("first-id") == "first-id"
    assert second.write_store_id("second-id") == "first-id"

    assert second.read_store_id() == "first-id"
    assert s3.fs.cat_file(s3.key("store-id")) == b"first-id\n"


def test_replicas_racing_for_the_store_id_agree_on_s3(s3):
    replicas = [s3.open() for _ in range(6)]
    start = threading.Barrier(len(replicas))

    def claim(index: int) -> str:
        start.wait()
        return replicas[index].write_store_id(f"id-{index}")

    with ThreadPoolExecutor(len(replicas)) as pool:
        held = set(pool.map(claim, range(len(replicas))))

    assert len(held) == 1
    assert replicas[0].read_store_id() in held


def test_is_writable_on_s3(store, s3):
    assert store.is_writable()
    assert store.listing("") == []  # the probe's key went again
    missing = s3.open(f"s3://no-such-bucket-{os.getpid()}/store")
    assert not missing.is_writable()


@pytest.mark.parametrize(
    "relative",
    ["artifacts/../../elsewhere.joblib", "../elsewhere.joblib", "/artifacts/x.joblib", "x.joblib"],
)
def test_an_artifact_path_outside_the_store_is_refused_on_s3(store, s3, relative):
    s3.fs.pipe_file(s3.key("x.joblib"), b"x")
    with pytest.raises(ArtifactIntegrityError, match="outside the store"):
        store.load(relative, "0" * 64, label="x")
    with pytest.raises(ArtifactIntegrityError, match="outside the store"):
        store.delete(relative)
    assert s3.fs.exists(s3.key("x.joblib"))


@pytest.mark.parametrize("relative", ["../jobs/x.npy", "jobs/../../x.npy", "/jobs/x.npy", ""])
def test_a_named_path_outside_the_store_is_refused_on_s3(store, relative):
    for attempt in (
        lambda: store.put(relative, b"x"),
        lambda: store.get(relative),
        lambda: store.remove(relative),
    ):
        with pytest.raises(ArtifactIntegrityError, match="outside the store"):
            attempt()
    if relative:
        with pytest.raises(ArtifactIntegrityError, match="outside the store"):
            store.listing(relative)


@pytest.mark.parametrize("relative", ["artifacts/chosen.joblib", "store-id"])
def test_put_refuses_the_store_s_own_names(store, relative):
    with pytest.raises(ArtifactIntegrityError, match="reserved"):
        store.put(relative, b"x")


def test_a_store_sent_to_another_process_reopens_its_filesystem(store):
    """Job workers get the store pickled (forkserver); its client is not part of it."""
    store.put("jobs/x.npy", b"rows")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get("jobs/x.npy") == b"rows"
    assert copy.describe() == store.describe()


def test_stamp_path_of_a_remote_store_is_local_and_per_url(s3):
    store = s3.open()
    digest = hashlib.sha256(s3.url.encode()).hexdigest()[:16]
    assert store.stamp_path == Path(tempfile.gettempdir()) / f"lloyd-{digest}.stamp"
    assert s3.open().stamp_path == store.stamp_path
    assert s3.open(f"{s3.url}-2").stamp_path != (store.stamp_path)


def test_credentials_in_an_s3_url_are_refused_and_not_repeated():
    with pytest.raises(ValueError, match="carries no credentials") as info:
        open_store("s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/prefix")
    assert "wJalrXUtnFEMI" not in str(info.value)


@pytest.mark.parametrize("url", ["nosuchscheme://bucket/prefix", "gs://bucket/prefix"])
def test_a_scheme_without_an_fsspec_implementation_is_a_clear_value_error(url):
    if url.startswith("gs:") and importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(ValueError, match="no installed fsspec implementation serves"):
        open_store(url)


def test_another_fsspec_filesystem_works_the_same(tmp_path):
    """Any fsspec URL, not only s3://: here fsspec's in-memory filesystem."""
    store = open_store(f"memory://lloyd-{os.getpid()}-{time.monotonic_ns()}")
    artifact = store.write(store.serialize([1, 2, 3]))
    assert store.load(artifact.path, artifact.sha256, label="x") == [1, 2, 3]
    store.put("jobs/x.npy", b"rows")
    assert [key for key, _ in store.listing("jobs/")] == ["jobs/x.npy"]
    assert store.write_store_id("a") == "a"
    assert store.write_store_id("b") == "a"
    assert store.sweep(set(), older_than_seconds=60, now=time.time() + HOUR).orphans == [
        artifact.path.removeprefix("artifacts/")
    ]


# -- a local folder --------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> ArtifactStore:
    return open_store(tmp_path / "store")


def test_open_store_on_a_folder_is_the_local_store(tmp_path):
    root = tmp_path / "store"
    for location in (root, str(root), root.as_uri()):
        store = open_store(location)
        assert store.root == root.resolve()
        assert store.folder == root.resolve() / "artifacts"
        assert store.folder.is_dir()
        assert store.stamp_path == root.resolve() / "registry.stamp"
        assert store.describe() == str(root.resolve())
        assert store.is_local
    assert ArtifactStore(root).root == root.resolve()


def test_job_inputs_in_a_folder(local):
    assert local.listing("jobs/") == []

    local.put("jobs/x.npy", b"first")
    local.put("jobs/x.npy", b"second")

    assert local.get("jobs/x.npy") == b"second"
    path = local.root / "jobs" / "x.npy"
    assert local.listing("jobs/") == [("jobs/x.npy", path.stat().st_mtime)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.npy"]  # no temporary left
    local.remove("jobs/x.npy")
    assert local.listing("jobs/") == []
    with pytest.raises(ArtifactMissing):
        local.get("jobs/x.npy")
    local.remove("jobs/x.npy")


def test_listing_shows_temporary_files_for_a_clean_up_by_age(local):
    local.put("jobs/x.npy", b"rows")
    stray = local.root / "jobs" / f"{TEMP_PREFIX}cut-short"
    stray.write_bytes(b"half")
    assert [key for key, _ in local.listing("jobs/")] == [
        f"jobs/{TEMP_PREFIX}cut-short",
        "jobs/x.npy",
    ]


def test_the_first_store_id_wins_in_a_folder(local, tmp_path):
    other = open_store(tmp_path / "store")
    assert local.read_store_id() is None
    assert local.write_store_id("  first-id\n") == "first-id"
    assert other.write_store_id("second-id") == "first-id"
    assert (local.root / "store-id").read_text() == "first-id\n"
    assert sorted(p.name for p in local.root.iterdir()) == ["artifacts", "store-id"]


def test_processes_racing_for_the_store_id_agree_in_a_folder(tmp_path):
    replicas = [open_store(tmp_path / "store") for _ in range(8)]
    start = threading.Barrier(len(replicas))

    def claim(index: int) -> str:
        start.wait()
        return replicas[index].write_store_id(f"id-{index}")

    with ThreadPoolExecutor(len(replicas)) as pool:
        assert len(set(pool.map(claim, range(len(replicas))))) == 1


def test_a_folder_at_an_artifact_path_is_refused_not_a_crash(local):
    (local.folder / "folder.joblib").mkdir()
    with pytest.raises(ArtifactIntegrityError, match="not a file") as info:
        local.load("artifacts/folder.joblib", "0" * 64, label="'line-7' version 1")
    assert info.value.status == 409
    assert not isinstance(info.value, ArtifactMissing)
    (local.root / "jobs" / "x.npy").mkdir(parents=True)
    with pytest.raises(ArtifactIntegrityError, match="not a file"):
        local.get("jobs/x.npy")
    local.delete("artifacts/folder.joblib")  # nothing to delete: no error, folder stays
    assert (local.folder / "folder.joblib").is_dir()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_at_an_artifact_path_is_refused_without_waiting(local):
    os.mkfifo(local.folder / "fifo.joblib")
    with pytest.raises(ArtifactIntegrityError, match="not a file"):
        local.load("artifacts/fifo.joblib", "0" * 64, label="x")


def test_a_symbolic_link_out_of_the_folder_is_refused(local, tmp_path):
    outside = tmp_path / "outside.npy"
    outside.write_bytes(b"secret")
    (local.root / "jobs").mkdir()
    (local.root / "jobs" / "x.npy").symlink_to(outside)
    with pytest.raises(ArtifactIntegrityError, match="outside the store"):
        local.get("jobs/x.npy")
    (local.folder / "x.joblib").symlink_to(outside)
    with pytest.raises(ArtifactIntegrityError, match="outside the store"):
        local.load("artifacts/x.joblib", hashlib.sha256(b"secret").hexdigest(), label="x")


@pytest.mark.parametrize("relative", ["../x.npy", "jobs/../../x.npy", "/tmp/x.npy"])
def test_a_named_path_outside_the_folder_is_refused(local, tmp_path, relative):
    with pytest.raises(ArtifactIntegrityError, match="outside the store"):
        local.put(relative, b"x")
    assert not (tmp_path / "x.npy").exists()
