"""Arrows point down only (docs/architecture.md): each layer imports the layers below it, never
one above. Read from the source, so that a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# What each package may import of the app, besides itself ("app": the package itself, its
# version; errors and settings are leaves every layer may use).
ALLOWED = {
    "ml": set(),
    "registry": {"errors"},
    "jobs": {"errors", "registry"},
    "services": {"app", "errors", "settings", "observability", "ml", "registry", "jobs"},
    "api": {
        "errors",
        "settings",
        "observability",
        "api_keys",
        "logging_config",
        "ml",
        "registry",
        "jobs",
        "services",
    },
}


def imported_app_packages(package: str) -> dict[str, set[str]]:
    """For each module of ``app/<package>``, the top-level parts of ``app`` it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((APP / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for module in modules:
                parts = module.split(".")
                if parts[0] == "app":
                    names.add(parts[1] if len(parts) > 1 else "app")
        found[str(path.relative_to(APP.parent))] = names - {package}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layers_import_only_what_is_below_them(package: str) -> None:
    wrong = {
        module: sorted(names - ALLOWED[package])
        for module, names in imported_app_packages(package).items()
        if names - ALLOWED[package]
    }
    assert wrong == {}


def test_nothing_below_the_api_knows_it() -> None:
    for package in ("ml", "registry", "jobs", "services"):
        for module, names in imported_app_packages(package).items():
            assert "api" not in names, module
