"""The layout's rules, read from the source (docs/architecture.md): which package may import which, no
import cycles, no module over 400 lines. Every import counts, at any level (in functions, under
TYPE_CHECKING), so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "synth", "trainer", "engines", "inspector")
MAX_LINES = 400
# What each package must never import (first component of the imported name).
FORBIDDEN = {
    "common": {"torch", "trainer", "engines", "inspector", "synth"},
    "synth": {"torch", "trainer", "engines", "inspector"},
    "engines": {"torch", "trainer", "inspector", "synth"},
    "inspector": {"torch", "trainer", "synth"},
    "trainer": {"inspector"},
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def imported_names(path: Path, name: str) -> set[str]:
    """Every dotted name imported anywhere in the file, relative imports resolved; for `from a import b`
    both `a` and `a.b` (b may be a module)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Edges between the project's own modules (an import of a.b.c is an edge to the longest known prefix)."""
    mods = modules(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imported in imported_names(path, name):
            parts = imported.split(".")
            for k in range(len(parts), 0, -1):
                candidate = ".".join(parts[:k])
                if candidate in mods:
                    if candidate != name:
                        targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_forbidden_imports() -> None:
    problems = []
    for name, path in modules(ROOT, PACKAGES).items():
        banned = FORBIDDEN[name.split(".")[0]]
        bad = sorted({n for n in imported_names(path, name) if n.split(".")[0] in banned})
        if bad:
            problems.append(f"{path.relative_to(ROOT)} imports {', '.join(bad)}")
    assert not problems, "\n".join(problems)


def private_imports(path: Path) -> list[str]:
    """Names starting with one underscore that the file imports from another module (a private helper)."""
    return [f"{node.module or '.'}.{a.name}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) for a in node.names
            if a.name.startswith("_") and not a.name.startswith("__")]


def test_no_module_imports_another_modules_private_helpers() -> None:
    problems = {str(p.relative_to(ROOT)): bad for p in modules(ROOT, PACKAGES).values() if (bad := private_imports(p))}
    assert problems == {}


def test_private_import_checker(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"m.py": "from a.b import _helper, public\nfrom . import __version__\n"})
    assert private_imports(root / "m.py") == ["a.b._helper"]


def test_no_import_cycles() -> None:
    assert cycles(import_graph(ROOT, PACKAGES)) == []


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules(ROOT, PACKAGES).values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_is_installed_and_checked() -> None:
    tops = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert tops == set(PACKAGES) == set(FORBIDDEN)


# The checkers themselves, on a made-up tree: they must see what they are there to see.


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


def test_checkers_find_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "def f():\n    from . import c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "pkg/d.py": "import pkg.a\n",
    })
    assert cycles(import_graph(root, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.c"]]


@pytest.mark.parametrize("source", ["import torch\n", "def f():\n    import torch.nn\n",
                                    "from torch import nn\n"])
def test_checkers_see_torch_at_any_level(tmp_path: Path, source: str) -> None:
    root = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": source})
    names = imported_names(root / "pkg" / "m.py", "pkg.m")
    assert "torch" in {n.split(".")[0] for n in names}
