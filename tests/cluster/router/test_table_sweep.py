"""A router's background rounds (cluster/router/tablesweep.py): one read of the table list per
round, handed to StaleBuilds and TableDrains (each read the whole list on its own before), on
a real metadata group with fake storage nodes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.metadata.partitionmap import KeySchema, TableSpec, build_layout
from cluster.router import tablebuild, tables
from cluster.router.tablesweep import TableSweeps, router_number
from cluster.topology import parse_topology
from tests.cluster.metadata.test_store_incarnation import meta_store
from tests.cluster.router.test_table_drain import NODES, REQUEST, Nodes, no_builds, router

__all__ = ["no_builds"]  # the fixture: CreateTable starts no build


def sweeping(store: Any, nodes: Nodes, me: str) -> Any:
    ctx = router(store, nodes)
    ctx.config.processes_with_role = lambda role: [SimpleNamespace(id=r) for r in ("rt-b", "rt-a")]
    ctx.router_id = me
    ctx.builds = {}
    return ctx


def test_one_read_per_round_serves_the_builds_and_the_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        nodes = Nodes()
        resumed: list[str] = []

        def start_build(ctx: Any, layout: Any) -> asyncio.Task[Any]:
            resumed.append(layout.spec.name)
            return asyncio.get_running_loop().create_task(asyncio.sleep(0))

        monkeypatch.setattr(tablebuild, "start_build", start_build)
        async with meta_store(tmp_path / "n1") as store:
            ctx = sweeping(store, nodes, "rt-a")
            await tables.create_table(ctx, dict(REQUEST))
            nodes.down = set(NODES)
            await tables.delete_table(ctx, {"TableName": "orders"})  # its drops all missed
            nodes.down = set()
            # A creation its router abandoned an hour ago.
            spec = TableSpec("stuck", KeySchema("pk", "S"), created_at=time.time() - 3600)
            version = (await store.read_map()).version + 1
            layout = build_layout(parse_topology("3x2x1"), replace(spec, incarnation=version), {})
            await store.create(layout, version)
            reads = 0
            items = store._items

            async def counted() -> list[dict[str, Any]]:
                nonlocal reads
                reads += 1
                return await items()

            monkeypatch.setattr(store, "_items", counted)
            await TableSweeps(ctx).sweep_once()
            assert reads == 1  # was 2: StaleBuilds' read_map, TableDrains' drains
            assert resumed == ["stuck"]
            monkeypatch.setattr(store, "_items", items)
            assert await store.drains() == []  # every node dropped the deleted table

    asyncio.run(scenario())


def test_each_router_has_its_own_number() -> None:
    numbers = {me: router_number(sweeping(None, Nodes(), me)) for me in ("rt-a", "rt-b", "rt-x")}
    assert numbers == {"rt-a": 0, "rt-b": 1, "rt-x": 0}
