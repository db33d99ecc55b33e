"""Healing benchmark: restoring 3 live members with a log replica vs building a full replica.

DynamoDB's paper (ATC 2022, "Availability") adds a *log replica* when a replica is lost: it only
needs the recent log, so the group is back to 3 live members in seconds, while a full replica
(the whole B-tree plus the log tail) takes minutes for a big partition. This measures both, for
growing data sizes, on real storage-node processes on loopback (4 nodes: the group on n1-n3,
n3 is killed, the new replica goes to n4):

  log replica:  remove n3, create a log replica on n4, add it; done when n4 holds the log up
                to the commit index (the group has 3 live members acknowledging writes).
  full replica: turn n4's log replica into a full one: copy a healthy replica's snapshot,
                restore it, replay the log tail; done when n4 has applied the commit index.

Both are timed from the first step to done; failure detection (the grace period) is left out,
it is the same for both.

    .venv/bin/python bench/healing.py [--sizes 1000,10000,50000] [--item-bytes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from cluster.storage.client import GroupClient
from cluster.storage.commands import BatchWriteCommand, PutCommand, encode_command
from tests.local_nodes import LocalNodes

console = Console()
NODES = ("n1", "n2", "n3", "n4")
FULL = ("n1", "n2", "n3")
GROUP = "bench.p0"


async def call(client: GroupClient, node: str, op: str, **fields: Any) -> dict[str, Any]:
    reply = await client.client(node).call(op, deadline=600.0, **fields)
    if "error" in reply:
        raise RuntimeError(f"{node} {op}: {reply}")
    return reply


async def change(client: GroupClient, candidates: tuple[str, ...], **fields: Any) -> None:
    for _ in range(100):
        reply = await client.call_leader(
            GROUP, "change_membership", 10.0, candidates=candidates, **fields
        )
        if "members" in reply:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"membership change refused: {reply}")


def status(cluster: LocalNodes, node: str) -> dict[str, Any]:
    return next(r for r in cluster.status(node)["replicas"] if r["group"] == GROUP)


async def until(check: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def load(client: GroupClient, items: int, item_bytes: int) -> None:
    """``items`` items of about ``item_bytes`` each, in batches, from a few writers at once."""
    pad = "x" * max(0, item_bytes - 40)
    batch = 10

    async def writer(start: int, stop: int) -> None:
        for lo in range(start, stop, batch):
            puts = tuple(
                PutCommand(
                    "bench", f"k{i:09d}".encode(), b"", {"n": {"N": str(i)}, "p": {"S": pad}}
                )
                for i in range(lo, min(lo + batch, stop))
            )
            cmd = encode_command(BatchWriteCommand(puts))
            for _ in range(5):  # blind puts: retrying one whose outcome is unknown is harmless
                reply = await client.call_leader(
                    GROUP, "propose", 60.0, candidates=FULL, cmd=cmd, timeout=30.0
                )
                if reply.get("result", {}).get("ok"):
                    break
            else:
                raise RuntimeError(f"load failed: {reply}")

    step = max(batch, -(-items // 8 // batch) * batch)
    async with asyncio.TaskGroup() as tasks:
        for start in range(0, items, step):
            tasks.create_task(writer(start, min(start + step, items)))


async def one_size(tmp: Path, items: int, item_bytes: int, compact: int) -> dict[str, float]:
    extra = ("--healing", "off", "--compact-every", str(compact))
    with LocalNodes(tmp, {}, nodes=NODES, extra_args=extra) as cluster:
        client = GroupClient(cluster.addresses())
        try:
            for node in FULL:
                await call(client, node, "create_group", group=GROUP, members=list(FULL))
            await load(client, items, item_bytes)
            leader = cluster.wait_leader(GROUP)
            lost = next(n for n in FULL if n != leader)
            survivors = tuple(n for n in FULL if n != lost)
            cluster.nodes[lost].kill(signal.SIGKILL)

            started = time.monotonic()
            await change(client, survivors, voters=list(survivors))
            await call(client, "n4", "create_group", group=GROUP, members=list(survivors),
                       log_only=True)  # fmt: skip
            await change(client, survivors, voters=[*survivors, "n4"], log_only=["n4"])
            commit = status(cluster, leader)["commit"]
            await until(lambda: status(cluster, "n4")["last_index"] >= commit)
            log_seconds = time.monotonic() - started
            wal = sum(p.stat().st_size for p in (tmp / "n4" / "groups").rglob("*.wal"))

            started = time.monotonic()
            done = await call(client, "n4", "rebuild", group=GROUP, sources=list(survivors))
            await change(client, survivors, voters=[*survivors, "n4"], log_only=[])
            commit = status(cluster, leader)["commit"]
            await until(lambda: status(cluster, "n4")["applied"] >= commit)
            full_seconds = time.monotonic() - started
            return {
                "items": items,
                "log_seconds": log_seconds,
                "log_mb": wal / 1e6,
                "full_seconds": full_seconds,
                "full_mb": done["bytes"] / 1e6,
                "fetch": done["fetch_seconds"],
                "build": done["build_seconds"],
            }
        finally:
            await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="items per run")
    parser.add_argument("--item-bytes", type=int, default=1000)
    parser.add_argument(
        "--compact-every", type=int, default=200, help="log entries (of 10 items) per snapshot"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    table = Table(title="healing: 3 live members again with a log replica vs a full replica")
    for column in ("items", "log replica", "log copied", "full replica", "full copied", "ratio"):
        table.add_column(column, justify="right")
    for items in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-healing-") as tmp:
            console.print(f"[dim]{items} items ...[/dim]")
            r = await one_size(Path(tmp), items, args.item_bytes, args.compact_every)
        table.add_row(
            f"{items:,}",
            f"{r['log_seconds']:.2f} s",
            f"{r['log_mb']:.1f} MB",
            f"{r['full_seconds']:.2f} s",
            f"{r['full_mb']:.1f} MB",
            f"{r['full_seconds'] / r['log_seconds']:.1f}x",
        )
    console.print(table)
    console.print(
        "log replica: remove the lost member, add a log replica, until it holds the log up to "
        "the commit index (copied: its WAL).\nfull replica: copy a snapshot, restore it, replay "
        "the log tail, until it has applied the commit index (copied: the snapshot).\n"
        "Failure detection (the grace period) is the same for both and left out."
    )


if __name__ == "__main__":
    asyncio.run(main())
