"""Rows as the client takes them (numpy arrays, DataFrames, lists of lists) and as it sends them:
a JSON body, or a ``.npy`` one; and ``.npy`` answers read back."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
from numpy.typing import NDArray

NPY = "application/x-npy"
JSON = "application/json"
REQUEST_HEADER = "Lloyd-Request"
RESPONSE_HEADER = "Lloyd-Response"


@runtime_checkable
class FrameLike(Protocol):
    """A pandas DataFrame, or anything with its ``to_numpy()`` and ``columns`` (pandas is
    never imported)."""

    @property
    def columns(self) -> Any: ...

    def to_numpy(self) -> Any: ...


RowsLike: TypeAlias = NDArray[Any] | FrameLike | Sequence[Sequence[float]]


@dataclass(frozen=True)
class Rows:
    """What was given, read once. ``matrix``: the rows as a float64 matrix, when they are a
    2-D numeric array; else None, and ``values`` are sent as JSON as they are, for the server
    to say what is wrong with them (it knows best: ragged rows, strings, ...).
    ``feature_names``: a frame's column names, when they are all strings."""

    matrix: NDArray[np.float64] | None
    values: object
    feature_names: tuple[str, ...] | None

    @property
    def size(self) -> int:
        return 0 if self.matrix is None else int(self.matrix.size)

    @property
    def finite(self) -> bool:
        return self.matrix is None or bool(np.isfinite(self.matrix).all())

    def instances(self) -> object:
        """The rows as JSON ``instances``."""
        return _plain(self.matrix if self.matrix is not None else self.values)

    def records(self) -> object:
        """The rows as JSON ``records`` (objects keyed by the feature names)."""
        assert self.feature_names is not None
        rows = self.instances()
        if not isinstance(rows, list):
            return rows
        names = self.feature_names
        return [
            dict(zip(names, row, strict=False)) if isinstance(row, list) else row for row in rows
        ]

    def in_order(self, names: Sequence[str]) -> Rows | None:
        """The columns reordered to ``names`` (a model's features), or None when the frame
        does not hold exactly those columns."""
        if self.matrix is None or self.feature_names is None:
            return None
        if sorted(names) != sorted(self.feature_names) or len(set(names)) != len(names):
            return None
        index = [self.feature_names.index(name) for name in names]
        return Rows(self.matrix[:, index], self.values, tuple(names))


def read_rows(X: RowsLike) -> Rows:
    names: tuple[str, ...] | None = None
    values: object = X
    if isinstance(X, FrameLike):
        columns = list(X.columns)
        if columns and all(isinstance(c, str) for c in columns):
            names = tuple(columns)
        values = X.to_numpy()
    return Rows(_numeric_matrix(values), values, names)


def _numeric_matrix(values: object) -> NDArray[np.float64] | None:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged, or not an array at all
        return None
    # Booleans are not numbers to the API: left to the server, which refuses them.
    if array.ndim != 2 or array.dtype.kind not in "fiu":
        return None
    return np.ascontiguousarray(array, dtype=np.float64)


def npy_bytes(matrix: NDArray[np.float64]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype="<f8"), allow_pickle=False)
    return buffer.getvalue()


def _plain(values: object) -> object:
    """Arrays (numpy's, a pandas Series, anything with ``tolist``) as lists."""
    tolist = getattr(values, "tolist", None)
    return tolist() if callable(tolist) else values


def _jsonable(value: object) -> object:
    """What ``json`` cannot write itself: arrays and numpy scalars; anything else as text, for
    the server to refuse where it stands."""
    if isinstance(value, np.generic):
        return value.item()
    plain = _plain(value)
    return str(value) if plain is value else plain


def json_bytes(document: Mapping[str, Any]) -> bytes:
    # ASCII only: the same text fits a header (Latin-1 on the wire) and a body.
    return json.dumps(document, default=_jsonable, separators=(",", ":")).encode()


def read_npy_answer(
    content: bytes, header: str | None, row_fields: Sequence[str]
) -> dict[str, Any]:
    """A ``.npy`` answer as the JSON answer's fields: the array's (one field, a structured
    array's fields, or a 0-d number) plus the ``Lloyd-Response`` header's."""
    array = np.load(io.BytesIO(content), allow_pickle=False)
    fields: dict[str, Any] = json.loads(header) if header else {}
    if array.dtype.names:
        fields.update({name: np.array(array[name]) for name in array.dtype.names})
    elif array.ndim == 0:
        fields[row_fields[0]] = array.item()
    else:
        fields[row_fields[0]] = array
    return fields
