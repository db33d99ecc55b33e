"""The files gameday ships besides code: scenarios, Helm charts, Dockerfiles, setup scripts.

In the checkout each entry of this package is a symlink to the top-level folder (scenarios/,
charts/, docker/, k8s/, pyproject.toml, README.md), so there is one copy; the wheel and sdist
hold real files in their place (package data, see pyproject.toml). Either way they are found
through ``importlib.resources``, so an installed ``gameday`` works from any directory.

    asset("docker") / "Dockerfile"          # a Path
    shipped_scenarios()                     # {"demo": Path(.../demo.yaml), ...}
    resolve_scenario("az-outages")          # a path as given, else a shipped scenario by name
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Everything the package holds; pyproject.toml and README.md let the docker backend build the
# project's wheel from an installed copy (chaos/images.py).
NAMES = ("scenarios", "charts", "docker", "k8s", "pyproject.toml", "README.md")


class AssetMissing(FileNotFoundError):
    """A shipped file is not where the package says (a broken install or checkout)."""


def asset(name: str) -> Path:
    """The shipped file or folder ``name`` (one of NAMES) as a real path on disk."""
    if name not in NAMES:
        raise ValueError(f"unknown asset {name!r}; one of {', '.join(NAMES)}")
    root = resources.files(__name__)
    if not isinstance(root, Path):  # e.g. imported from a zip: tools need real files
        raise AssetMissing(f"gameday's data files must be on disk, not in {root}")
    path = root / name
    if not path.exists():
        raise AssetMissing(
            f"{name} is missing from {root} (a broken install or checkout): reinstall gameday"
        )
    return path.resolve()


def shipped_scenarios() -> dict[str, Path]:
    """Every scenario file that comes with gameday, by file stem, sorted."""
    folder = asset("scenarios")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_scenario(arg: str | Path) -> Path:
    """``arg`` when that file exists, else the shipped scenario of that name ("demo",
    "az-outages.yaml", "scenarios/demo.yaml"); FileNotFoundError lists the shipped names."""
    path = Path(arg)
    if path.exists():
        return path
    shipped = shipped_scenarios()
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if len(path.parts) <= 2 and stem in shipped and path.parent.name in ("", "scenarios"):
        return shipped[stem]
    raise FileNotFoundError(
        f"no scenario file {str(arg)!r}, and no shipped scenario of that name "
        f"(shipped: {', '.join(shipped)}; see 'gameday scenario list')"
    )
