"""Linearizability checker benchmark: time to check generated register histories.

Generates valid histories from a simulated register (checks.synth: 50 concurrent clients, unique
values, exponential latencies, a few info ops that may or may not have taken effect), writes each
to a history.jsonl, then times loading it (parse + pair), checking it, and checking the same
history with one read made stale (the time to find and report a violation). Times are CPU
seconds of this process (the machine is shared: wall-clock times mostly measure the others),
each the best of --repeat runs.

The same file is then checked by Porcupine, a Go linearizability checker (bench/porcupine, built
with `go` from the Go module proxy when Go is installed; the table says so when it is not), with
the same register rules, on one core (GOMAXPROCS=1), its CPU seconds measured the same way.
Goals (issue #15): load <= check, and check <= 1.5 x Porcupine's.

    .venv/bin/python bench/checker.py [--clients 50] [--seed 1] [--budget 60]
    .venv/bin/python bench/checker.py --sizes 10000 --keys 100     # one row
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from checks.history import load_operations, pair_operations
from checks.linearizability import check_linearizability
from checks.synth import corrupt_stale_read, register_history

console = Console(width=max(170, Console().width))
P = ParamSpec("P")
T = TypeVar("T")


REPEAT = 3


PORCUPINE_SRC = Path(__file__).resolve().with_name("porcupine")


def timed(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
    """fn's result and its best CPU time of REPEAT runs, in seconds (the least disturbed run)."""
    best = float("inf")
    value: T | None = None
    for _ in range(REPEAT):
        value = None  # free the last run's result before the clock starts, not inside the run
        started = time.process_time()
        value = fn(*args, **kwargs)
        best = min(best, time.process_time() - started)
    assert value is not None
    return value, best


def build_porcupine(out_dir: Path) -> tuple[Path | None, str]:
    """The Porcupine checker binary built from bench/porcupine, or None and why not."""
    go = shutil.which("go")
    if go is None:
        return None, "Go is not installed: no Porcupine comparison (install Go to get one)"
    binary = out_dir / "porcupine-check"
    console.print("building bench/porcupine with go (Porcupine from the Go module proxy) ...")
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=PORCUPINE_SRC,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return None, f"go build failed: {done.stderr.strip()[-500:]}"
    return binary, f"Porcupine built with {go}"


def run_porcupine(binary: Path, history: Path) -> dict[str, object]:
    """Porcupine's verdict and CPU seconds (best of REPEAT) on ``history``, on one core."""
    best: dict[str, object] = {}
    for _ in range(REPEAT):
        done = subprocess.run(
            [str(binary), str(history)],
            env={**os.environ, "GOMAXPROCS": "1"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            return {"result": f"error: {done.stderr.strip()[-200:]}"}
        result: dict[str, object] = json.loads(done.stdout)
        if not best or float(str(result["check_cpu"])) < float(str(best["check_cpu"])):
            best = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keys", type=int, nargs="+", default=[100, 1_000])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--info-rate", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=60.0, help="per-key search budget, s")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="report the best of N runs")
    args = parser.parse_args()
    globals()["REPEAT"] = max(1, args.repeat)

    table = Table(
        title=f"Linearizability check, {args.clients} clients (seed {args.seed}); "
        f"CPU seconds, best of {REPEAT}"
    )
    for name in ("ops", "keys", "info ops", "max ops/key", "load s", "check s", "load/check"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for name in ("Porcupine load s", "Porcupine check s", "check/Porcupine", "Porcupine verdict"):
        table.add_column(name, justify="right")
    table.add_column("1 stale read: check s", justify="right")
    table.add_column("verdict")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        porcupine, how = build_porcupine(Path(tmp))
        console.print(how)
        for size in args.sizes:
            for keys in args.keys:
                records = register_history(
                    ops=size,
                    clients=args.clients,
                    keys=keys,
                    seed=args.seed,
                    info_rate=args.info_rate,
                )
                path.write_text("".join(json.dumps(r) + "\n" for r in records))
                ops, load_s = timed(load_operations, path)
                result, check_s = timed(check_linearizability, ops, budget=args.budget)
                corrupted, _ = corrupt_stale_read(records, args.seed)
                bad_ops = pair_operations(corrupted)
                bad, bad_s = timed(check_linearizability, bad_ops, budget=args.budget)
                go = run_porcupine(porcupine, path) if porcupine else {}
                go_s = float(str(go["check_cpu"])) if "check_cpu" in go else None
                per_key: dict[str, int] = {}
                for op in ops:
                    per_key[op.key or ""] = per_key.get(op.key or "", 0) + 1
                table.add_row(
                    f"{size:,}",
                    f"{keys:,}",
                    str(sum(1 for op in ops if op.type == "info")),
                    str(max(per_key.values())),
                    f"{load_s:.2f}",
                    f"{check_s:.2f}",
                    f"{load_s / check_s:.2f}",
                    result.status,
                    f"{float(str(go['load_cpu'])):.2f}" if "load_cpu" in go else "-",
                    "-" if go_s is None else f"{go_s:.2f}",
                    "-" if go_s is None else f"{check_s / go_s:.1f}x",
                    str(go.get("result", "not run")),
                    f"{bad_s:.2f}",
                    bad.status,
                )
                console.log(f"{size:,} ops over {keys:,} keys: {result.summary}")
    console.print(table)


if __name__ == "__main__":
    main()
