"""The shape of the code (issue 11): data flows one way, so the package has no import cycles,
counting imports inside functions; no module imports another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "memaudit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[tuple[str, list[str]]]:
    """(imported module, names) pairs of one import statement, for modules inside memaudit."""
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.split(".")[0] == "memaudit"]
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "memaudit":
        return []
    return [(target, [a.name for a in node.names])]


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """importer → imported modules (inside memaudit), and (importer, module, name) for every
    private name imported from another module."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private: list[tuple[str, str, str]] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target, names in resolve(name, path.name == "__init__.py", node):
                for imported in names:   # `from pkg import module` imports the module itself
                    if f"{target}.{imported}" in mods:
                        graph[name].add(f"{target}.{imported}")
                    elif imported.startswith("_") and not imported.startswith("__") and target != name:
                        private.append((name, target, imported))
                if target in mods and target != name:
                    graph[name].add(target)
    return graph, private


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among modules, ignoring a package's import of its own submodules' parents."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):   # a submodule importing its own package __init__
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_imports_inside_functions():
    graph, _ = import_graph()
    assert "memaudit.probe" in graph["memaudit.cli.scan"]          # imported inside scan()
    assert "memaudit.adapters" in graph["memaudit.inspect"]         # imported inside a function


def test_no_import_cycles():
    graph, _ = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_planted_cycle():
    graph, _ = import_graph()
    graph = {k: set(v) for k, v in graph.items()}
    graph["memaudit.diffusion"].add("memaudit.cli.scan")             # diffusion → cli → probe → diffusion
    assert find_cycle(graph) is not None


def test_no_private_names_imported_across_modules():
    _, private = import_graph()
    assert private == [], private
