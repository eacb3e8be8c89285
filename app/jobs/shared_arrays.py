"""SharedArray: a large numpy array handed to worker processes through shared memory, not a pipe.

A task's arguments reach its worker pickled through a pipe: for a 200,000 x 16 training set that
is 25.6 MB copied into a pickle, pushed through the pipe 64 KB at a time and copied twice more in
the worker, for every worker (a model selection starts one per candidate). Written once into an
anonymous file in memory instead, the array reaches each worker as a file descriptor that it
maps: no copy on either side, and nothing to clean up by name, since the kernel frees the file
when the last descriptor and mapping are gone, whether the worker ended or was killed.
"""

from __future__ import annotations

import logging
import mmap
import os
import tempfile
from collections.abc import Iterable
from multiprocessing.reduction import DupFd
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Smaller arrays travel in the pickle: a shared file costs a few system calls of its own.
MIN_SHARED_BYTES = 1 << 20


def _anonymous_file() -> int:
    """A file descriptor of a file that has no name: in memory on Linux, else an unlinked
    temporary file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("lloyd-array", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


def _write_all(fd: int, data: memoryview) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def _mapped(fd_wrapper: Any, shape: tuple[int, ...], dtype: str, fortran: bool) -> np.ndarray:
    """In the worker: the array, on a private (copy-on-write) mapping of the shared file, so
    that it is writable like an unpickled array, and a write never reaches the parent."""
    fd = fd_wrapper.detach()
    try:
        mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    flat = np.frombuffer(mapping, dtype=np.dtype(dtype))
    if fortran:
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


class SharedArray:
    """A copy of ``array`` in an anonymous shared file. Pickled for a worker process (as the
    runner starts it), it unpickles there as an equal ndarray of the same memory layout. The
    parent must ``close`` it once every worker has started."""

    def __init__(self, array: np.ndarray) -> None:
        self.shape = array.shape
        self.dtype = array.dtype.str
        # An F-ordered array stays F-ordered: its transpose is C-ordered, and that is written.
        self.fortran = not array.flags.c_contiguous
        rows = array.T if self.fortran else array
        self._fd = _anonymous_file()
        try:
            # rows.data is memoryview(rows), which numpy types as a Buffer on Python 3.12+ only.
            _write_all(self._fd, rows.data.cast("B"))
        except BaseException:
            os.close(self._fd)
            raise

    @staticmethod
    def worth_sharing(value: Any) -> bool:
        return (
            type(value) is np.ndarray  # not a subclass: it would come back as a plain array
            and value.nbytes >= MIN_SHARED_BYTES
            and value.dtype.kind in "biufc"  # plain numbers: their dtype string says it all
            and (value.flags.c_contiguous or value.flags.f_contiguous)
        )

    def close(self) -> None:
        os.close(self._fd)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # DupFd: the runner's process start (forkserver) sends the descriptor with the pickle.
        return _mapped, (DupFd(self._fd), self.shape, self.dtype, self.fortran)


def share_arrays(
    kwargs_list: Iterable[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[SharedArray]]:
    """Each keyword-argument dict with its large arrays replaced by SharedArrays, and those
    SharedArrays. An array passed to several tasks (the rows of a model selection's every
    candidate) is written once."""
    by_id: dict[int, SharedArray | None] = {}
    out: list[dict[str, Any]] = []
    try:
        for kwargs in kwargs_list:
            replaced = dict(kwargs)
            for key, value in kwargs.items():
                if not SharedArray.worth_sharing(value):
                    continue
                if id(value) not in by_id:
                    try:
                        by_id[id(value)] = SharedArray(value)
                    except OSError as exc:  # no memory file to be had: the pipe still works
                        log.warning("a task's array goes through the pipe: %s", exc)
                        by_id[id(value)] = None
                replaced[key] = by_id[id(value)] or value
            out.append(replaced)
    except BaseException:
        for shared in by_id.values():
            if shared is not None:
                shared.close()
        raise
    return out, [shared for shared in by_id.values() if shared is not None]
