"""The code's shape, read with ``ast`` (nothing is imported): no import cycle among seglab's
modules, no module over 400 lines, no seglab import hidden inside a function, and no test
that imports ``conftest``."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from helpers import ROOT

SRC = ROOT / "src"
PACKAGE = "seglab"
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    """One import statement of a seglab module: the seglab modules it loads, where it stands
    and whether it sits inside a function."""

    source: str  # the importing module
    targets: frozenset[str]  # the other seglab modules it loads
    where: str  # "src/seglab/x.py:12: from seglab import y"
    in_function: bool


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package by its
    ``__init__.py``)."""
    mods = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imported_names(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The dotted names an import may load: ``from a.b import c`` loads ``a.b`` and, when
    ``c`` is a submodule, ``a.b.c``; relative imports are resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _function_nodes(tree: ast.AST) -> set[int]:
    """The ids of every node inside a function or method body (lambdas hold no imports)."""
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(inner) for node in ast.walk(tree) if isinstance(node, funcs) for inner in ast.walk(node)
    }


@cache
def _imports() -> tuple[Import, ...]:
    """Every import statement of a seglab module by a seglab module, at any depth in the
    file, in file and line order."""
    mods = _modules()

    def owner(name: str) -> str | None:  # the longest module that a dotted name lies in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        in_func = _function_nodes(tree)
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in sorted(nodes, key=lambda n: n.lineno):
            names = _imported_names(node, package)
            targets = {owner(n) for n in names if n.split(".")[0] == PACKAGE} - {None, name}
            if targets:
                where = f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
                found.append(Import(name, frozenset(targets), where, id(node) in in_func))
    return tuple(found)


def _cycles(edges: dict[str, set[str]]) -> list[tuple[list[str], set[str]]]:
    """Each strongly connected component of more than one module, with one shortest cycle
    through it as the path ``[a, b, ..., a]`` (Tarjan for the components, breadth-first
    search for the path)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)

    def shortest_cycle(start: str, component: set[str]) -> list[str]:
        paths = {start: [start]}
        queue = [start]
        for v in queue:
            for w in sorted(edges[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
        raise AssertionError("a strongly connected component always holds a cycle")

    return [(shortest_cycle(min(c), c), c) for c in components]


def test_seglab_has_no_import_cycle():
    imports = _imports()
    edges: dict[str, set[str]] = {name: set() for name in _modules()}
    for imp in imports:
        edges[imp.source] |= imp.targets
    lines = []
    for cycle, component in _cycles(edges):
        lines.append("cycle: " + " -> ".join(cycle))
        if len(component) > len(cycle) - 1:
            lines.append("  (one of the cycles among " + ", ".join(sorted(component)) + ")")
        for a, b in zip(cycle, cycle[1:], strict=False):
            lines += [
                f"  {a} -> {b}: {i.where}" for i in imports if i.source == a and b in i.targets
            ]
    assert not lines, "import cycles among seglab's modules:\n" + "\n".join(lines)


def test_cycle_finder_finds_each_cycle_and_its_shortest_path():
    """The checker itself, on a planted graph: a -> b -> c -> a with a short cut c -> b,
    a separate d <-> e, and f -> a outside any cycle."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "b"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert _cycles(edges) == [
        (["a", "b", "c", "a"], {"a", "b", "c"}),
        (["d", "e", "d"], {"d", "e"}),
    ]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_over_400_lines():
    sizes = {path: len(path.read_text().splitlines()) for path in _modules().values()}
    over = [
        f"{p.relative_to(ROOT)} ({n})"
        for n, p in sorted(((n, p) for p, n in sizes.items() if n > MAX_LINES), reverse=True)
    ]
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def test_no_seglab_import_inside_a_function():
    """An import inside a function is for an optional extra (timm, onnx, ...), never for a
    seglab module: that would hide an import cycle."""
    inner = [i.where for i in _imports() if i.in_function]
    assert not inner, "seglab imports inside functions:\n" + "\n".join(inner)


def test_no_test_imports_conftest():
    """Fixtures come from pytest; what tests share as code is in ``helpers.py``."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] == "conftest" for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "tests that import conftest:\n" + "\n".join(offenders)
