"""The package layout is the data path (docs/architecture.md): every import,
module-level or inside a function, points down the layers or within one, and no
two modules import each other, directly or around a loop."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "artifactfs"
LAYERS = {  # top-level name under artifactfs -> layer; imports may only go to the same or a lower one
    "errors": 0, "paths": 0, "fileio": 0, "timestamps": 0,
    "store": 1,
    "registry": 2,
    "chunks": 3,
    "api": 4,
    "drafts": 5,
    "mount": 6,
    "cli": 7,
}
ENTRY_POINTS = {"artifactfs", "artifactfs.__main__"}  # the public names and `python -m`: above everything


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Modules of the package that `name` imports anywhere in its text."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            subs = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs or ({target} & MODULES.keys())
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & MODULES.keys()
    return found - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    if name in ENTRY_POINTS:
        return max(LAYERS.values()) + 1
    return LAYERS[name.split(".")[1]]


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if m not in ENTRY_POINTS and m.split(".")[1] not in LAYERS]
    assert not unplaced, f"add these to LAYERS (and docs/architecture.md): {unplaced}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    upward = sorted(t for t in GRAPH[name] if _layer(t) > _layer(name))
    assert not upward, f"{name} (layer {_layer(name)}) imports from a layer above: {upward}"


def test_no_import_cycles():
    """Tarjan's strongly connected components: any component of two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
