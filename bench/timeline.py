"""Timeline fidelity: how far from schedule faults start and end on a real local cluster.

The orchestrator promises that a fault starts and ends within 0.5 s of its schedule (it plans
ahead, applies link toxics in parallel, heals them in parallel). This runs one fault of each
shape through the real orchestrator, nemesis and Toxiproxy mesh on a fresh local cluster, and
prints the drift recorded in events.jsonl (actual - planned, seconds) for every start and end.

    .venv/bin/python bench/timeline.py [--topology 3x2x1] [--hold 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from chaos.backends.local import LocalCluster
from chaos.faults import make_fault
from chaos.orchestrator import Orchestrator
from chaos.schedule import TimedFault

FAULTS = [
    ("split", {"sides": "az-c|az-a,az-b"}),
    ("power_off_az", {"target": "az-b"}),
    ("pause_node", {"target": "sn-a1"}),
    ("latency", {"from_side": "az-a", "to_side": "az-b", "ms": 200}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="3x2x1")
    parser.add_argument("--hold", type=float, default=6.0, help="seconds each fault lasts")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="gameday-bench-") as tmp:
        cluster = LocalCluster.create(Path(tmp) / "cluster", args.topology, partitions=2)
        cluster.die_with_this_process()  # a bench killed by any signal leaves no cluster behind
        try:
            with console.status("starting the cluster ..."):
                cluster.up(timeout=300)
            timeline = []
            at = 4.0
            for n, (kind, params) in enumerate(FAULTS, start=1):
                fault = make_fault(kind, params)
                timeline.append(TimedFault(at, fault, args.hold, f"f{n}"))
                at += args.hold + 6.0  # room to restart what a power-off took down
            run_dir = Path(tmp) / "run"
            run_dir.mkdir()
            orchestrator = Orchestrator(cluster, timeline, run_dir)
            with console.status(f"running {len(timeline)} faults over {at:.0f}s ..."):
                asyncio.run(orchestrator.run(at))
            events = [json.loads(line) for line in (run_dir / "events.jsonl").open()]
        finally:
            cluster.down()
            cluster.release_subnet()
    table = Table(title="fault drift from schedule (s); goal: within 0.5 s")
    for column in ("fault", "kind", "planned start", "start drift", "planned end", "end drift"):
        table.add_column(column, justify="left" if column in ("fault", "kind") else "right")
    starts = {e["fault_id"]: e for e in events if e["event"] == "fault_start"}
    ends = {e["fault_id"]: e for e in events if e["event"] == "fault_end"}
    for fault_id, start in starts.items():
        end = ends.get(fault_id, {})
        table.add_row(
            fault_id,
            str(start.get("fault")),
            f"{start['planned']:.1f}",
            f"{start['drift']:+.3f}",
            f"{end.get('planned', float('nan')):.1f}",
            f"{end.get('drift', float('nan')):+.3f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
