"""Binary content: rows posted as a NumPy ``.npy`` array, answers sent as one.

A request with ``Content-Type: application/x-npy`` carries the rows as its body (a 2-D numeric
array, read without a copy and never unpickled); every other field of the JSON request goes,
as a JSON object, in the ``Lloyd-Request`` header. An answer asked for with
``Accept: application/x-npy`` carries the operation's per-row result as its body: one array
(``labels``, ``probabilities``, ``distances``, ``scores``), a structured array with one named
field per per-row result where there are several (``anomalies``: ``anomaly_scores``,
``is_anomaly``, ``percentiles``; ``sample``: ``instances``, ``components``), or a 0-d array for
a single number (``score``, ``bic``, ``aic``); every other field is in the ``Lloyd-Response``
header as JSON.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from app.errors import InvalidInput, NotAcceptable

NPY_MEDIA_TYPE = "application/x-npy"
# Longest .npy header read (numpy writes a few hundred bytes; version 2 allows more).
HEADER_LIMIT = 1 << 20
REQUEST_HEADER = "lloyd-request"
RESPONSE_HEADER = "Lloyd-Response"

_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _bad(detail: str) -> InvalidInput:
    return InvalidInput(detail, at=["body"])


def read_npy(raw: bytes | bytearray, *, what: str = "rows") -> np.ndarray:
    """The body's array as a float64 matrix: a view of ``raw`` when it is already C-ordered
    little-endian float64, one converted copy otherwise."""
    # The header is read from a copy of the body's start only: BytesIO copies a bytearray.
    stream = io.BytesIO(bytes(memoryview(raw)[:HEADER_LIMIT]))
    try:
        version = np.lib.format.read_magic(stream)
        reader = _READERS.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = reader(stream)
    except ValueError as exc:
        raise _bad(f"the body is not a .npy array ({exc}); write it with numpy.save") from None
    if dtype.hasobject or dtype.kind not in "fiu" or dtype.fields is not None:
        raise _bad(f"{what} must be a numeric array (float or integer), not dtype {dtype.str}")
    if len(shape) != 2:
        raise _bad(f"{what} must be a 2-D array (rows x features), not of shape {shape}")
    if shape[0] == 0:
        raise _bad("no rows were posted: send at least one")
    if shape[1] == 0:
        raise _bad("rows have no features: send at least one value per row")
    count = math.prod(shape)
    offset = stream.tell()
    if len(raw) - offset != count * dtype.itemsize:
        raise _bad(
            f"the .npy body holds {len(raw) - offset} bytes of data; shape {shape} of "
            f"{dtype.str} needs {count * dtype.itemsize}"
        )
    flat = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    X = flat.reshape(shape, order="F" if fortran else "C")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        row, column = np.argwhere(~np.isfinite(X))[0]
        raise InvalidInput(
            f"row {row}, feature {column} is {X[row, column]}: values must be finite numbers",
            at=["body", int(row), int(column)],
        )
    return X


def request_fields(header: str | None) -> dict[str, Any]:
    """The ``Lloyd-Request`` header's JSON object (the request's fields other than the rows)."""
    if header is None or not header.strip():
        return {}
    try:
        fields = orjson.loads(header.encode("latin-1"))  # the bytes sent, read as UTF-8
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"the Lloyd-Request header is not JSON ({exc})", at=["header", "lloyd-request"]
        ) from None
    if not isinstance(fields, dict):
        raise InvalidInput(
            "the Lloyd-Request header must be a JSON object", at=["header", "lloyd-request"]
        )
    return fields


def wants_npy(accept: str | None) -> bool:
    """Whether the client prefers ``.npy`` over JSON (by ``Accept`` q-values; JSON on a tie)."""
    if not accept or NPY_MEDIA_TYPE not in accept.lower():
        return False
    best: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        best[media.lower()] = max(quality, best.get(media.lower(), 0.0))
    json_quality = max(best.get("application/json", 0.0), best.get("*/*", 0.0))
    return best.get(NPY_MEDIA_TYPE, 0.0) > json_quality


def _header_json(fields: dict[str, Any]) -> str:
    text = orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    # Header values are Latin-1 on the wire: escape anything else.
    return text if text.isascii() else json.dumps(json.loads(text), ensure_ascii=True)


def npy_bytes(array: np.ndarray) -> memoryview:
    """``array`` as a ``.npy`` file, written once into a buffer of its final size (no
    growing stream, no copy of the whole file at the end)."""
    array = np.require(array, requirements="C")  # (ascontiguousarray makes 0-d arrays 1-d)
    header = io.BytesIO()
    description = np.lib.format.header_data_from_array_1_0(array)
    try:
        np.lib.format.write_array_header_1_0(header, description)
    except ValueError:  # a header over 64 KiB (a structured dtype of very many fields)
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, description)
    start = header.tell()
    buffer = bytearray(start + array.nbytes)
    buffer[:start] = header.getvalue()
    if array.size:
        view = np.frombuffer(buffer, dtype=array.dtype, count=array.size, offset=start)
        view.reshape(array.shape)[...] = array
    return memoryview(buffer)


def npy_response(row_fields: tuple[str, ...], answer: dict[str, Any]) -> Response:
    """The answer's per-row results (``row_fields``) as ``.npy``, plus the ``Lloyd-Response``
    header (the rest)."""
    if "contributions" in answer:
        raise NotAcceptable(
            "explanations are sent as JSON only: ask for application/json, or leave out 'explain'"
        )
    names = [name for name in row_fields if name in answer]
    arrays = [np.asarray(answer[name]) for name in names]
    if len(arrays) == 1:
        body = arrays[0]
    else:
        pairs = list(zip(names, arrays, strict=True))
        body = np.empty(len(arrays[0]), dtype=[(n, a.dtype, a.shape[1:]) for n, a in pairs])
        for name, array in pairs:
            body[name] = array
    rest = {key: value for key, value in answer.items() if key not in names}
    return Response(
        npy_bytes(body),
        media_type=NPY_MEDIA_TYPE,
        headers={RESPONSE_HEADER: _header_json(rest)},
    )
