"""The checks package's map: no import cycles among its modules, and nothing but the run directory
(no chaos, workloads or cluster imports), so that any run can be re-checked offline."""

from __future__ import annotations

import ast
from pathlib import Path

CHECKS = Path(__file__).resolve().parents[2] / "checks"


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, TYPE_CHECKING blocks and function bodies included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {f"checks.{p.stem}": p for p in CHECKS.glob("*.py") if p.stem != "__init__"}
    return {name: imports_of(path) & set(modules) for name, path in modules.items()}


def test_no_import_cycles_among_the_checks_modules() -> None:
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            assert state.get(target) != "open", " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_checks_read_only_the_run_directory() -> None:
    for path in CHECKS.glob("*.py"):
        outside = {
            m for m in imports_of(path) if m.split(".")[0] in ("chaos", "workloads", "cluster")
        }
        assert not outside, f"{path.name} imports {sorted(outside)}"
