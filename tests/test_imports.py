"""The package's import graph has no cycle: every import of every module under src/seedvlm, at module level and
inside functions (a function-level import only postpones a cycle, it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "seedvlm"


def module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is named by its __init__.py)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules `name` imports anywhere in its file. `from X import Y` counts as X.Y when that is a
    module, else as X; importing a submodule also runs its parent packages, which count too."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    deps = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate in known:
                deps.add(candidate)
    deps.discard(name)
    # a module's own parent packages are already running when it is imported: not an edge back
    return {d for d in deps if not name.startswith(d + ".")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    known = module_names()
    assert "seedvlm.seed" in known and "seedvlm.train.step" in known
    graph = {name: imported_modules(name, path, known) for name, path in known.items()}
    assert "seedvlm.train.teacher" in graph["seedvlm.train.step"]  # the walk sees the imports it should
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_and_only_then():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y2"}, "y2": {"y"}}) == ["y", "y2", "y"]


@pytest.mark.parametrize("source,expected", [
    ("from seedvlm import seed as S", {"seedvlm.seed"}),
    ("def f():\n    from seedvlm.models.llava import llava_of", {"seedvlm.models", "seedvlm.models.llava"}),
    ("from . import step", {"seedvlm.train.step"}),
    ("from ..models import dtypes", {"seedvlm.models", "seedvlm.models.dtypes"}),
    ("import torch", set()),
])
def test_imports_are_read_at_every_level(tmp_path, source, expected):
    """(The module's own parent packages, seedvlm and seedvlm.train here, are not edges.)"""
    fake = tmp_path / "fake.py"
    fake.write_text(source + "\n")
    assert imported_modules("seedvlm.train.fake", fake, module_names()) == expected
