"""The README stays true: every setting is in its configuration table with its default."""

from pathlib import Path

from app.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    for name, field in Settings.model_fields.items():
        row = next(
            (line for line in README.splitlines() if line.startswith(f"| `LLOYD_{name.upper()}`")),
            None,
        )
        assert row is not None, f"LLOYD_{name.upper()} missing from the README"
        if field.default_factory is not None:
            continue  # a default computed on the machine; the row says how
        default = field.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert shown.removeprefix("./") in row.replace("`./", "`"), (name, row)
