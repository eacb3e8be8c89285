"""Where an artifact store keeps its bytes: a local folder, or any fsspec filesystem (s3://)."""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import fsspec
from fsspec.core import split_protocol, strip_protocol

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
LOCAL_PROTOCOLS = frozenset({"file", "local"})
S3_PROTOCOLS = frozenset({"s3", "s3a"})
# Object stores have no folders; there, fsspec's makedirs may even create a bucket.
OBJECT_PROTOCOLS = S3_PROTOCOLS | {"gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}
# Filesystems without hard links refuse os.link with one of these.
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})


class KeyOutsideStore(ValueError):
    """A key that, once the filesystem resolved it (symbolic links), leads out of the store."""


class NotAFile(OSError):
    """Something other than a regular file (a folder, a FIFO, ...) sits at a key."""


class ObjectStore(Protocol):
    """Bytes under '/'-separated keys relative to one root. Keys reach here already checked
    lexically (relative, no '..'); the store still refuses what its filesystem would resolve
    to somewhere outside (``check``)."""

    @property
    def root(self) -> Path | str: ...

    def locate(self, key: str) -> Path | str: ...

    def describe(self) -> str: ...

    def check(self, key: str) -> None: ...

    def make_folder(self, key: str) -> None: ...

    def read(self, key: str) -> bytes: ...

    def publish(self, key: str, data: bytes) -> None: ...

    def create(self, key: str, data: bytes) -> bool: ...

    def discard(self, key: str) -> bool: ...

    def files(self, key: str, *, recursive: bool) -> list[tuple[str, float]]: ...

    def probe(self, key: str) -> bool: ...

    def settle(self, key: str) -> None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalFolder:
    """A folder on this host: a file appears under its final name only once it is complete and
    durable (fsync, rename, fsync of the folder)."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()

    @property
    def root(self) -> Path:
        return self._root

    def locate(self, key: str) -> Path:
        return self._root / key

    def describe(self) -> str:
        return str(self._root)

    def check(self, key: str) -> None:
        path = self.locate(key).resolve()
        if path != self._root and self._root not in path.parents:
            raise KeyOutsideStore(key)

    def make_folder(self, key: str) -> None:
        self._ensure_folder(self.locate(key))

    def _ensure_folder(self, folder: Path) -> None:
        if folder.is_dir():
            return
        self._ensure_folder(folder.parent)
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile by another process
            return
        # A new folder's entry lives in its parent: without this a crash may lose the folder
        # with every file fsynced into it.
        _fsync_dir(folder.parent)

    def read(self, key: str) -> bytes:
        """FileNotFoundError when nothing is there; NotAFile for a folder, FIFO or device."""
        path = self.locate(key)
        try:
            # O_NONBLOCK: opening a FIFO planted at an artifact's path must not hang a worker.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except NotADirectoryError:  # a file where a folder of the key should be
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None
        try:
            mode = os.fstat(fd).st_mode
            if not S_ISREG(mode):
                kind = "a folder" if S_ISDIR(mode) else "a special file (FIFO, socket, device)"
                raise NotAFile(errno.EISDIR if S_ISDIR(mode) else errno.EINVAL, kind, str(path))
            handle = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with handle:
            return handle.read()

    def _temporary(self, final: Path, data: bytes) -> str:
        """A durable temporary file holding ``data``, in ``final``'s folder (so that a rename or
        link to ``final`` stays on one filesystem)."""
        self._ensure_folder(final.parent)
        fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return temp_name

    def publish(self, key: str, data: bytes) -> None:
        final = self.locate(key)
        temp_name = self._temporary(final, data)
        try:
            os.replace(temp_name, final)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if nothing is there; True when this call wrote it.

        A hard link of a complete temporary file is as exclusive as ``O_EXCL`` and, unlike an
        ``O_EXCL`` create followed by a write, never shows a reader an empty file."""
        final = self.locate(key)
        temp_name = self._temporary(final, data)
        try:
            os.link(temp_name, final)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            return self._create_exclusive(final, data)
        finally:
            Path(temp_name).unlink(missing_ok=True)
        _fsync_dir(final.parent)
        return True

    @staticmethod
    def _create_exclusive(final: Path, data: bytes) -> bool:
        """``create`` on a filesystem without hard links: readers may briefly see it empty."""
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(final.parent)
        return True

    def discard(self, key: str) -> bool:
        """Remove the file at ``key``; False when there was none (a folder is left alone)."""
        try:
            self.locate(key).unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        return True

    def files(self, key: str, *, recursive: bool) -> list[tuple[str, float]]:
        """(key, mtime) of the regular files in folder ``key`` (and below, if ``recursive``)."""
        top = self.locate(key)
        if recursive:
            paths = [Path(where, name) for where, _, names in os.walk(top) for name in names]
        else:
            try:
                paths = [Path(entry.path) for entry in os.scandir(top)]
            except (FileNotFoundError, NotADirectoryError):
                return []
        found: list[tuple[str, float]] = []
        for path in paths:
            try:
                info = path.stat()
            except (FileNotFoundError, NotADirectoryError):  # removed meanwhile
                continue
            if S_ISREG(info.st_mode):
                found.append((path.relative_to(self._root).as_posix(), info.st_mtime))
        return sorted(found)

    def probe(self, key: str) -> bool:
        try:
            with tempfile.TemporaryFile(prefix=TEMP_PREFIX, dir=self.locate(key)) as handle:
                handle.write(b"ok")
            return True
        except OSError:
            return False

    def settle(self, key: str) -> None:
        """Make removals from folder ``key`` durable."""
        _fsync_dir(self.locate(key))


def _modified(entry: dict[str, Any]) -> float | None:
    """Last-modified epoch seconds from an fsspec info dict: each implementation names it its
    own way (s3fs: LastModified; gcsfs: updated; local: mtime; memory: created)."""
    for name in ("LastModified", "last_modified", "updated", "mtime", "modified", "created"):
        value = entry.get(name)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                continue
        if isinstance(value, datetime):
            if value.tzinfo is None:  # fsspec's naive times are UTC
                value = value.replace(tzinfo=UTC)
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def _filesystem_from_url(url: str) -> fsspec.AbstractFileSystem:
    fs, _ = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return fs


def _s3_filesystem(endpoint_url: str | None) -> fsspec.AbstractFileSystem:
    import s3fs  # only a store on S3 needs it (and its boto stack)

    # Credentials and region come from the standard AWS chain (environment, config files,
    # instance roles). Listings are never cached: other replicas write to the same prefix.
    # skip_instance_cache: stores with different endpoints must not share one client.
    return s3fs.S3FileSystem(
        endpoint_url=endpoint_url, skip_instance_cache=True, use_listings_cache=False
    )


class RemoteFilesystem:
    """Keys under ``url`` on an fsspec filesystem. Writes go to a temporary key first and are
    copied to their final key, so that a key never holds a partial write on a filesystem that
    could show one, and a crashed write leaves a temporary key the sweep recognises."""

    def __init__(
        self,
        url: str,
        base: str,
        open_filesystem: Callable[[], fsspec.AbstractFileSystem],
        *,
        folders: bool,
    ) -> None:
        """``url`` names the store (no credentials); ``base`` is its path as the filesystem
        spells it; ``folders``: whether parents must be made before a write (not on S3)."""
        self._url = url
        self._base = base
        self._open_filesystem = open_filesystem
        self._folders = folders
        self._fs: fsspec.AbstractFileSystem | None = None
        self._pid = 0

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        # An async filesystem refuses to run in a forked child (its event loop and connections
        # belong to the parent): each process opens its own.
        if self._fs is None or self._pid != os.getpid():
            self._fs, self._pid = self._open_filesystem(), os.getpid()
        return self._fs

    def __getstate__(self) -> dict[str, Any]:
        # Sent to a worker process, a store opens its filesystem there.
        return self.__dict__ | {"_fs": None, "_pid": 0}

    @property
    def root(self) -> str:
        return self._url

    def locate(self, key: str) -> str:
        return f"{self._url}/{key}"

    def describe(self) -> str:
        return self._url

    def check(self, key: str) -> None:
        """Keys are names, not paths a filesystem resolves: the lexical check was enough."""

    def _path(self, key: str) -> str:
        """The filesystem's path of ``key`` ("" is the store's root)."""
        return "/".join(part for part in (self._base, key) if part)

    def make_folder(self, key: str) -> None:
        if self._folders:
            self.fs.makedirs(self._path(key), exist_ok=True)

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data: bytes = self.fs.cat_file(path)
        except IsADirectoryError:
            raise NotAFile(errno.EISDIR, "a folder", path) from None
        return data

    def _parent(self, key: str) -> str:
        return key.rpartition("/")[0]

    def _temporary_key(self, key: str) -> str:
        parent = self._parent(key)
        name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        return f"{parent}/{name}" if parent else name

    def publish(self, key: str, data: bytes) -> None:
        self.make_folder(self._parent(key))
        temporary = self._path(self._temporary_key(key))
        try:
            self.fs.pipe_file(temporary, data)
            self.fs.cp_file(temporary, self._path(key))
        except BaseException:
            self._discard_quietly(temporary)
            raise
        self._discard_quietly(temporary)

    def _discard_quietly(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception as exc:  # the write itself is done or failed; the sweep gets this
            log.warning("temporary object %s not removed (%s); a sweep will", path, exc)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist. On S3 this is a conditional PUT
        (If-None-Match: *), exclusive among replicas; fsspec's other filesystems check first."""
        self.make_folder(self._parent(key))
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except FileExistsError:
            return False
        return True

    def discard(self, key: str) -> bool:
        """Remove ``key``. An object store cannot tell whether there was one: True."""
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            return False
        return True

    def files(self, key: str, *, recursive: bool) -> list[tuple[str, float]]:
        path = self._path(key)
        fs = self.fs
        fs.invalidate_cache(path)
        try:
            if recursive:
                entries = list(fs.find(path, withdirs=False, detail=True).values())
            else:
                entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        inside = f"{path}/"
        found: list[tuple[str, float]] = []
        for entry in entries:
            name = str(entry["name"])
            # Keys ending in '/' are folder markers some tools write, not files.
            if entry.get("type") != "file" or not name.startswith(inside) or name.endswith("/"):
                continue
            modified = _modified(entry)
            if modified is None:
                try:
                    modified = fs.modified(name).timestamp()
                except Exception:  # no age known: count it as new, so no sweep takes it
                    modified = time.time()
            relative = name[len(self._base) + 1 :] if self._base else name
            found.append((relative, modified))
        return sorted(found)

    def probe(self, key: str) -> bool:
        temporary = self._path(self._temporary_key(f"{key}/probe" if key else "probe"))
        try:
            self.fs.pipe_file(temporary, b"ok")
            self.fs.rm_file(temporary)
            return True
        except Exception:  # any failure (no bucket, no credentials, no network) means: not ready
            return False

    def settle(self, key: str) -> None:
        """Nothing to do: an object store's delete is durable once it answers."""


def without_credentials(url: str) -> str:
    """``url`` without the user and password a URL may carry, for roots and log lines."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def local_path(location: str) -> Path | None:
    """The folder ``location`` names (a path or a file:// URL), or None for any other URL."""
    protocol, _ = split_protocol(location)
    if protocol is None:
        return Path(location)
    if protocol not in LOCAL_PROTOCOLS:
        return None
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"models store {location!r}: a file:// URL names a folder on this host")
    return Path(url2pathname(parts.path))


def remote_filesystem(location: str, *, s3_endpoint_url: str | None) -> RemoteFilesystem:
    """The store at an fsspec URL; ValueError if no installed fsspec implementation serves its
    scheme (e.g. gs:// without gcsfs)."""
    protocol, path = split_protocol(location)
    assert protocol is not None
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as exc:
        raise ValueError(
            f"models store {without_credentials(location)!r}: no installed fsspec "
            f"implementation serves {protocol}:// ({exc}); use a folder, an s3:// URL, or "
            "install the package for that scheme"
        ) from None
    if not path.strip("/"):
        raise ValueError(f"models store {location!r}: the URL names no bucket or folder")
    if protocol in S3_PROTOCOLS and "@" in urlsplit(location).netloc:
        # s3fs would take "key:secret@" for part of the bucket's name.
        raise ValueError(
            f"models store {without_credentials(location)!r}: an s3:// URL carries no "
            "credentials; they come from the AWS environment (AWS_ACCESS_KEY_ID, ...), config "
            "files or the instance's role"
        )
    url = without_credentials(location).rstrip("/")
    base = strip_protocol(location).rstrip("/")
    # A partial of module-level names pickles: a worker process can reopen it.
    if protocol in S3_PROTOCOLS:
        opener = functools.partial(_s3_filesystem, s3_endpoint_url)
    else:
        opener = functools.partial(_filesystem_from_url, location)
    return RemoteFilesystem(url, base, opener, folders=protocol not in OBJECT_PROTOCOLS)


def shared_stamp_path(url: str) -> Path:
    """A file on this host for the processes that share the store at ``url``."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lloyd-{digest}.stamp"
