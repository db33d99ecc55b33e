"""Replication benchmark: commit throughput and latency, and the write-unavailability window.

Starts real storage-node processes on loopback (3 nodes), then measures, side by side in one run:
  1. committed writes/s and p50/p99 commit latency with concurrent writers, one group;
  2. the same with many groups on the same 3 nodes;
  3. the write-unavailability window after SIGKILL of the leader (median and worst of N kills).

    .venv/bin/python bench/replication.py [--seconds 5] [--writers 32] [--groups 12] [--kills 10]

A write's latency is measured at the client from send to acknowledgement, i.e. after a quorum
fsynced it and the leader applied it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from cluster.storage.client import GroupClient
from cluster.storage.commands import PutCommand, encode_command
from tests.local_nodes import LocalNodes

console = Console()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def throughput(
    cluster: LocalNodes, groups: list[str], writers: int, seconds: float
) -> dict[str, float]:
    writer = GroupClient(cluster.addresses())
    for g in groups:
        cluster.wait_leader(g)
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds

    async def one(worker: int) -> None:
        nonlocal failures
        for i in range(1_000_000):  # bounded; the deadline ends it first
            if time.monotonic() >= end:
                return
            group = groups[(worker + i) % len(groups)]
            cmd = encode_command(
                PutCommand("bench", f"w{worker}-{i}".encode(), b"", {"v": {"N": str(i)}})
            )
            started = time.monotonic()
            reply = await writer.call_leader(group, "propose", deadline=5.0, cmd=cmd, timeout=5.0)
            if "result" in reply:
                latencies.append(time.monotonic() - started)
            else:
                failures += 1

    started = time.monotonic()
    await asyncio.gather(*(one(w) for w in range(writers)))
    elapsed = time.monotonic() - started
    await writer.close()
    return {
        "writes/s": len(latencies) / elapsed,
        "p50 ms": percentile(latencies, 50) * 1000,
        "p99 ms": percentile(latencies, 99) * 1000,
        "failed": failures,
    }


async def failover(cluster: LocalNodes, kills: int) -> list[float]:
    """Kill the leader of p0 under a steady write loop; measure kill -> next acknowledged write."""
    windows: list[float] = []
    for n in range(kills):
        writer = GroupClient(cluster.addresses())
        leader = cluster.wait_leader("p0", timeout=30)
        killed_at: float | None = None
        window: float | None = None
        for i in range(100_000):  # bounded write loop
            cmd = encode_command(PutCommand("bench", f"f{n}-{i}".encode(), b"", {"v": {"N": "1"}}))
            reply = await writer.call_leader("p0", "propose", deadline=10.0, cmd=cmd, timeout=1.0)
            if killed_at is not None and "result" in reply:
                window = time.monotonic() - killed_at
                break
            if killed_at is None and i == 20:
                cluster.kill(leader)
                killed_at = time.monotonic()
        await writer.close()
        assert window is not None, "writes never resumed"
        windows.append(window)
        console.print(
            f"  kill {n + 1}/{kills}: leader {leader} -> "
            f"writes resumed after {window * 1000:.0f} ms"
        )
        cluster.start(leader)
        cluster.wait_healthy()
    return windows


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()

    many = [f"p{i}" for i in range(args.groups)]
    table = Table(
        title=f"Replication on 3 local nodes ({args.writers} concurrent writers, "
        f"{args.seconds:.0f} s each)"
    )
    for col in ("setup", "writes/s", "p50 ms", "p99 ms", "failed"):
        table.add_column(col, justify="right" if col != "setup" else "left")
    with tempfile.TemporaryDirectory() as tmp:
        groups = {g: ("n1", "n2", "n3") for g in many}
        with LocalNodes(Path(tmp), groups) as cluster:
            console.print("measuring one group ...")
            one = await throughput(cluster, ["p0"], args.writers, args.seconds)
            console.print(f"measuring {args.groups} groups ...")
            spread = await throughput(cluster, many, args.writers, args.seconds)
            console.print(f"killing the leader {args.kills} times ...")
            windows = await failover(cluster, args.kills)
    for name, row in (("1 group", one), (f"{args.groups} groups", spread)):
        table.add_row(
            name,
            f"{row['writes/s']:.0f}",
            f"{row['p50 ms']:.1f}",
            f"{row['p99 ms']:.1f}",
            f"{row['failed']:.0f}",
        )
    console.print(table)
    fo = Table(title=f"Write unavailability after SIGKILL of the leader ({len(windows)} kills)")
    for col in ("median ms", "worst ms", "best ms"):
        fo.add_column(col, justify="right")
    fo.add_row(
        *(f"{v * 1000:.0f}" for v in (statistics.median(windows), max(windows), min(windows)))
    )
    console.print(fo)


if __name__ == "__main__":
    asyncio.run(main())
