"""No function of the app above cyclomatic complexity 15 (radon's measure): above that, split it
into named steps that read top to bottom."""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_visit

APP = Path(__file__).resolve().parents[1] / "app"
MOST = 15


def test_no_function_is_more_complex_than_15():
    too_complex = [
        f"{path.relative_to(APP.parent)}:{block.lineno} {block.fullname} ({block.complexity})"
        for path in sorted(APP.rglob("*.py"))
        for block in cc_visit(path.read_text())
        if block.complexity > MOST
    ]
    assert too_complex == []
