"""List the import cycles of the pbxmesh package (issue 21: none, type-only imports included).

Every ``import`` and ``from … import`` in a module counts, wherever it stands: at the top,
inside a function (a lazy import) or under ``if TYPE_CHECKING:``. With ``--packages``, a
module also depends on the packages above what it imports (importing ``a.b.c`` runs
``a/__init__.py`` and ``a/b/__init__.py``), which finds the cycles that go through a
package's re-exports. Prints each cycle (a strongly connected set of modules) with its edges;
exits 1 if there is one.

    python scripts/import_cycles.py [--packages] [src/pbxmesh]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def imports_of(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    here = name.split(".") if is_package else name.split(".")[:-1]
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        deps.update(c for c in candidates if c in known and c != name)
    return deps


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    packages = "--packages" in argv
    args = [a for a in argv if a != "--packages"]
    root = Path(args[0] if args else "src/pbxmesh")
    mods = modules(root)
    graph = {}
    for name, (path, is_package) in mods.items():
        deps = imports_of(name, path, is_package, set(mods))
        if packages:
            for dep in list(deps):
                parts = dep.split(".")
                for k in range(2, len(parts)):
                    parent = ".".join(parts[:k])
                    if parent in mods and not name.startswith(parent + ".") and parent != name:
                        deps.add(parent)
        graph[name] = deps
    found = cycles(graph)
    for component in found:
        print(f"cycle of {len(component)} modules:")
        for name in component:
            print(f"  {name} -> {', '.join(sorted(graph[name] & set(component)))}")
    print(f"{len(found)} import cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
