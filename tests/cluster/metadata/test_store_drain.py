"""A tombstone's drain (store.Drain) holds the name back from CreateTable, in the metadata's own
conditional write, until no group of the deleted table has 2 nodes left that did not drop it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.metadata.partitionmap import KeySchema, TableLayout, TableSpec, build_layout
from cluster.metadata.store import Drain, MetadataStore, TableExists
from cluster.topology import parse_topology
from tests.cluster.metadata.test_store_incarnation import meta_store

NODES = ("sn-a1", "sn-b1", "sn-c1")


def layout(incarnation: int) -> TableLayout:
    spec = TableSpec("orders", KeySchema("pk", "S"), partitions=2, incarnation=incarnation,
                     table_id=f"id-{incarnation}")  # fmt: skip
    return build_layout(parse_topology("3x1x1"), spec, {})


def drain(version: int, incarnation: int = 100) -> Drain:
    return Drain("orders", version, incarnation, {"orders.p0": NODES, "orders.p1": NODES}, 1.0)


async def deleted(store: MetadataStore) -> Drain:
    await store.create(layout(100), 100)
    assert await store.delete("orders", 200, "id-100", drain(200))
    return drain(200)


def test_a_drain_holds_the_name_until_each_group_has_one_node_left(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with meta_store(tmp_path / "n1") as store:
            first = await deleted(store)
            assert first.holding() == 2
            with pytest.raises(TableExists):
                await store.create(layout(300), 300)
            # p0 dropped on two nodes, p1 on one: p1 still holds the name.
            partly = first.without({"orders.p0": {"sn-a1", "sn-b1"}, "orders.p1": {"sn-a1"}})
            assert await store.save_drain(partly)
            assert await store.drain_of("orders") == partly
            assert partly.holding() == 1 and partly.pending["orders.p0"] == ("sn-c1",)
            with pytest.raises(TableExists):
                await store.create(layout(300), 300)
            free = partly.without({"orders.p1": {"sn-c1"}})
            assert free.holding() == 0 and not free.done()
            assert await store.save_drain(free)
            assert await store.drains() == [free]  # the cleanup goes on
            await store.create(layout(300), 300)
            assert (await store.read_map()).tables["orders"].spec.incarnation == 300
            # The drain's tombstone is gone: a late progress write does not replace the table.
            assert not await store.save_drain(free.without({"orders.p0": {"sn-c1"}}))
            assert await store.drains() == []
            assert (await store.read_map()).tables["orders"].spec.incarnation == 300

    asyncio.run(scenario())


def test_a_tombstone_without_a_drain_holds_nothing(tmp_path: Path) -> None:
    """Written before drains were recorded (an older router): its drops were best effort and
    nothing says what they missed; the name is free as it was then."""

    async def scenario() -> None:
        async with meta_store(tmp_path / "n1") as store:
            await store.create(layout(100), 100)
            assert await store.delete("orders", 200, "id-100")
            assert await store.drain_of("orders") is None and await store.drains() == []
            await store.create(layout(300), 300)

    asyncio.run(scenario())


def test_a_drain_done_everywhere_is_not_listed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with meta_store(tmp_path / "n1") as store:
            first = await deleted(store)
            assert await store.drains() == [first]
            done = first.without({g: set(NODES) for g in first.pending})
            assert done.done() and await store.save_drain(done)
            assert await store.drains() == []
            assert (await store.read_map()).version == 200  # progress keeps the version

    asyncio.run(scenario())
