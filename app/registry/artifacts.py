"""ArtifactStore: joblib artifacts in a folder or at an fsspec URL (s3://), published atomically
and verified by sha256 before use, beside the few other files replicas share through the store."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import time
import uuid
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib

from app.errors import ArtifactIntegrityError, ArtifactMissing
from app.registry.object_store import (
    TEMP_PREFIX,
    KeyOutsideStore,
    LocalFolder,
    NotAFile,
    ObjectStore,
    local_path,
    remote_filesystem,
    shared_stamp_path,
)

__all__ = [
    "ARTIFACT_SUFFIX",
    "TEMP_PREFIX",
    "ArtifactStore",
    "StoredArtifact",
    "SweepReport",
    "open_store",
]

ARTIFACT_SUFFIX = ".joblib"
ARTIFACTS = "artifacts"  # the folder (or prefix) of the artifacts, under the store's root
STORE_ID = "store-id"
STAMP_NAME = "registry.stamp"


@dataclass(frozen=True)
class StoredArtifact:
    path: str  # relative to the store's root
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class SweepReport:
    """What a sweep removed from the artifact folder (file names, sorted)."""

    orphans: list[str] = field(default_factory=list)  # artifacts no version row refers to
    temporary: list[str] = field(default_factory=list)  # writes that never reached their rename

    @property
    def removed(self) -> int:
        return len(self.orphans) + len(self.temporary)

    def __str__(self) -> str:
        return (
            f"{len(self.orphans)} orphan artifact(s) {_some(self.orphans)} and "
            f"{len(self.temporary)} temporary file(s) {_some(self.temporary)}"
        )


def _some(names: list[str], shown: int = 10) -> str:
    """The first ``shown`` names, so that one log line stays one line after a big clean-up."""
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return f"[{', '.join(names[:shown])}{more}]"


def open_store(location: str | Path, *, s3_endpoint_url: str | None = None) -> ArtifactStore:
    """A folder path (or file:// URL) -> the local store (existing behaviour, fsync + rename);
    any other fsspec URL (s3://bucket/prefix) -> the same store on that filesystem.

    ``s3_endpoint_url`` (an S3-compatible server: MinIO, moto, ...) applies to s3:// only.
    Raises ValueError when no installed fsspec implementation serves the URL's scheme."""
    if isinstance(location, Path):
        return ArtifactStore(location)
    folder = local_path(location)
    if folder is not None:
        return ArtifactStore(folder)
    return ArtifactStore(remote_filesystem(location, s3_endpoint_url=s3_endpoint_url))


class ArtifactStore:
    """Artifacts live under ``<root>/artifacts/`` with random names: nothing a client sends (a
    model name, say) ever becomes part of a path. Other files (job inputs, the store id) live
    beside that folder under names the service chooses."""

    def __init__(self, root: Path | str | ObjectStore) -> None:
        """``root``: a folder, for the local store; or the objects of another filesystem, as
        ``open_store`` builds them for a URL."""
        objects: ObjectStore = (
            LocalFolder(Path(root)) if isinstance(root, str | os.PathLike) else root
        )
        self.objects = objects
        self.root: Path | str = objects.root
        self.folder: Path | str = objects.locate(ARTIFACTS)
        objects.make_folder(ARTIFACTS)

    def describe(self) -> str:
        """The folder or the URL, for log lines (a URL's credentials are never kept)."""
        return self.objects.describe()

    @property
    def is_local(self) -> bool:
        """Whether the store is a folder on this host (whose file times are this host's clock)."""
        return isinstance(self.objects, LocalFolder)

    @property
    def stamp_path(self) -> Path:
        """A local file that the processes of this host using this store share."""
        if isinstance(self.objects, LocalFolder):  # as before: beside the artifacts folder
            return self.objects.root / STAMP_NAME
        return shared_stamp_path(self.objects.describe())

    @staticmethod
    def serialize(obj: Any) -> bytes:
        buffer = io.BytesIO()
        joblib.dump(obj, buffer)
        return buffer.getvalue()

    # -- paths ---------------------------------------------------------------------------------
    def _key(self, relative: str, *, what: str = "path", root_ok: bool = False) -> str:
        """``relative`` as a key ('/'-separated, no empty or '.' parts), refused if it could
        lead out of the store: absolute, with '..', or resolved outside by the filesystem."""
        text = os.fspath(relative)
        parts = text.split("/")
        key = "/".join(part for part in parts if part not in ("", "."))
        if "\x00" in text or text.startswith("/") or ".." in parts or not (key or root_ok):
            raise ArtifactIntegrityError(f"{what} {relative!r} is outside the store")
        try:
            self.objects.check(key)
        except KeyOutsideStore:
            raise ArtifactIntegrityError(f"{what} {relative!r} is outside the store") from None
        return key

    def _artifact_key(self, relative: str) -> str:
        key = self._key(relative, what="artifact path")
        if not key.startswith(f"{ARTIFACTS}/"):
            raise ArtifactIntegrityError(f"artifact path {relative!r} is outside the store")
        return key

    # -- artifacts -----------------------------------------------------------------------------
    def write(self, data: bytes) -> StoredArtifact:
        """Publish ``data`` under a new random name: in a folder, a temporary file is fsynced,
        renamed into place and the folder fsynced; elsewhere a temporary key is written, then
        copied to the final key. Once this returns, the artifact survives a crash."""
        key = f"{ARTIFACTS}/{uuid.uuid4().hex}{ARTIFACT_SUFFIX}"
        self.objects.publish(key, data)
        return StoredArtifact(
            path=key, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
        )

    def load(self, relative: str, sha256: str, *, label: str) -> Any:
        """Read the artifact, check its sha256, and only then unpickle it."""
        key = self._artifact_key(relative)
        try:
            data = self.objects.read(key)
        except FileNotFoundError:
            raise ArtifactMissing(
                f"the artifact of {label} is missing from the store; delete this version "
                "or restore the file"
            ) from None
        except NotAFile as exc:
            raise ArtifactIntegrityError(
                f"the artifact of {label} is {exc.strerror} in the store, not a file: it will "
                "not be loaded; delete this version or restore the file"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ArtifactIntegrityError(
                f"the artifact of {label} does not match its recorded sha256 "
                f"(expected {sha256[:12]}..., found {actual[:12]}...): it was changed or "
                "damaged on disk and will not be loaded; delete this version or retrain",
                extra={"expected_sha256": sha256, "actual_sha256": actual},
            )
        return joblib.load(io.BytesIO(data))

    def delete(self, relative: str) -> None:
        self.objects.discard(self._artifact_key(relative))

    def sweep(
        self, referenced: Set[str], *, older_than_seconds: float, now: float | None = None
    ) -> SweepReport:
        """Remove what a crash can leave behind: temporary files, and artifacts that no version
        refers to (``referenced``: artifact paths as the database stores them, relative to the
        root). Other files are never touched, nor anything below a subfolder.

        Only files last written more than ``older_than_seconds`` before ``now`` go, so that
        another process's write, whose row is not committed yet, is left alone. ``now`` should
        be a time read before ``referenced`` was: then an artifact committed after that read is
        spared too, unless its commit came more than ``older_than_seconds`` after its write.
        On an object store the age is the object's LastModified, in the server's clock."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        kept = {posixpath.normpath(path) for path in referenced}
        orphans: list[str] = []
        temporary: list[str] = []
        for key, modified in self.objects.files(ARTIFACTS, recursive=False):
            name = key.rpartition("/")[2]
            if name.startswith(TEMP_PREFIX):
                found = temporary
            elif name.endswith(ARTIFACT_SUFFIX) and key not in kept:
                found = orphans
            else:
                continue
            # A file gone meanwhile was renamed or removed by another process: not ours.
            if modified < cutoff and self.objects.discard(key):
                found.append(name)
        if orphans or temporary:
            self.objects.settle(ARTIFACTS)
        return SweepReport(orphans=sorted(orphans), temporary=sorted(temporary))

    def is_writable(self) -> bool:
        """Readiness: a small temporary file (or key) can be written in the artifacts folder."""
        return self.objects.probe(ARTIFACTS)

    # -- other shared files --------------------------------------------------------------------
    def put(self, relative: str, data: bytes) -> None:
        """Publish ``data`` at ``relative`` (e.g. ``jobs/<job-id>.npy``) as ``write`` does:
        readers see the old content or the whole new one, never a part."""
        key = self._key(relative)
        if key in (STORE_ID, ARTIFACTS) or key.startswith(f"{ARTIFACTS}/"):
            # Artifacts get random names from write(); the store id is written once.
            raise ArtifactIntegrityError(f"path {relative!r} is reserved in the store")
        self.objects.publish(key, data)

    def get(self, relative: str) -> bytes:
        key = self._key(relative)
        try:
            return self.objects.read(key)
        except FileNotFoundError:
            raise ArtifactMissing(f"{relative!r} is missing from the store") from None
        except NotAFile as exc:
            raise ArtifactIntegrityError(f"{relative!r} is {exc.strerror}, not a file") from None

    def remove(self, relative: str) -> None:
        self.objects.discard(self._key(relative))

    def listing(self, prefix: str) -> list[tuple[str, float]]:
        """(relative path, last-modified epoch seconds) of every file below folder ``prefix``
        (e.g. ``"jobs/"``), sorted; ``[]`` when there is none. Temporary files of writes in
        progress, or that a crash cut short, are listed too (their names start with
        TEMP_PREFIX), so that a clean-up by age can find them."""
        return self.objects.files(self._key(prefix, root_ok=True), recursive=True)

    def read_store_id(self) -> str | None:
        """The text of the ``store-id`` file at the root, stripped; None when there is none."""
        try:
            data = self.objects.read(STORE_ID)
        except FileNotFoundError:
            return None
        # Empty only while an O_EXCL create (filesystems without hard links) has not written.
        return data.decode("utf-8", errors="replace").strip() or None

    def write_store_id(self, value: str) -> str:
        """Write ``value`` as the store id unless the store already has one, and return the one
        it holds: the first writer's, whoever that was (local: an exclusive hard link of a
        complete file; S3: a conditional PUT, If-None-Match: *)."""
        text = value.strip()
        if not text or "\n" in text:
            raise ValueError(f"a store id is one non-empty line, not {value!r}")
        for attempt in range(5):
            self.objects.create(STORE_ID, f"{text}\n".encode())
            held = self.read_store_id()
            if held is not None:
                return held
            time.sleep(0.05 * (attempt + 1))  # the other writer's file, not written yet
        raise OSError(f"the store id in {self.describe()} stays empty")
