"""The router's partition-map cache against a stand-in MemDS on loopback: lookups are batched,
every lookup reaches MemDS whether or not the cache answered it (constant work), a cache hit
does not wait for the batch, and one batch names each table once in MemDS's answer."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from cluster.memds.server import MemDS
from cluster.metadata.partitionmap import KeySchema, PartitionMap, TableSpec, build_layout
from cluster.router.context import BATCH_SECONDS, PartitionResolver
from cluster.topology import parse_topology

LAYOUT = build_layout(
    parse_topology("3x1x1"), TableSpec("orders", KeySchema("id", "S"), partitions=2)
)


def test_lookups_are_batched_and_every_one_reaches_memds() -> None:
    async def scenario() -> None:
        batches: list[list[str]] = []

        async def lookup(request: web.Request) -> web.Response:
            tables = (await request.json())["tables"]
            batches.append(tables)
            found = {t: LAYOUT.to_dict() if t == "orders" else None for t in tables}
            return web.json_response({"version": 1, "tables": found})

        app = web.Application()
        app.router.add_post("/lookup", lookup)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            resolver = PartitionResolver([f"http://127.0.0.1:{port}"], session)
            resolver.start()
            try:
                # 20 misses at once: one batch, one answer for all of them.
                got = await asyncio.gather(*(resolver.table("orders") for _ in range(20)))
                assert got == [LAYOUT] * 20
                assert batches == [["orders"] * 20]
                # Hits answer from the cache at once, and MemDS still hears of every one.
                for _ in range(30):
                    assert await resolver.table("orders") == LAYOUT
                for _ in range(200):  # bounded wait for the batch to go out
                    if sum(map(len, batches)) == 50:
                        break
                    await asyncio.sleep(BATCH_SECONDS)
                assert sum(map(len, batches)) == 50
                assert len(batches) == 2  # the 30 hits made in one go share one batch
                assert await resolver.table("gone") is None
            finally:
                await resolver.stop()
                await runner.cleanup()

    asyncio.run(scenario())


def test_memds_answers_each_table_once_and_counts_every_lookup() -> None:
    memds = MemDS(meta=None)  # type: ignore[arg-type]  # lookup reads only the map in memory
    memds.map = PartitionMap(7, {"orders": LAYOUT})
    answer: dict[str, Any] = memds.lookup(["orders", "orders", "gone", "orders"])
    assert answer == {"version": 7, "tables": {"orders": LAYOUT.to_dict(), "gone": None}}
    assert memds.lookups._value.get() == 4  # constant work: every lookup counted
