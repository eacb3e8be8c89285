"""Request bodies that carry rows, parsed without a pydantic object per number.

A large JSON body whose only field is ``instances`` is parsed by simdjson straight into one
float64 buffer, with no Python object per number (100,000 x 16 rows: about 100 ms, against
about 210 ms for msgspec's tuples and the matrix made from them); its rows are then checked to be
arrays of one length with nothing nested. Any other JSON body is decoded once by msgspec, which
reads ``instances`` as tuples of floats and refuses, as it reads, anything else (a string,
``true``, ``null``, a number beyond float64); the tuples become one float64 matrix in a single
numpy call, and only the few other fields are validated by the pydantic model. Both read every
number as the same correctly rounded float64 (tested bit for bit). A body of more than
``THREAD_PARSE_MIN_BYTES`` is parsed in the thread pool, never on the event loop. Whenever the
fast path is not certain (a refused value, ragged or empty rows, ``records``, a field the model
refuses), the body is validated by the pydantic model as a whole instead, so that every error is
the one the schema gives, with its exact location. A ``.npy`` body is read as the rows
themselves (see ``app.api.binary``), and so is a ``text/csv`` one (``app.api.csv_rows``: its
header row, if any, names the columns); the other fields of either come in the
``Lloyd-Request`` header.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import numpy as np
import orjson
import simdjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from app.api.binary import NPY_MEDIA_TYPE, REQUEST_HEADER, read_npy, request_fields
from app.api.csv_rows import CSV_MEDIA_TYPE, read_csv
from app.errors import InvalidInput, LloydError, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)

# JSON bodies from this size on are parsed by simdjson (below it, msgspec is as fast: a parser
# and its proxies cost a few microseconds a request).
BUFFER_PARSE_MIN_BYTES = 1 << 16
# Bodies from this size on are parsed in the thread pool (a 1 MiB body takes about 10 ms).
THREAD_PARSE_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class ParsedBody(Generic[M]):
    """The request's fields (``None`` for an absent optional body) and, when the fast or the
    binary path read them, its rows as a float64 matrix (its ``instances`` are then empty)."""

    fields: M | None
    rows: np.ndarray | None = None
    # Where the rows sit in the request, for error locations: ["instances"] in JSON, [] when
    # the body is the .npy array (or the CSV) itself.
    rows_at: tuple[str, ...] = ("instances",)
    # The rows' column names, from a CSV body's header row (None for every other body).
    columns: tuple[str, ...] | None = None


def _invalid(exc: ValidationError, prefix: tuple[str, ...] = ("body",)) -> RequestValidationError:
    return RequestValidationError(
        [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False)]
    )


def _validate_json(model: type[M], raw: bytes | bytearray | str) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None


def is_json_media(content_type: str) -> bool:
    """Whether a ``Content-Type`` header (parameters and case aside) is read as JSON; an absent
    one is."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


@functools.cache
def _rows_decoder(model: type[BaseModel]) -> msgspec.json.Decoder:
    """A msgspec decoder of ``model``'s JSON that takes ``instances`` as lists of floats
    (refusing strings, booleans, null and numbers beyond float64 as it reads them) and keeps
    every other field as raw JSON, for ``model`` to validate; unknown fields are refused."""
    others = [
        (name, msgspec.Raw, msgspec.UNSET)
        for name in model.model_fields
        if name not in ("instances", "records")
    ]
    struct = msgspec.defstruct(
        f"{model.__name__}Rows",
        [("instances", list[tuple[float, ...]]), *others],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(struct)


def _rows_by_buffer(raw: bytes | bytearray) -> np.ndarray | None:
    """The rows of a body whose only field is ``instances``, a non-empty list of equally long,
    non-empty lists of numbers, as a float64 matrix; else None (nothing is wrong with the body
    for that: msgspec and the model decide)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return None  # simdjson skips a byte order mark; JSON (and the schema) refuses it
    try:
        document = simdjson.Parser().parse(raw)
        if not isinstance(document, simdjson.Object) or list(document.keys()) != ["instances"]:
            return None  # another field, or "instances" twice: msgspec and the model read it
        rows = document["instances"]
        if not isinstance(rows, simdjson.Array) or len(rows) == 0:
            return None
        # Every leaf a number (true, null, a string: TypeError), however deeply nested.
        flat = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
        width = len(rows[0]) if isinstance(rows[0], simdjson.Array) else 0
        if width == 0 or flat.size != len(rows) * width:
            return None
        for row in rows:
            if not isinstance(row, simdjson.Array) or len(row) != width:
                return None
    except (ValueError, TypeError, RuntimeError):  # malformed, not a number, beyond int64
        return None
    # Every row is an array, so the document holds the outer array, one per row and, past
    # that, only arrays nested inside rows; numbers and the key hold no bracket.
    if _count_byte(raw, ord("[")) != len(rows) + 1:
        return None
    return flat.reshape(len(rows), width)


def _count_byte(data: bytes | bytearray, value: int, chunk: int = 1 << 20) -> int:
    """How many bytes of ``data`` equal ``value``: numpy, a megabyte at a time (three times
    ``bytes.count``'s speed, with a bounded temporary)."""
    view = np.frombuffer(data, dtype=np.uint8)
    return sum(
        int(np.count_nonzero(view[start : start + chunk] == value))
        for start in range(0, len(view), chunk)
    )


def _fast(model: type[M], raw: bytes | bytearray) -> ParsedBody[M] | None:
    """The body with its rows as a float64 matrix, when it is certainly valid; else None."""
    if len(raw) >= BUFFER_PARSE_MIN_BYTES and (X := _rows_by_buffer(raw)) is not None:
        try:
            return ParsedBody(_rows_only(model), X)
        except ValidationError:
            return None  # another field is required: the full validation says so
    try:
        decoded = _rows_decoder(model).decode(raw)
    except msgspec.DecodeError:
        return None
    instances = decoded.instances
    if len(instances) == 1 and instances[0]:  # one row: numpy reads one tuple fastest
        X = np.array(instances, dtype=np.float64)
    else:
        if not instances or not instances[0] or len(set(map(len, instances))) != 1:
            return None  # empty or ragged: the full validation says where
        width = len(instances[0])
        # Rows as tuples, flattened by one C-level chain: faster than numpy walking nested lists.
        flat = itertools.chain.from_iterable(instances)
        X = np.fromiter(flat, np.float64, count=len(instances) * width).reshape(-1, width)
    rest = {
        name: value
        for name in decoded.__struct_fields__[1:]
        if (value := getattr(decoded, name)) is not msgspec.UNSET
    }
    try:
        fields = _rows_only(model) if not rest else _other_fields(model, rest)
    except ValidationError:
        return None  # the full validation says where and why
    return ParsedBody(fields, X)


async def read_body(request: Request) -> bytes | bytearray:
    """The request's whole body (see ``receive_body``)."""
    return await receive_body(request.receive, request.headers.get("content-length"))


async def receive_body(receive: Receive, length: str | bytes | None) -> bytes | bytearray:
    """The whole body. A body that comes in one message (every small one) is that message's
    bytes, as they are; a longer one of a declared ``length`` is copied, chunk by chunk, into
    one buffer allocated once, rather than a list of chunks joined at the end: a large body is
    then held once, not twice. Without a length, the chunks are joined."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnect()
    first = message.get("body", b"")
    if not message.get("more_body", False):
        return first
    if length is None or not length.isdigit():
        chunks = [first]
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunks.append(message.get("body", b""))
        return b"".join(chunks)
    size = int(length)
    buffer = bytearray(size)
    buffer[: len(first)] = first
    filled = len(first)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        end = filled + len(chunk)
        if end > size:  # the HTTP server frames bodies by their length: never seen in practice
            raise LloydError("the body is longer than its Content-Length")
        buffer[filled:end] = chunk
        filled = end
        if not message.get("more_body", False):
            return buffer if filled == size else buffer[:filled]


async def parse_rows_body(
    request: Request, model: type[M], *, optional: bool = False
) -> ParsedBody[M]:
    """The body of a request as ``model`` (see ``rows_body``)."""
    headers = request.headers
    return await rows_body(
        model,
        await read_body(request),
        headers.get("content-type", ""),
        headers.get(REQUEST_HEADER),
        optional=optional,
    )


async def rows_body(
    model: type[M],
    raw: bytes | bytearray,
    content_type: str,
    fields_header: str | None,
    *,
    optional: bool = False,
) -> ParsedBody[M]:
    """A body of ``content_type`` as ``model`` (rows as a matrix where the fast path took
    them; ``fields_header``: the ``Lloyd-Request`` header, the other fields of a ``.npy`` or
    CSV body). Errors are the ones FastAPI would give for a ``model`` body: 400 for malformed
    JSON, 422 with JSON pointers; plus 415 for a media type that is neither JSON, ``.npy`` nor
    CSV."""
    media = content_type.split(";", 1)[0].strip().lower()
    takes_rows = _takes_rows(model)
    if media == NPY_MEDIA_TYPE and takes_rows:
        return _binary(fields_header, model, raw)
    if media == CSV_MEDIA_TYPE and takes_rows:
        if len(raw) >= THREAD_PARSE_MIN_BYTES:
            return await run_in_threadpool(_csv, fields_header, model, raw, content_type)
        return _csv(fields_header, model, raw, content_type)
    if not is_json_media(media):
        raise UnsupportedMediaType(f"the body must be {_accepted(takes_rows)}, not {media!r}")
    # (No strip() of the whole body: it would copy it.)
    if not raw or raw.isspace() or (optional and len(raw) < 64 and raw.strip() == b"null"):
        if optional:
            return ParsedBody(None)
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "Field required", "type": "missing", "input": None}]
        )
    if len(raw) >= THREAD_PARSE_MIN_BYTES:
        return await run_in_threadpool(_parse_json, model, raw)
    return _parse_json(model, raw)


def _accepted(takes_rows: bool) -> str:
    """The media types a body may have (rows: also ``.npy`` and CSV)."""
    rows = f", {NPY_MEDIA_TYPE} or {CSV_MEDIA_TYPE}" if takes_rows else ""
    return f"application/json{rows}"


@functools.cache
def _takes_rows(model: type[BaseModel]) -> bool:
    return "instances" in model.model_fields or "data" in model.model_fields


@functools.cache
def _has_instances(model: type[BaseModel]) -> bool:
    return "instances" in model.model_fields


def _parse_json(model: type[M], raw: bytes | bytearray) -> ParsedBody[M]:
    if _has_instances(model) and (parsed := _fast(model, raw)) is not None:
        return parsed
    return ParsedBody(_validate_json(model, raw))


@functools.cache
def _rows_only(model: type[M]) -> M:
    """``model`` with no field but (empty) rows: the same object for every such request, as
    nothing changes a parsed body."""
    return model.model_validate_json(b'{"instances": []}')


def _other_fields(model: type[M], fields: dict[str, msgspec.Raw]) -> M:
    """``model`` from the raw JSON of its fields other than the rows (a few bytes)."""
    members = b",".join(orjson.dumps(name) + b":" + bytes(value) for name, value in fields.items())
    return model.model_validate_json(b"{" + members + b', "instances": []}')


def _binary(header: str | None, model: type[M], raw: bytes | bytearray) -> ParsedBody[M]:
    """Rows from the ``.npy`` body; the other fields from the ``Lloyd-Request`` header (for a
    training, every field but ``data``)."""
    fields = _header_fields(header, ".npy")
    X = read_npy(raw)
    return ParsedBody(_beside_rows(model, fields), X, rows_at=())


def _csv(
    header: str | None, model: type[M], raw: bytes | bytearray, content_type: str
) -> ParsedBody[M]:
    """Rows (and their column names, from a header row) from the CSV body; the other fields
    from the ``Lloyd-Request`` header, as for a ``.npy`` body."""
    fields = _header_fields(header, "CSV")
    rows = read_csv(raw, content_type)
    return ParsedBody(_beside_rows(model, fields), rows.matrix, rows_at=(), columns=rows.columns)


def _header_fields(header: str | None, wire: str) -> dict[str, Any]:
    """The ``Lloyd-Request`` header's fields beside a body of rows in the ``wire`` format."""
    fields = request_fields(header)
    if {"instances", "records", "data"} & fields.keys():
        raise InvalidInput(
            f"with a {wire} body the rows are the body: leave 'instances', 'records' and 'data' "
            "out of the Lloyd-Request header",
            at=["header", REQUEST_HEADER],
        )
    return fields


def _beside_rows(model: type[M], fields: dict[str, Any]) -> M:
    """``model`` from the header's ``fields`` and empty rows (the rows are the body's)."""
    rows_field = "instances" if "instances" in model.model_fields else "data"
    empty: Any = [] if rows_field == "instances" else {"instances": []}
    try:
        return model.model_validate_json(orjson.dumps(fields | {rows_field: empty}))
    except ValidationError as exc:
        raise _invalid(exc, ("header", REQUEST_HEADER)) from None
