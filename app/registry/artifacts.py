"""ArtifactStore: joblib artifacts on disk, written atomically and verified by sha256 before use."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

from app.errors import ArtifactIntegrityError

TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StoredArtifact:
    path: str  # relative to the store's root
    sha256: str
    size_bytes: int


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
        final = self.folder / f"{uuid.uuid4().hex}.joblib"
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
            raise ArtifactIntegrityError(
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

    def is_writable(self) -> bool:
        try:
            with tempfile.TemporaryFile(prefix=TEMP_PREFIX, dir=self.folder) as handle:
                handle.write(b"ok")
            return True
        except OSError:
            return False
