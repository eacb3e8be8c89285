"""Request bodies that carry rows, parsed without a pydantic object per number.

A JSON body goes through orjson once; its ``instances`` become one float64 matrix in a single
numpy call, and only the few other fields are validated by the pydantic model. Whenever the
fast path sees anything it is not sure of (a string, ``true``, ``null``, an escape, ragged or
non-finite rows, a field the model refuses), the body is validated by the pydantic model as a
whole instead, so that every error is the one the schema gives, with its exact location. A
``.npy`` body is read as the rows themselves (see ``app.api.binary``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.api.binary import NPY_MEDIA_TYPE, REQUEST_HEADER, read_npy, request_fields
from app.errors import InvalidInput, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ParsedBody(Generic[M]):
    """The request's fields (``None`` for an absent optional body) and, when the fast or the
    binary path read them, its rows as a float64 matrix (its ``instances`` are then empty)."""

    fields: M | None
    rows: np.ndarray | None = None
    # Where the rows sit in the request, for error locations: ["instances"] in JSON, [] when
    # the body is the .npy array itself.
    rows_at: tuple[str, ...] = ("instances",)


def _invalid(exc: ValidationError, prefix: tuple[str, ...] = ("body",)) -> RequestValidationError:
    return RequestValidationError(
        [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False)]
    )


def _validate_json(model: type[BaseModel], raw: bytes | str) -> BaseModel:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _is_json(media: str) -> bool:
    return media in ("", "application/json") or media.endswith("+json")


def _fast_rows(raw: bytes, document: dict[str, Any]) -> np.ndarray | None:
    """``document["instances"]`` as a matrix when it is certainly a rectangle of finite JSON
    numbers, else None. JSON numbers hold no quote, backslash, 't' or 'f': counting those bytes
    (memchr-fast) proves that the body has no string beyond its keys and no ``true``/``false``,
    which numpy would otherwise turn into numbers; ``null`` becomes NaN and fails the finite
    check."""
    instances = document["instances"]
    if type(instances) is not list or not instances or type(instances[0]) is not list:
        return None
    keys = "".join(document)
    if (
        raw.count(b'"') != 2 * len(document)
        or b"\\" in raw
        or raw.count(b"t") != keys.count("t")
        or raw.count(b"f") != keys.count("f")
    ):
        return None
    try:
        X = np.array(instances, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if X.ndim != 2 or X.shape[1] == 0 or not np.isfinite(X).all():
        return None
    return X


async def parse_rows_body(
    request: Request, model: type[M], *, optional: bool = False
) -> ParsedBody[M]:
    """The body of an operation as ``model`` (rows as a matrix where the fast path took them).
    Errors are the ones FastAPI would give for a ``model`` body: 400 for malformed JSON, 422
    with JSON pointers; plus 415 for a media type that is neither JSON nor ``.npy``."""
    raw = await request.body()
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    takes_rows = "instances" in model.model_fields or "data" in model.model_fields
    if media == NPY_MEDIA_TYPE and takes_rows:
        return _binary(request, model, raw)
    if not _is_json(media):
        accepted = "application/json" + (f" or {NPY_MEDIA_TYPE}" if takes_rows else "")
        raise UnsupportedMediaType(f"the body must be {accepted}, not {media!r}")
    if not raw.strip() or (optional and raw.strip() == b"null"):
        if optional:
            return ParsedBody(None)
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "Field required", "type": "missing", "input": None}]
        )
    if "instances" in model.model_fields:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            document = None  # pydantic says where and why, below
        if type(document) is dict and "instances" in document and "records" not in document:
            X = _fast_rows(raw, document)
            if X is not None:
                rest = {k: v for k, v in document.items() if k != "instances"}
                try:
                    fields = _rows_only(model) if not rest else _other_fields(model, rest)
                except ValidationError:
                    pass  # errors are reported with their locations by the full validation
                else:
                    return ParsedBody(fields, X)
    return ParsedBody(_validate_json(model, raw))


@functools.cache
def _rows_only(model: type[M]) -> M:
    """``model`` with no field but (empty) rows: the same object for every such request, as
    nothing changes a parsed body."""
    return model.model_validate_json(b'{"instances": []}')


def _other_fields(model: type[M], fields: dict[str, Any]) -> M:
    return model.model_validate_json(orjson.dumps(fields | {"instances": []}))


def _binary(request: Request, model: type[M], raw: bytes) -> ParsedBody[M]:
    """Rows from the ``.npy`` body; the other fields from the ``Lloyd-Request`` header (for a
    training, every field but ``data``)."""
    fields = request_fields(request.headers.get(REQUEST_HEADER))
    rows_field = "instances" if "instances" in model.model_fields else "data"
    if {"instances", "records", "data"} & fields.keys():
        raise InvalidInput(
            "with a .npy body the rows are the body: leave 'instances', 'records' and 'data' "
            "out of the Lloyd-Request header",
            at=["header", REQUEST_HEADER],
        )
    X = read_npy(raw)
    empty: Any = [] if rows_field == "instances" else {"instances": []}
    try:
        parsed = model.model_validate_json(orjson.dumps(fields | {rows_field: empty}))
    except ValidationError as exc:
        raise _invalid(exc, ("header", REQUEST_HEADER)) from None
    return ParsedBody(parsed, X, rows_at=())
