"""The shape of the code: no import cycles, dependencies pointing one way, modules of a size.

The import graph is read from the source (every ``import`` statement, those inside functions
included: a lazy import still ties two modules together) of the four product packages. A cycle
is a strongly connected component of that graph with more than one module.

    chaos      -> cluster, workloads, checks     (drives a backend, reads topology)
    workloads  -> nothing of ours                (the cluster's public DynamoDB API only),
                  but the SHARED modules below
    checks     -> nothing of ours                (the run directory only)
    cluster    -> nothing of ours
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cluster", "chaos", "workloads", "checks")

#: Which of our packages each package may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "chaos": frozenset({"cluster", "workloads", "checks"}),
    "workloads": frozenset(),
    "checks": frozenset(),
    "cluster": frozenset(),
}

#: Deliberately public, dependency-free cluster modules that any package may import, each with
#: why; one of them importing anything of ours fails the test.
SHARED: dict[str, str] = {
    "cluster.sigv4core": "the signing key and canonical URI of SigV4, computed the same way by "
    "the router's verifier and the load generator's signer",
}

#: Cycles allowed to exist: none since issue #10. Should one ever have to be tolerated for a
#: while, list it here with why; the test fails on any other cycle, and when a listed one is gone.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()

MAX_LINES = 600
#: Modules allowed past MAX_LINES, each with the reason.
LARGE_MODULES: dict[str, str] = {
    "cluster/consensus/raft.py": "the whole Raft state machine in one place (STYLE.md: etcd's "
    "raft.go is one module by design)",
    "cluster/storage/node.py": "being split by the storage/healing rework (issue #10 part 1)",
}


def product_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the product packages."""
    mods: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "assets" in path.relative_to(ROOT).parts:  # shipped data, symlinked
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name an import statement in ``path`` may refer to (module or attribute)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
            yield from (f"{target}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports."""
    mods = product_modules()

    def owner(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for name in imported_names(module, path):
            target = owner(name)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == {frozenset({"a", "b", "c"})}


def test_no_new_import_cycles_and_known_ones_are_really_still_there() -> None:
    found = cycles(import_graph())

    new = sorted(sorted(c) for c in found - KNOWN_CYCLES)
    gone = sorted(sorted(c) for c in KNOWN_CYCLES - found)
    assert not new, f"import cycles: {new}; break them (a protocol, a move, one direction)"
    assert not gone, (
        f"these cycles are gone (or changed shape): remove them from KNOWN_CYCLES: {gone}"
    )


def test_dependencies_point_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if (top := target.split(".")[0]) != module.split(".")[0]
        and top not in ALLOWED[module.split(".")[0]]
        and target not in SHARED
    ]
    assert not wrong, "dependencies must point chaos -> cluster/workloads/checks only:\n" + (
        "\n".join(wrong)
    )


def test_modules_stay_small_unless_a_reason_is_written_down() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in product_modules().values()
    }
    too_big = sorted(
        f"{p}: {n} lines" for p, n in sizes.items() if n > MAX_LINES and p not in LARGE_MODULES
    )
    assert not too_big, (
        f"modules over {MAX_LINES} lines (split, or add to LARGE_MODULES with why): {too_big}"
    )
    small_again = sorted(p for p in LARGE_MODULES if sizes.get(p, 0) <= MAX_LINES)
    assert not small_again, f"no longer large (or gone): remove from LARGE_MODULES: {small_again}"


def test_shared_modules_import_nothing_of_ours() -> None:
    graph = import_graph()
    tied = {module: sorted(graph[module]) for module in SHARED if graph.get(module)}
    missing = sorted(module for module in SHARED if module not in graph)
    assert not tied, f"SHARED modules must stay dependency-free: {tied}"
    assert not missing, f"SHARED modules that are gone (remove them from SHARED): {missing}"
