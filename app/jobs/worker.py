"""What runs inside a worker process: one task, its answer sent back through a pipe."""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from threadpoolctl import threadpool_limits

from app.errors import LloydError, error_document

# Workers run below the API process's priority: a long fit must not slow serving down.
WORKER_NICENESS = 10


def run_task(
    conn: Connection, fn: Callable[..., Any], kwargs: dict[str, Any], threads: int
) -> None:
    """Run ``fn(**kwargs)`` and send ``("ok", result)``, ``("error", document)`` or
    ``("crash", text)``."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    try:
        with threadpool_limits(limits=threads):
            result = fn(**kwargs)
        conn.send(("ok", result))
    except LloydError as exc:
        conn.send(("error", error_document(exc)))
    except Exception as exc:  # a bug: report it, the parent logs it and fails the job
        conn.send(("crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()
