"""API benchmark: PutItem and GetItem (consistent and eventual) through one router and all.

Starts a full local cluster (3x2x1: 6 storage nodes, 3 MemDS, GAC, 3 routers), creates an
on-demand table, and measures each operation with concurrent clients side by side in one run:
throughput and p50/p99 latency as the client sees them (SigV4-signed HTTP, pooled).

    .venv/bin/python bench/api.py [--seconds 5] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster
from workloads.client import DynamoClient

console = Console()
TABLE = "bench"
KEYS = 1000


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def request_for(op: str, i: int) -> tuple[str, dict[str, object]]:
    key = {"id": {"S": f"k{i % KEYS}"}}
    if op == "PutItem":
        return op, {"TableName": TABLE, "Item": {**key, "v": {"N": str(i)}}}
    consistent = op == "GetItem (consistent)"
    return "GetItem", {"TableName": TABLE, "Key": key, "ConsistentRead": consistent}


async def measure(
    clients: list[DynamoClient], op: str, concurrency: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        client = clients[w % len(clients)]
        for i in range(10_000_000):  # bounded; the deadline ends it first
            if time.monotonic() >= end:
                return
            operation, params = request_for(op, w * 100_003 + i)
            started = time.monotonic()
            try:
                status, _ = await client.call(operation, params)
            except Exception:
                status = 0
            if status == 200:
                latencies.append(time.monotonic() - started)
            else:
                errors += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - started
    return {
        "ops/s": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": errors,
    }


async def run(cluster: LocalCluster, seconds: float, concurrency: int) -> Table:
    secret = cluster.config.credentials[DEFAULT_ACCESS_KEY]
    endpoints = list(cluster.endpoints().values())
    table = Table(
        title=f"DynamoDB API on a local 3x2x1 cluster ({concurrency} concurrent clients, "
        f"{seconds:.0f} s each)"
    )
    for col in ("operation", "routers", "ops/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col, justify="left" if col in ("operation", "routers") else "right")
    clients = [DynamoClient(url, DEFAULT_ACCESS_KEY, secret) for url in endpoints]
    for c in clients:
        await c.__aenter__()
    try:
        status, body = await clients[0].call(
            "CreateTable",
            {
                "TableName": TABLE,
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            },
        )
        assert status == 200, body
        await asyncio.sleep(1.0)  # let every router's MemDS see the table
        await measure(clients, "PutItem", concurrency, 1.0)  # fill the keys, warm up
        for op in ("PutItem", "GetItem (consistent)", "GetItem (eventual)"):
            for label, pool in (("1 (rt-a)", clients[:1]), (f"all {len(clients)}", clients)):
                console.print(f"measuring {op} through {label} ...")
                row = await measure(pool, op, concurrency, seconds)
                table.add_row(
                    op,
                    label,
                    f"{row['ops/s']:.0f}",
                    f"{row['p50']:.1f}",
                    f"{row['p99']:.1f}",
                    f"{row['errors']:.0f}",
                )
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster.create(Path(tmp) / "cluster", "3x2x1")
        console.print("starting a 3x2x1 cluster ...")
        cluster.up()
        try:
            table = asyncio.run(run(cluster, args.seconds, args.clients))
        finally:
            cluster.down()
    console.print(table)


if __name__ == "__main__":
    main()
