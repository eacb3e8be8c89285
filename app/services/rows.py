"""Posted rows (``instances``, ``records``, or a matrix whose columns are named) turned into one
float64 matrix, or a clear error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from app.errors import InvalidInput


def _error(detail: str, loc: list[str | int]) -> InvalidInput:
    """``loc``: where the rows sit in the caller's input."""
    return InvalidInput(detail, at=loc)


def instances_to_array(instances: Sequence[Sequence[float]], *, loc: list[str | int]) -> np.ndarray:
    if len(instances) == 0:
        raise _error("no rows were posted: send at least one", loc)
    width = len(instances[0])
    if width == 0:
        raise _error("rows have no features: send at least one value per row", [*loc, 0])
    for index, row in enumerate(instances):
        if len(row) != width:
            raise _error(
                f"ragged rows: row {index} has {len(row)} values, row 0 has {width}",
                [*loc, index],
            )
    return np.asarray(instances, dtype=np.float64)


def records_to_array(
    records: Sequence[Mapping[str, float]],
    *,
    feature_names: list[str] | None,
    loc: list[str | int],
) -> tuple[np.ndarray, list[str]]:
    """Records in the column order of ``feature_names`` (or of the first record's keys)."""
    if len(records) == 0:
        raise _error("no records were posted: send at least one", loc)
    names = list(feature_names) if feature_names is not None else list(records[0])
    if not names:
        raise _error("records have no features: send at least one field", [*loc, 0])
    expected = set(names)
    for index, record in enumerate(records):
        if record.keys() != expected:
            missing = sorted(expected - record.keys())
            unknown = sorted(record.keys() - expected)
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise _error(
                f"record {index} does not match the features {names}: {', '.join(parts)}",
                [*loc, index, (missing or unknown)[0]],
            )
    X = np.fromiter(
        (record[name] for record in records for name in names),
        dtype=np.float64,
        count=len(records) * len(names),
    ).reshape(len(records), len(names))
    return X, names


def named_columns_to_array(
    X: np.ndarray, columns: Sequence[str], *, feature_names: list[str], loc: list[str | int]
) -> np.ndarray:
    """A matrix whose columns are named (a CSV header) in the column order of ``feature_names``:
    the same names are required as of records, in any order, and a mismatch is located as a
    record's is, at the first missing name, else the first unknown one (``loc``: where the
    names sit)."""
    if list(columns) == feature_names:
        return X
    if len(set(columns)) != len(columns):
        raise _error("column names must be unique", loc)
    given, expected = set(columns), set(feature_names)
    if given != expected:
        missing = [name for name in feature_names if name not in given]
        unknown = [name for name in columns if name not in expected]
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unknown:
            parts.append(f"unknown {unknown}")
        raise _error(
            f"the columns {list(columns)} do not match the features {feature_names}: "
            f"{', '.join(parts)}",
            [*loc, (missing or unknown)[0]],
        )
    position = {name: index for index, name in enumerate(columns)}
    return np.ascontiguousarray(X[:, [position[name] for name in feature_names]])
