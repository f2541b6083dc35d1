"""Imports point one way: adapters -> bot -> engine (checked on the source, not by memory)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {
    "engine": {"bot", "adapters", "telegram", "discord"},
    "bot": {"adapters", "telegram", "discord", "torch", "transformers"},
    "adapters": {"engine", "torch", "transformers"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_only_downward(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        if path.name == "__main__.py" and package == "bot":
            continue  # the composition root wires every layer together
        bad = _imports(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_adapters_do_not_import_each_other() -> None:
    for path in (ROOT / "adapters").glob("*_adapter.py"):
        others = {p.stem for p in (ROOT / "adapters").glob("*_adapter.py")} - {path.stem}
        source = path.read_text(encoding="utf-8")
        assert not any(f"adapters.{other}" in source for other in others), path.name
