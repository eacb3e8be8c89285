"""Where the values a service locates in its own input sit on the wire.

A service names a bad value by its place in what it was given (``["params", "n_clusters"]``,
``["instances", 0]``, ``["alias"]``); the route that translated the request says where that is
in the request (``["body", "params", "n_clusters"]``), and ``app.api.problems`` writes the JSON
pointer. Locations that already name a part of the request (the translators' own) stay."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.errors import LloydError, Location

Where = Callable[[Location], Location]
REQUEST_PARTS = frozenset({"body", "header", "path", "query"})


def _under(part: str) -> Where:
    def where(loc: Location) -> Location:
        return loc if loc and loc[0] in REQUEST_PARTS else [part, *loc]

    return where


in_body = _under("body")
in_path = _under("path")


def rows_at(rows: tuple[str, ...]) -> Where:
    """In the body, with the rows (a service's ``instances``) at ``rows``: ``("instances",)``
    in JSON, ``()`` when the body is the ``.npy`` array itself."""

    def where(loc: Location) -> Location:
        if loc and loc[0] == "instances":
            return ["body", *rows, *loc[1:]]
        return in_body(loc)

    return where


@contextmanager
def located(where: Where) -> Iterator[None]:
    """Errors raised inside, their locations translated by ``where``."""
    try:
        yield
    except LloydError as exc:
        exc.relocate(where)
        raise
