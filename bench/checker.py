"""Linearizability checker benchmark: time to check generated register histories.

Generates valid histories from a simulated register (checks.synth: 50 concurrent clients, unique
values, exponential latencies, a few info ops that may or may not have taken effect), writes each
to a history.jsonl in the workloads' format (their own writer and merge, and the operations file
a run writes beside it: what a run's checks load), then times loading it (the operations file
when the tree reads one, else parse + pair), checking it, and checking the same
history with one read made stale (the time to find and report a violation). Times are CPU
seconds of this process (the machine is shared: wall-clock times mostly measure the others),
each the best of --repeat runs. The "run's end: pair s" column is what the load no longer pays:
the pairing of invokes with completions that a run does once, after its merge, to write the
operations file (checks.history.write_operations).

The same file is then checked by Porcupine, a Go linearizability checker (bench/porcupine, built
with `go` from the Go module proxy when Go is installed; the table says so when it is not), with
the same register rules, on one core (GOMAXPROCS=1), its CPU seconds measured the same way.
Goals (issue #15): load <= check, and check <= 1.5 x Porcupine's.

With --baseline REV, the checks/ package of that git revision (e.g. main) is timed on the same
files in the same run, for a before/after table side by side. Each tree's load and checks are
timed in a fresh subprocess (python bench/checker.py --measure TREE ...), this tree and the
baseline's taking turns, so that neither inherits the other's heap.

    .venv/bin/python bench/checker.py [--clients 50] [--seed 1] [--budget 60]
    .venv/bin/python bench/checker.py --sizes 10000 --keys 100     # one row
    .venv/bin/python bench/checker.py --sizes 100000 --baseline main
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
from typing import Any, ParamSpec, TypeVar

# --measure TREE: a subprocess timing the checks/ package of TREE (another git revision's)
sys.path.insert(0, sys.argv[2] if sys.argv[1:2] == ["--measure"] else str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from checks.history import load_operations
from checks.linearizability import check_linearizability
from checks.synth import corrupt_stale_read, register_history
from workloads.history import HistoryWriter, OpF, OpType, merge_histories, op_record

ROOT = Path(__file__).resolve().parents[1]
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


def write_history(path: Path, records: list[dict[str, Any]]) -> None:
    """``records`` (checks.synth's) in ``path`` as a run writes its history: each line built by
    the workloads' ``op_record`` (type first, times in microseconds), appended by a
    ``HistoryWriter`` to a part file and merged into ``path`` by ``merge_histories``, then its
    operations file written (``checks.history.write_operations``, as after a run's merge)."""
    from checks.history import write_operations  # this tree's (a baseline's may have none)

    parts = path.with_name(f"{path.stem}-parts")
    shutil.rmtree(parts, ignore_errors=True)
    writer = HistoryWriter(parts / "history-bench-1.jsonl", batch=len(records) + 1)
    for r in records:
        writer.append_record(
            op_record(
                OpType(r["type"]),
                OpF(r["f"]),
                r["key"],
                r.get("value"),
                r["process"],
                r["time"],
                r.get("latency"),
                r.get("error"),
                r.get("consistent"),
            )
        )
    writer.flush()
    merge_histories(parts, path)
    write_operations(path)  # as a run does after its merge: history.ops.jsonl beside it
    shutil.rmtree(parts)


def measure(history: Path, stale: Path, budget: float) -> dict[str, object]:
    """CPU seconds (best of REPEAT) to load ``history``, to check it, and to check ``stale`` (the
    same history with one read made stale), with the checks package this process imported."""
    ops, load_s = timed(load_operations, history)
    # The pairing a run does once, at its end, to write the operations file that the load reads
    # (a baseline tree from before that file has no such step: its load pairs every time).
    write_operations = getattr(sys.modules["checks.history"], "write_operations", None)
    pair_s = timed(write_operations, history)[1] if write_operations else None
    result, check_s = timed(check_linearizability, ops, budget=budget)
    bad_ops = load_operations(stale)
    bad, bad_s = timed(check_linearizability, bad_ops, budget=budget)
    per_key: dict[str, int] = {}
    for op in ops:
        per_key[op.key or ""] = per_key.get(op.key or "", 0) + 1
    return {
        "tree": str(Path(sys.modules["checks"].__file__ or "").parent.parent),
        "info": sum(1 for op in ops if op.type == "info"),
        "max_per_key": max(per_key.values()),
        "load": load_s,
        "pair_at_end": pair_s,
        "check": check_s,
        "verdict": result.status,
        "summary": result.summary,
        "stale_check": bad_s,
        "stale_verdict": bad.status,
    }


def measure_in(tree: Path, history: Path, stale: Path, budget: float) -> dict[str, object]:
    """``measure`` run in a fresh subprocess with ``tree``'s checks package."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            str(tree),
            str(history),
            str(stale),
            *(
                str(budget),
                str(REPEAT),
            ),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {tree} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout)
    if Path(str(result["tree"])).resolve() != tree.resolve():
        raise RuntimeError(f"measured {result['tree']}, not {tree}")
    return result


def extract_checks(rev: str, out_dir: Path) -> str:
    """The checks/ package of git revision ``rev``, unpacked under out_dir; its short hash."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", short, "checks"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out_dir)], input=archive, check=True)
    return short


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
    parser.add_argument("--baseline", metavar="REV", help="also time checks/ of this git revision")
    args = parser.parse_args()
    globals()["REPEAT"] = max(1, args.repeat)

    table = Table(
        title=f"Linearizability check, {args.clients} clients (seed {args.seed}); "
        f"CPU seconds, best of {REPEAT}"
    )
    for name in ("ops", "keys", "info ops", "max ops/key", "tree", "load s", "check s"):
        table.add_column(name, justify="right")
    table.add_column("run's end: pair s", justify="right")
    table.add_column("load/check", justify="right")
    table.add_column("verdict")
    for name in ("Porcupine load s", "Porcupine check s", "check/Porcupine", "Porcupine verdict"):
        table.add_column(name, justify="right")
    table.add_column("1 stale read: check s", justify="right")
    table.add_column("verdict")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        stale = Path(tmp) / "stale.jsonl"
        porcupine, how = build_porcupine(Path(tmp))
        console.print(how)
        trees = [(ROOT, "this")]
        if args.baseline:
            (Path(tmp) / "baseline").mkdir()
            short = extract_checks(args.baseline, Path(tmp) / "baseline")
            trees.append((Path(tmp) / "baseline", f"{args.baseline} ({short})"))
            console.print(f"baseline: checks/ of {args.baseline} = {short}")
        for size in args.sizes:
            for keys in args.keys:
                records = register_history(
                    ops=size,
                    clients=args.clients,
                    keys=keys,
                    seed=args.seed,
                    info_rate=args.info_rate,
                )
                write_history(path, records)
                corrupted, _ = corrupt_stale_read(records, args.seed)
                write_history(stale, corrupted)
                del records, corrupted
                go = run_porcupine(porcupine, path) if porcupine else {}
                go_s = float(str(go["check_cpu"])) if "check_cpu" in go else None
                # Trees take turns, twice each when there is a baseline (this, base, base, this):
                # each tree's figures are the better of its two subprocesses.
                order = [0, 1, 1, 0] if len(trees) > 1 else [0]
                results: dict[int, dict[str, object]] = {}
                for t in order:
                    got = measure_in(trees[t][0], path, stale, args.budget)
                    kept = results.get(t)
                    for field in ("load", "check", "stale_check"):
                        if kept is not None:
                            got[field] = min(float(str(got[field])), float(str(kept[field])))
                    results[t] = got
                for t, (_, label) in enumerate(trees):
                    m = results[t]
                    load_s, check_s = float(str(m["load"])), float(str(m["check"]))
                    table.add_row(
                        f"{size:,}",
                        f"{keys:,}",
                        str(m["info"]),
                        str(m["max_per_key"]),
                        label,
                        f"{load_s:.3f}",
                        f"{check_s:.3f}",
                        "-" if m["pair_at_end"] is None else f"{float(str(m['pair_at_end'])):.3f}",
                        f"{load_s / check_s:.2f}",
                        str(m["verdict"]),
                        f"{float(str(go['load_cpu'])):.3f}" if "load_cpu" in go else "-",
                        "-" if go_s is None else f"{go_s:.3f}",
                        "-" if go_s is None else f"{check_s / go_s:.2f}x",
                        str(go.get("result", "not run")),
                        f"{float(str(m['stale_check'])):.3f}",
                        str(m["stale_verdict"]),
                    )
                    console.log(f"{size:,} ops over {keys:,} keys ({label}): {m['summary']}")
    console.print(table)


def measure_main() -> None:
    """bench/checker.py --measure TREE HISTORY STALE BUDGET REPEAT: one JSON line."""
    _, _, history, stale, budget, repeat = sys.argv[1:]
    globals()["REPEAT"] = int(repeat)
    print(json.dumps(measure(Path(history), Path(stale), float(budget))))


if __name__ == "__main__":
    measure_main() if sys.argv[1:2] == ["--measure"] else main()
