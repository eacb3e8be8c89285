"""CSV rows: a ``text/csv`` body (RFC 4180) read as a request's rows, its header row, when it
has one, as their column names.

Like a ``.npy`` body, a CSV body is the rows only; the request's other fields go in the
``Lloyd-Request`` header (see ``app.api.bodies``). Cells are separated by commas, records by line
breaks (CRLF or LF); quoted cells are read as RFC 4180 says; blank lines are skipped; a UTF-8
byte order mark (as spreadsheets write one) is dropped.

The header row: the media type's ``header`` parameter (RFC 4180: ``text/csv; header=present``
or ``header=absent``) says whether there is one; without it, the first row is a header when
none of its cells is a number, rows when all of them are, and refused when it mixes both
(a header whose names are numbers, or a first row with a bad value: the parameter decides).

A body of plain numbers (every cell a JSON number) is parsed by simdjson as one JSON array of
arrays, straight into a float64 buffer; anything else (quoted cells, numbers JSON does not
write such as ``.5``, a bad cell) by Python's csv module and ``float``, which also locates the
first bad cell. Both read every number as the same correctly rounded float64.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import simdjson

from app.errors import InvalidInput, UnsupportedMediaType

CSV_MEDIA_TYPE = "text/csv"
HEADER_MODES = ("present", "absent")
MAX_NAME_LENGTH = 128  # as a training request's feature_names
# Charsets read as bytes as they are (ASCII is UTF-8); others are decoded first.
_FAST_CHARSETS = frozenset({"utf-8", "ascii"})
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CsvRows:
    """The rows as a float64 matrix, and the header's names (None without a header)."""

    matrix: np.ndarray
    columns: tuple[str, ...] | None


def _bad(detail: str, *loc: str | int) -> InvalidInput:
    return InvalidInput(detail, at=["body", *loc])


def _parameters(content_type: str) -> tuple[str | None, str]:
    """The ``header`` mode (None: detect) and the charset of a ``text/csv`` content type."""
    header: str | None = None
    charset = "utf-8"
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"')
        if key == "header":
            if value.lower() not in HEADER_MODES:
                raise UnsupportedMediaType(
                    f"text/csv: header={value!r}; the header parameter is present or absent "
                    "(leave it out to have the first row told apart by its cells)"
                )
            header = value.lower()
        elif key == "charset":
            try:
                charset = codecs.lookup(value).name
            except LookupError:
                raise UnsupportedMediaType(f"text/csv: unknown charset {value!r}") from None
    return header, charset


def read_csv(raw: bytes | bytearray, content_type: str) -> CsvRows:
    """The rows of a ``text/csv`` body (``content_type``: the request's header, parameters
    included). Errors are 422 ``invalid_input`` located at ``["body", row, column]``, rows
    counted from 0 after the header, or ``["body", "columns", index]`` for the header's names;
    415 for a ``header`` or ``charset`` parameter it cannot follow."""
    header_mode, charset = _parameters(content_type)
    data = raw
    if charset not in _FAST_CHARSETS:  # (UTF-16, Latin-1, ...): read as the UTF-8 it holds
        data = _decode(data, charset).encode("utf-8")
    # (Offsets into the body rather than slices of it: a large body is copied as little as
    # possible.)
    start, end = _first_record(data, len(_BOM) if data.startswith(_BOM) else 0)
    if start == end:
        raise _bad("no rows were posted: send at least one")
    cells = _cells(_decode(data[start:end], "utf-8", start))
    columns = _header(cells, header_mode)
    data_start = end if columns is not None else start
    width = len(columns) if columns is not None else len(cells)
    matrix = _numbers_fast(data, data_start, width)
    if matrix is None:
        lines_before = data.count(b"\n", 0, data_start)
        text = _decode(data[data_start:], "utf-8", data_start)
        matrix = _numbers_slow(text, width, lines_before, has_header=columns is not None)
    return CsvRows(matrix, columns)


def _decode(data: bytes | bytearray, charset: str, at: int = 0) -> str:
    """``data`` as text (``at``: where it starts in the body, for the message)."""
    try:
        return data.decode(charset)
    except UnicodeDecodeError as exc:
        raise _bad(
            f"the body is not {charset} text (byte {at + exc.start}); name the file's encoding "
            "in the content type's charset parameter (text/csv; charset=...)"
        ) from None


def _first_record(data: bytes | bytearray, start: int) -> tuple[int, int]:
    """Where the first non-blank record starts and ends (after its line break; a quoted cell
    may span lines): equal when the body holds none."""
    while True:
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        if data[start:end].strip():
            break
        if end == len(data):
            return end, end
        start = end
    while data.count(b'"', start, end) % 2 and end < len(data):
        found = data.find(b"\n", end)
        end = len(data) if found < 0 else found + 1
    return start, end


def _cells(record: str) -> list[str]:
    return next(csv.reader(io.StringIO(record, newline="")), [])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _header(cells: list[str], mode: str | None) -> tuple[str, ...] | None:
    """The first record's names when it is a header (by ``mode``, or by its cells), else None."""
    if mode == "absent":
        return None
    if mode is None:
        if len(cells) == 1 and ";" in cells[0]:
            raise _bad(
                f"the first row is one cell, {_shown(cells[0])}: cells are separated by commas "
                "(RFC 4180), not semicolons",
                0,
                0,
            )
        numbers = [_is_number(cell) for cell in cells]
        if all(numbers):
            return None
        if any(numbers):
            column = numbers.index(False)
            raise _bad(
                f"the first row mixes numbers and text (column {column}: "
                f"{_shown(cells[column])}): a header names every column, and a row holds only "
                "numbers; send `Content-Type: text/csv; header=present` (or header=absent) "
                "to say which it is",
                0,
                column,
            )
    return _names(cells)


def _names(cells: list[str]) -> tuple[str, ...]:
    """A header's column names, stripped of surrounding spaces: non-empty, unique, at most 128
    characters, as feature names are."""
    names = tuple(cell.strip() for cell in cells)
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not name:
            hint = " (pandas writes its index so: to_csv(index=False) leaves it out)"
            raise _bad(
                f"column {index} of the header has no name{hint if index == 0 else ''}",
                "columns",
                index,
            )
        if len(name) > MAX_NAME_LENGTH or "\x00" in name:
            raise _bad(
                f"column {index} of the header: a name is 1 to {MAX_NAME_LENGTH} characters, "
                "without NUL",
                "columns",
                index,
            )
        if name in seen:
            raise _bad(
                f"column {index} of the header repeats {name!r} (column {seen[name]}): column "
                "names must be unique",
                "columns",
                index,
            )
        seen[name] = index
    return names


def _numbers_fast(data: bytes | bytearray, start: int, width: int) -> np.ndarray | None:
    """The rows of ``data[start:]`` when its every cell is a JSON number and every line a row
    of ``width`` cells, read by simdjson as one JSON document (lines become arrays); else None
    (the slow path decides)."""
    if data.find(b"[", start) >= 0 or data.find(b"\0", start) >= 0:
        return None  # a cell "[1]" would read as a number in a nested array
    replaced = data.replace(b"\n", b"],[")
    offset = start + 2 * data.count(b"\n", 0, start)
    document = b"".join((b"[[", memoryview(replaced)[offset:], b"]]"))
    try:
        rows = simdjson.Parser().parse(document)
        if not isinstance(rows, simdjson.Array):
            return None
        flat = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, RuntimeError):  # not JSON, not a number, beyond float64
        return None
    # (No bracket in the body: every row is one of the arrays made of its lines.)
    widths = [len(row) if isinstance(row, simdjson.Array) else -1 for row in rows]
    while widths and widths[-1] == 0:  # the line breaks that end the body
        widths.pop()
    count = len(widths)
    if count == 0 or flat.size != count * width or widths.count(width) != count:
        return None
    return flat.reshape(count, width)


def _numbers_slow(text: str, width: int, lines_before: int, *, has_header: bool) -> np.ndarray:
    """The rows of ``text`` read by the csv module, every cell by ``float``; the first ragged
    row, bad cell or non-finite value refused with its place (``lines_before``: the lines of
    the body before ``text``, for the line numbers of messages)."""
    values: list[float] = []
    count = 0
    for line, cells in _records(text, lines_before):
        if len(cells) != width:
            first = "the header" if has_header else "row 0"
            raise _bad(
                f"ragged rows: row {count} (line {line}) has {len(cells)} values, {first} has "
                f"{width}",
                count,
            )
        for column, cell in enumerate(cells):
            values.append(_number(cell, count, column, line))
        count += 1
    if count == 0:
        raise _bad("no rows were posted: send at least one (the body holds only a header)")
    return np.array(values, dtype=np.float64).reshape(count, width)


def _records(text: str, lines_before: int) -> Iterator[tuple[int, list[str]]]:
    """(line number of the record's first line, its cells) for every non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = lines_before + 1
    try:
        for cells in reader:
            if cells and not (len(cells) == 1 and not cells[0].strip()):
                yield line, cells
            line = lines_before + reader.line_num + 1
    except csv.Error as exc:
        raise _bad(f"line {lines_before + reader.line_num}: not CSV ({exc})") from None


def _number(cell: str, row: int, column: int, line: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        what = "is empty" if not cell.strip() else f"is {_shown(cell)}, not a number"
        hint = ""
        if ";" in cell:
            hint = " (cells are separated by commas, not semicolons)"
        raise _bad(f"row {row} (line {line}), column {column} {what}{hint}", row, column) from None
    if not math.isfinite(value):
        raise _bad(
            f"row {row} (line {line}), column {column} is {value}: values must be finite numbers",
            row,
            column,
        )
    return value


def _shown(cell: str, most: int = 40) -> str:
    """A cell for a message: quoted, and cut short (a body's bytes are never echoed at length)."""
    return repr(cell if len(cell) <= most else cell[:most] + "...")
