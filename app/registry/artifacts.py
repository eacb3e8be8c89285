"""ArtifactStore: joblib artifacts on disk, written atomically and verified by sha256 before use."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
import uuid
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

import joblib

from app.errors import ArtifactIntegrityError, ArtifactMissing

TEMP_PREFIX = ".tmp-"
ARTIFACT_SUFFIX = ".joblib"


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """Artifacts live under ``root/artifacts/`` with random names: nothing a client sends (a
    model name, say) ever becomes part of a path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.folder = self.root / "artifacts"
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def serialize(obj: Any) -> bytes:
        buffer = io.BytesIO()
        joblib.dump(obj, buffer)
        return buffer.getvalue()

    def write(self, data: bytes) -> StoredArtifact:
        """Write ``data`` to a temporary file in the same folder, fsync it, rename it into place
        and fsync the folder: once this returns, the artifact survives a crash."""
        final = self.folder / f"{uuid.uuid4().hex}{ARTIFACT_SUFFIX}"
        fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, final)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(self.folder)
        return StoredArtifact(
            path=str(final.relative_to(self.root)),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
        )

    def _resolve(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.folder not in path.parents:
            raise ArtifactIntegrityError(f"artifact path {relative!r} is outside the store")
        return path

    def load(self, relative: str, sha256: str, *, label: str) -> Any:
        """Read the artifact, check its sha256, and only then unpickle it."""
        path = self._resolve(relative)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(
                f"the artifact of {label} is missing from the store; delete this version "
                "or restore the file"
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
        self._resolve(relative).unlink(missing_ok=True)

    def sweep(
        self, referenced: Set[str], *, older_than_seconds: float, now: float | None = None
    ) -> SweepReport:
        """Remove what a crash can leave behind: temporary files, and artifacts that no version
        refers to (``referenced``: artifact paths as the database stores them, relative to the
        root). Other files are never touched.

        Only files last written more than ``older_than_seconds`` before ``now`` go, so that
        another process's write, whose row is not committed yet, is left alone. ``now`` should
        be a time read before ``referenced`` was: then an artifact committed after that read is
        spared too, unless its commit came more than ``older_than_seconds`` after its write."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        kept = {Path(os.path.normpath(self.root / path)) for path in referenced}
        orphans: list[str] = []
        temporary: list[str] = []
        for path in self.folder.iterdir():
            if path.name.startswith(TEMP_PREFIX):
                found = temporary
            elif path.name.endswith(ARTIFACT_SUFFIX) and path not in kept:
                found = orphans
            else:
                continue
            try:
                info = path.stat()
                if not S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:  # renamed or removed meanwhile by another process
                continue
            found.append(path.name)
        if orphans or temporary:
            _fsync_dir(self.folder)
        return SweepReport(orphans=sorted(orphans), temporary=sorted(temporary))

    def is_writable(self) -> bool:
        try:
            with tempfile.TemporaryFile(prefix=TEMP_PREFIX, dir=self.folder) as handle:
                handle.write(b"ok")
            return True
        except OSError:
            return False
