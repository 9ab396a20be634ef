"""No import cycles in the library, read statically from the sources (exact, milliseconds):

- the graph of module-level imports (what runs when a module is loaded) has no cycle, so no module depends on the
  order in which others happen to be imported;
- neither has the graph of all imports, the ones inside functions too: a deferred import may put off a heavy
  library or a one-way dependency, never hide a pair of modules that need each other.

Imports under `if TYPE_CHECKING:` are not edges; `from pkg import submodule` is an edge to the submodule."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str], deferred: bool = False) -> set[str]:
    """The package-internal modules `name` imports while it loads; with `deferred`, also those its functions
    import when they run."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.AST]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                test = node.test
                if getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(part)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
            elif deferred:  # function and class bodies, with / for blocks, ...
                visit(list(ast.iter_child_nodes(node)))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {m for m in found if m in modules and m != name}


def import_cycles(root: Path, package: str, deferred: bool = False) -> list[list[str]]:
    """Every strongly connected component (> 1 module) of the import graph of `package` under `root`: load-time
    imports, and with `deferred` the imports inside functions too."""
    paths = {_module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph = {name: _imports(path, name, set(paths), deferred) for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_no_import_cycles():
    assert import_cycles(LIB, "vidquant") == []


def test_no_import_cycles_through_deferred_imports():
    assert import_cycles(LIB, "vidquant", deferred=True) == []


def test_a_cycle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b  # a submodule: not a cycle by itself\n")
    (pkg / "a.py").write_text("from pkg.sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
                                      "def f():\n    from pkg import a  # deferred: not a load-time edge\n")
    (pkg / "c.py").write_text("from .sub.b import f\n")
    assert import_cycles(tmp_path, "pkg") == []
    # counting deferred imports, a and b need each other; c still does not count (TYPE_CHECKING only)
    assert import_cycles(tmp_path, "pkg", deferred=True) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("from ..c import g\ndef f(): ...\n")
    (pkg / "c.py").write_text("from pkg.a import f\ndef g(): ...\n")
    assert import_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.c", "pkg.sub.b"]]
