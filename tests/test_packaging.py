"""The product as users install it: declared dependencies and the files the wheel ships.

A plain install (no test extra) must import: every third-party module the product packages
import has to come from a distribution in pyproject's ``dependencies``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from chaos.assets import NAMES, resolve_scenario, shipped_scenarios

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("cluster", "chaos", "workloads", "checks")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, str]:
    """pyproject's runtime dependencies: normalized name -> the requirement as written."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {}
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert name is not None, requirement
        names[_normalize(name.group())] = requirement
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the product files importing it (stdlib and our packages left out)."""
    found: dict[str, set[str]] = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PRODUCT:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_a_declared_dependency() -> None:
    deps = declared()
    owners = packages_distributions()
    missing = []
    for module, files in sorted(third_party_imports().items()):
        dists = {_normalize(d) for d in owners.get(module, [])}
        if not dists & deps.keys():
            missing.append(f"{module} (from {', '.join(sorted(dists)) or '?'}): {sorted(files)}")
    assert not missing, "imported but not in [project] dependencies:\n" + "\n".join(missing)


def test_every_dependency_has_a_lower_bound() -> None:
    unbounded = [r for r in declared().values() if ">=" not in r and "==" not in r]
    assert not unbounded


def test_shipped_scenarios_are_every_file_in_scenarios() -> None:
    shipped = shipped_scenarios()

    assert sorted(shipped) == sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert "demo" in shipped
    assert all(p.is_file() for p in shipped.values())


def test_resolve_scenario_prefers_a_file_then_a_shipped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # anywhere but the checkout
    own = tmp_path / "demo.yaml"
    own.write_text("name: mine\n")

    assert resolve_scenario(own) == own
    assert resolve_scenario("demo") == shipped_scenarios()["demo"]
    assert resolve_scenario("scenarios/az-outages.yaml") == shipped_scenarios()["az-outages"]
    with pytest.raises(FileNotFoundError, match=r"no shipped scenario.*demo"):
        resolve_scenario("no-such-scenario")
    with pytest.raises(FileNotFoundError):
        resolve_scenario("elsewhere/deep/demo.yaml")


@pytest.mark.slow
def test_the_wheel_holds_every_shipped_file(tmp_path: Path) -> None:
    """Whatever scenarios/, charts/, docker/ and k8s/ hold is in the wheel, under chaos/assets."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("gameday-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    expected = set()
    for name in NAMES:
        top = ROOT / name
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        expected |= {f"chaos/assets/{p.relative_to(ROOT)}" for p in files}
    assert "chaos/assets/scenarios/demo.yaml" in expected
    assert "chaos/assets/docker/Dockerfile" in expected
    assert expected - names == set()
