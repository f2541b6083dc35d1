"""Imports point one way (checked on the source, not by memory): adapters -> bot -> engine,
bot through the engine's face only, and inside the engine engine.engine -> serving ->
loading -> native, with text/ and the vocabulary modules usable by all; no circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine

ROOT = Path(__file__).parents[1]
PACKAGES = ("engine", "bot", "adapters")
FORBIDDEN = {
    "engine": {"bot", "adapters", "telegram", "discord"},
    "bot": {"adapters", "telegram", "discord", "torch", "transformers"},
    "adapters": {"engine", "torch", "transformers"},
}
# Inside the engine: each part may import the parts after it in this order, never before.
ENGINE_ORDER = ("engine.engine", "engine.serving", "engine.loading", "engine.native")
# ... and these from anywhere; they import only each other.
ENGINE_SHARED = ("engine.config", "engine.errors", "engine.events", "engine.text")
MAX_LINES = 300


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for every absolute import in the file, wherever it stands (also
    under TYPE_CHECKING and inside functions: a circle there is still a circle)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def _first_party_targets(path: Path) -> set[str]:
    """The first-party modules a file imports (`from engine.native import kernel_builder`
    names the submodule, `from engine import Engine` the package)."""
    targets = set()
    for module, names in _imported(path):
        if module.split(".")[0] not in PACKAGES:
            continue
        submodules = {f"{module}.{name}" for name in names}
        found = {m for m in submodules if (ROOT / m.replace(".", "/")).with_suffix(".py").is_file()}
        targets |= found or {module}
    return targets


def _engine_part(module: str) -> str:
    """engine.serving.worker -> engine.serving; engine.config -> engine.config."""
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_only_downward(package: str) -> None:
    files = _sources(package)
    assert files
    for path in files:
        if path.name == "__main__.py" and package == "bot":
            continue  # the composition root wires every layer together
        bad = {module.split(".")[0] for module, _ in _imported(path)} & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_adapters_do_not_import_each_other() -> None:
    for path in (ROOT / "adapters").glob("*_adapter.py"):
        others = {p.stem for p in (ROOT / "adapters").glob("*_adapter.py")} - {path.stem}
        source = path.read_text(encoding="utf-8")
        assert not any(f"adapters.{other}" in source for other in others), path.name


def test_bot_uses_the_engine_face_and_the_face_exports_exactly_that() -> None:
    used: set[str] = set()
    for path in _sources("bot"):
        for module, names in _imported(path):
            where = f"{path.relative_to(ROOT)} imports {module}"
            assert not module.startswith("engine."), f"{where}: use `from engine import ...`"
            if module == "engine":
                used.update(names)
    assert sorted(engine.__all__) == sorted(used)
    for name in engine.__all__:
        assert getattr(engine, name) is not None  # each name resolves to its home module


@pytest.mark.parametrize("path", _sources("engine"), ids=_module_name)
def test_engine_parts_import_down_the_order(path: Path) -> None:
    importer = _engine_part(_module_name(path))
    if _module_name(path) == "engine":
        return  # the face re-exports from every part, lazily
    for target in _first_party_targets(path):
        part = _engine_part(target)
        where = f"{path.relative_to(ROOT)} imports {target}"
        assert target != "engine", f"{where}: inside the engine, import the module itself"
        if part == importer or part in ENGINE_SHARED:
            continue
        assert importer in ENGINE_ORDER, f"{where}: {importer} may import only {ENGINE_SHARED}"
        assert part in ENGINE_ORDER, where
        assert ENGINE_ORDER.index(part) > ENGINE_ORDER.index(importer), f"{where}: upward"


def test_no_import_circles() -> None:
    graph = {
        _module_name(path): _first_party_targets(path)
        for package in PACKAGES
        for path in _sources(package)
    }
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            circle = [*trail[trail.index(module) :], module]
            pytest.fail(f"import circle: {' -> '.join(circle)}")
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_every_engine_part_says_what_it_owns_and_may_import() -> None:
    for folder in sorted(p for p in (ROOT / "engine").iterdir() if (p / "__init__.py").is_file()):
        docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert docstring and "Owns" in docstring and "May import" in docstring, folder.name


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_stay_small(package: str) -> None:
    for path in _sources(package):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (split it)"


def test_settings_and_the_face_import_without_torch() -> None:
    # `qwenbot --help` and a settings typo are answered before torch's seconds of import.
    check = "import sys, engine, bot.settings; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=False).returncode == 0
