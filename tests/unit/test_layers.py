"""The package's layers: each subpackage imports only the layers below it (README: Architecture)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

LAYERS = ("specs", "timing", "running", "storage", "operation")
# Top-level modules every layer may use.
SHARED = {"errors", "logs", "__init__"}
PACKAGE = REPO / "scheduler_daemon"


def _imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "scheduler_daemon" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1]) | SHARED
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(used - allowed)
        for path in modules
        if (used := _imported_layers(path) - {"__version__"}) - allowed
    }
    assert wrong == {}


def test_the_top_level_holds_only_the_layers_and_shared_modules() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert top - {"__pycache__", "__main__", "schema"} == set(LAYERS) | SHARED
