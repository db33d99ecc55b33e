"""Linearizability checker benchmark: time to check generated register histories.

Generates valid histories from a simulated register (checks.synth: 50 concurrent clients, unique
values, exponential latencies, a few info ops that may or may not have taken effect), writes each
to a history.jsonl, then times loading it (parse + pair), checking it, and checking the same
history with one read made stale (the time to find and report a violation). Each time is the
best of --repeat runs, as other processes on a shared machine disturb single runs.

    .venv/bin/python bench/checker.py [--clients 50] [--seed 1] [--budget 60]
    .venv/bin/python bench/checker.py --sizes 10000 --keys 100     # one row
"""

from __future__ import annotations

import argparse
import json
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

console = Console(width=max(140, Console().width))
P = ParamSpec("P")
T = TypeVar("T")


REPEAT = 3


def timed(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
    """fn's result and its best time of REPEAT runs, in seconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        value = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - started)
    return value, best


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

    table = Table(title=f"Linearizability check, {args.clients} clients (seed {args.seed})")
    for name in ("ops", "keys", "info ops", "max ops/key", "load s", "check s", "ops/s"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    table.add_column("1 stale read: check s", justify="right")
    table.add_column("verdict")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
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
                    f"{size / check_s:,.0f}",
                    result.status,
                    f"{bad_s:.2f}",
                    bad.status,
                )
                console.log(f"{size:,} ops over {keys:,} keys: {result.summary}")
    console.print(table)


if __name__ == "__main__":
    main()
