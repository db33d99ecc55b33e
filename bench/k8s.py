"""Kubernetes benchmark: time to a healthy release, and a game day's availability next to local.

Needs the local Kubernetes running (``gameday k8s up``) and the cluster image. Measures, on this
machine, in one go (so both backends see the same hour's load):

  up:         ``gameday cluster up --backend k8s`` to every process answering /health
              (helm install, scheduling, image already on the nodes, volumes bound), then
              ``cluster down --wipe``;
  game day:   the scenario (default scenarios/az-outages.yaml) on the local backend, then on
              k8s; the availability and p99 of every window, side by side.

    .venv/bin/python bench/k8s.py [--scenario scenarios/az-outages.yaml] [--ups 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

console = Console()
GAMEDAY = [sys.executable, "-m", "chaos.cli_entry"]


def gameday(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GAMEDAY, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def time_up(work: Path) -> float:
    data = work / "up"
    started = time.monotonic()
    done = gameday("cluster", "up", "--backend", "k8s", "--data-dir", str(data), "--timeout", "300")
    took = time.monotonic() - started
    down = gameday("cluster", "down", "--wipe", "--data-dir", str(data))
    if done.returncode != 0 or down.returncode != 0:
        raise SystemExit(f"cluster up/down failed:\n{done.stdout}\n{done.stderr}\n{down.stderr}")
    return took


def run_day(scenario: str, backend: str, work: Path) -> tuple[dict[str, Any], float]:
    out = work / backend
    started = time.monotonic()
    done = gameday("run", scenario, "--backend", backend, "--out", str(out))
    took = time.monotonic() - started
    runs = sorted(out.iterdir()) if out.exists() else []
    if not runs or not (runs[-1] / "checks.json").exists():
        raise SystemExit(f"{backend} game day left no checks.json:\n{done.stdout[-3000:]}")
    checks: dict[str, Any] = json.loads((runs[-1] / "checks.json").read_text())
    return checks, took


def windows(checks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for check in checks["checks"]:
        if check["name"] == "availability":
            return {w["label"]: w for w in check["details"]["windows"]}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="scenarios/az-outages.yaml")
    parser.add_argument("--ups", type=int, default=1, help="how many timed cluster ups")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-k8s-") as tmp:
        work = Path(tmp)
        ups = [time_up(work) for _ in range(args.ups)]
        table = Table(title="gameday cluster up --backend k8s (3x2x1) to healthy")
        table.add_column("run")
        table.add_column("seconds", justify="right")
        for i, took in enumerate(ups, 1):
            table.add_row(str(i), f"{took:.1f}")
        console.print(table)
        results = {b: run_day(args.scenario, b, work) for b in ("local", "k8s")}
    table = Table(title=f"{args.scenario}: availability per window (same machine, same hour)")
    for column in ("window", "local", "k8s", "local p99 ms", "k8s p99 ms"):
        table.add_column(column, justify="left" if column == "window" else "right")
    local, k8s = (windows(results[b][0]) for b in ("local", "k8s"))

    def cell(w: dict[str, Any] | None, key: str, fmt: str) -> str:
        value = None if w is None else w.get(key)
        return "-" if value is None else format(value, fmt)

    for label in dict.fromkeys([*local, *k8s]):
        lw, kw = local.get(label), k8s.get(label)
        table.add_row(
            label,
            cell(lw, "ratio", ".2%"),
            cell(kw, "ratio", ".2%"),
            cell(lw, "p99_ms", ".0f"),
            cell(kw, "p99_ms", ".0f"),
        )
    verdicts = " / ".join(
        f"{b}: {results[b][0]['verdict']} in {results[b][1]:.0f}s" for b in results
    )
    table.caption = f"verdicts {verdicts}"
    console.print(table)


if __name__ == "__main__":
    main()
