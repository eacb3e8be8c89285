"""Tensors of the Open Inference Protocol as numpy arrays, both ways: an input tensor's data
(JSON, flat or nested, or the binary tensor data extension's little-endian bytes) read once into
the float64 matrix of rows the inference service takes; an answer's field written as an output
tensor (JSON data, or binary bytes after the JSON).

An input's values are read as its datatype holds them: FP32 data is rounded to float32 first
(as the same tensor sent as binary bytes is), integers must be integers within the type's range;
then every value becomes a float64 and must be finite."""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

import msgspec
import numpy as np
import simdjson

from app.api.bodies import BUFFER_PARSE_MIN_BYTES
from app.api.v2.outputs import Output
from app.errors import InvalidInput, Location
from app.ml.finite import all_finite

# The numeric datatypes a row can be sent as, and their little-endian numpy types.
ROW_DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in (
        ("FP64", "<f8"),
        ("FP32", "<f4"),
        ("FP16", "<f2"),
        ("INT64", "<i8"),
        ("INT32", "<i4"),
        ("INT16", "<i2"),
        ("INT8", "i1"),
        ("UINT64", "<u8"),
        ("UINT32", "<u4"),
        ("UINT16", "<u2"),
        ("UINT8", "u1"),
    )
}
OUTPUT_DTYPES = {"FP64": np.dtype("<f8"), "INT64": np.dtype("<i8"), "BOOL": np.dtype("?")}


def row_dtype(datatype: str, at: Location) -> np.dtype:
    dtype = ROW_DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"rows must be numbers: datatype {datatype!r} is not one of {', '.join(ROW_DATATYPES)}",
            at=at,
        )
    return dtype


def rows_shape(shape: list[int], at: Location) -> tuple[int, int]:
    """``[n, d]``: ``n`` rows of ``d`` features, both at least one."""
    if len(shape) != 2:
        raise InvalidInput(
            f"the input's shape must be [rows, features], not {shape}: send a 2-D tensor", at=at
        )
    n, d = shape
    if n < 1 or d < 1:
        raise InvalidInput(f"shape {shape}: send at least one row of at least one feature", at=at)
    return n, d


def _finite_rows(values: np.ndarray, shape: tuple[int, int], at: Location) -> np.ndarray:
    """``values`` (flat, of the tensor's type) as the float64 matrix of ``shape``."""
    X = np.ascontiguousarray(values, dtype=np.float64).reshape(shape)
    if not all_finite(X):
        row, column = np.argwhere(~np.isfinite(X))[0]
        raise InvalidInput(
            f"row {row}, feature {column} is {X[row, column]}: values must be finite numbers "
            "(within the datatype's range)",
            at=at,
        )
    return X


def binary_rows(data: memoryview, datatype: str, shape: list[int], at: Location) -> np.ndarray:
    """Rows sent as binary tensor data: ``data`` holds exactly the tensor, little-endian."""
    dtype = row_dtype(datatype, [*at, "datatype"])
    n, d = rows_shape(shape, [*at, "shape"])
    if len(data) != n * d * dtype.itemsize:
        raise InvalidInput(
            f"binary_data_size is {len(data)} bytes; shape {shape} of {datatype} needs "
            f"{n * d * dtype.itemsize}",
            at=[*at, "parameters", "binary_data_size"],
        )
    return _finite_rows(np.frombuffer(data, dtype=dtype), (n, d), [*at, "data"])


@functools.cache
def _decoder(kind: str, nested: bool) -> msgspec.json.Decoder:
    item: Any = float if kind == "f" else int
    return msgspec.json.Decoder(list[list[item]] if nested else list[item])


_FIRST_ELEMENT = re.compile(rb"\s*\[\s*(\S)")


def _nested(raw: memoryview) -> bool:
    """Whether a JSON array's first element is an array (rows) rather than a number."""
    first = _FIRST_ELEMENT.match(raw)
    return first is not None and first.group(1) == b"["


def _brackets(raw: memoryview, chunk: int = 1 << 20) -> int:
    """How many ``[`` bytes ``raw`` holds: numpy, a megabyte at a time (a bounded temporary)."""
    view = np.frombuffer(raw, dtype=np.uint8)
    return sum(
        int(np.count_nonzero(view[start : start + chunk] == ord("[")))
        for start in range(0, len(view), chunk)
    )


def _by_buffer(raw: memoryview, n: int, d: int, nested: bool) -> np.ndarray | None:
    """A large array of numbers read by simdjson into one float64 buffer, with no Python
    object per number; None when it is not certainly ``n * d`` numbers in one array, or ``n``
    arrays of ``d`` (msgspec then reads it, and says what is wrong)."""
    parser = simdjson.Parser()
    try:
        document = parser.parse(raw)
        if not isinstance(document, simdjson.Array):
            return None
        flat = np.frombuffer(document.as_buffer(of_type="d"), dtype="<f8")
        if nested and (
            len(document) != n
            or not all(isinstance(row, simdjson.Array) and len(row) == d for row in document)
        ):
            return None
    except (ValueError, TypeError, RuntimeError):  # malformed, not a number, beyond float64
        return None
    # Numbers hold no bracket: the outer array's, and one per row, are every bracket there is.
    if flat.size != n * d or _brackets(raw) != (n + 1 if nested else 1):
        return None
    return flat


def json_rows(raw: memoryview, datatype: str, shape: list[int], at: Location) -> np.ndarray:
    """Rows sent as JSON ``data``: flat (every value in row-major order) or nested (one array
    per row), of numbers the datatype holds."""
    dtype = row_dtype(datatype, [*at, "datatype"])
    n, d = rows_shape(shape, [*at, "shape"])
    nested = _nested(raw)
    if dtype.kind == "f" and len(raw) >= BUFFER_PARSE_MIN_BYTES:
        fast = _by_buffer(memoryview(raw), n, d, nested)
        if fast is not None:
            with np.errstate(over="ignore"):  # beyond float32 (or float16): inf, refused
                values = fast.astype(dtype, copy=False)
            return _finite_rows(values, (n, d), [*at, "data"])
    try:
        decoded = _decoder("f" if dtype.kind == "f" else "i", nested).decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidInput(
            f"{datatype} data must be an array of {_numbers(dtype)}, or of rows of them: {exc}",
            at=[*at, "data"],
        ) from None
    if nested:
        if len(decoded) != n or any(len(row) != d for row in decoded):
            raise InvalidInput(
                f"the data's rows do not match shape {shape}: {len(decoded)} rows of "
                f"{sorted(set(map(len, decoded)))} values",
                at=[*at, "data"],
            )
        decoded = list(itertools.chain.from_iterable(decoded))
    if len(decoded) != n * d:
        raise InvalidInput(
            f"the data holds {len(decoded)} values; shape {shape} needs {n * d}",
            at=[*at, "data"],
        )
    try:
        with np.errstate(over="ignore"):  # a number beyond float32 (or float16): inf, refused
            values = np.array(decoded, dtype=dtype)
    except OverflowError:
        raise InvalidInput(f"a value is out of the range of {datatype}", at=[*at, "data"]) from None
    return _finite_rows(values, (n, d), [*at, "data"])


def _numbers(dtype: np.dtype) -> str:
    return "numbers" if dtype.kind == "f" else "integers"


# -- outputs -----------------------------------------------------------------------------------
def output_tensor(output: Output, value: Any) -> tuple[list[int], np.ndarray]:
    """An answer's field as the output's shape and flat, C-ordered values of its datatype."""
    array = np.asarray(value, dtype=OUTPUT_DTYPES[output.datatype])
    if output.layout == "scalar":
        shape = [1]
    elif output.layout == "row":
        shape = [len(array), 1]
    else:
        shape = list(array.shape)
    return shape, np.ascontiguousarray(array).reshape(-1)
