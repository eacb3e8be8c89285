"""Posted rows (``instances`` or ``records``) turned into one float64 matrix, or a clear error."""

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
