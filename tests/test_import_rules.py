"""The package layout as rules over the import graph (issue 16).

Read with :mod:`ast` from the source, so every import counts, also those
inside functions: io → preprocess → models → train/evaluate → screen/explain
→ live, with simulate, baselines and benchmarks beside, cli on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "diffscreen"
# Packages that only the command line, the benchmarks and the tests may import.
TOP_ONLY = {"cli", "benchmarks", "simulate", "baselines", "live"}
MAY_IMPORT_TOP = {"cli", "benchmarks"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name imported from it or None, line) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found += [(mod, a.name, node.lineno) for a in node.names]
    return [f for f in found if f[0].split(".")[0] == "diffscreen"]


def _package(module: str) -> str:
    """The top-level part of diffscreen a module belongs to (``diffscreen.io.cbf`` → ``io``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph():
    files = sorted(SRC.rglob("*.py"))
    return {_module_name(p): (p, _imports(p)) for p in files}


def test_no_package_imports_another_packages_private_names():
    bad = []
    for me, (path, imports) in _graph().items():
        for mod, name, line in imports:
            if _package(mod) == _package(me):
                continue
            private_mod = any(part.startswith("_") and part != "__init__" for part in mod.split("."))
            if private_mod or (name and name.startswith("_") and name != "__version__"):
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {mod}{'.' + name if name else ''}")
    assert not bad, "private names used across packages:\n" + "\n".join(bad)


def test_only_cli_and_benchmarks_import_cli_benchmarks_simulate_baselines():
    bad = []
    for me, (path, imports) in _graph().items():
        mine = _package(me)
        if mine in MAY_IMPORT_TOP or me == "diffscreen.__main__":  # ``python -m diffscreen`` runs the CLI
            continue
        for mod, name, line in imports:
            theirs = _package(mod)
            if theirs in TOP_ONLY and theirs != mine:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {mod}")
    assert not bad, "imports against the layout:\n" + "\n".join(bad)


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for me, (_, imports) in _graph().items():
        for mod, _, _ in imports:
            a, b = _package(me), _package(mod)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
    cycles = []

    def visit(node, stack):
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]))
            elif len(stack) < 12:
                visit(nxt, stack + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    assert not cycles, "package import cycles:\n" + "\n".join(sorted(set(cycles)))


def _module_edges(graph) -> dict[str, set[str]]:
    """module -> the diffscreen modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    edges: dict[str, set[str]] = {}
    for me, (_, imports) in graph.items():
        for mod, name, _ in imports:
            target = f"{mod}.{name}" if name and f"{mod}.{name}" in graph else mod
            if target in graph and target != me:
                edges.setdefault(me, set()).add(target)
    return edges


def _cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_import_cycle_outside_the_model_registry():
    """The model registry (``models._api`` and the architectures that register with it) may be a cycle; nothing else."""
    cycles = [c for c in _cycles(_module_edges(_graph())) if not all(m.startswith("diffscreen.models.") for m in c)]
    assert not cycles, "module import cycles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
