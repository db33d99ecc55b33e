"""A DeleteTable from a stale map read must not lower the incarnation bar (review, session 13).

DeleteTable wrote its tombstone unconditionally (store.delete). Router R1 reads the map while
table "orders" is OLD; meanwhile router R2 (its clock ahead) deletes it and creates it again
(NEW). R1's tombstone, at R1's clock, replaces the NEW table's item: neither the tombstone nor
the map's version is above NEW any more, and a CreateTable at R1's clock passes the create
condition (tombstone version < its version) with an incarnation below NEW's. R1's drops name
OLD, so the NEW table's replicas stay on the nodes (drop_group: hosted > OLD), and the table
created last keeps them (create_group: incarnation <= hosted): it serves the deleted NEW
table's items."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.metadata.partitionmap import (
    KeySchema,
    PartitionMap,
    TableLayout,
    TableSpec,
    build_layout,
    next_version,
)
from cluster.metadata.store import MetadataStore, TableExists
from cluster.router import tables
from cluster.router.errors import DynamoError
from cluster.topology import parse_topology
from tests.cluster.metadata.test_store_incarnation import meta_store


class StaleReads:
    """R1's view of the metadata: its DeleteTable's map read happened before R2's changes."""

    def __init__(self, store: MetadataStore, stale: PartitionMap) -> None:
        self.store, self.stale = store, stale

    async def read_map(self) -> PartitionMap:
        return self.stale

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_stale_delete_never_lets_a_lower_incarnation_be_created(tmp_path: Path) -> None:
    async def scenario() -> None:
        topology = parse_topology("3x1x1")

        def layout(incarnation: int) -> TableLayout:
            spec = TableSpec(
                "orders",
                KeySchema("pk", "S"),
                incarnation=incarnation,
                table_id=f"id-{incarnation}",
            )
            return build_layout(topology, spec, {})

        now = int(time.time() * 1000)
        old, new = now - 60_000, now + 100_000  # R2's clock is 100 s ahead
        async with meta_store(tmp_path / "n1") as store:
            await store.create(layout(old), old)
            stale = await store.read_map()  # R1's DeleteTable reads: orders@OLD
            assert await store.delete("orders", new - 50_000, "id-" + str(old))  # R2's ...
            await store.create(layout(new), new)  # ... and CreateTable: orders@NEW
            ctx = SimpleNamespace(
                config=SimpleNamespace(topology="3x1x1"),
                metadata=StaleReads(store, stale),
                storage=SimpleNamespace(node_call=_no_call),
                resolver=SimpleNamespace(learn=lambda *args: None),
                deadline=1.0,
            )
            request = {"TableName": "orders"}
            # R1's tombstone is refused (the table it read is gone): it reads again (still
            # stale here), and gives up; NEW's incarnation stays the bar.
            with pytest.raises(DynamoError, match="kept changing"):
                await tables.delete_table(ctx, request)  # type: ignore[arg-type]
            pmap = await store.read_map()
            assert pmap.tables["orders"].spec.incarnation == new
            version = next_version(pmap.version)  # CreateTable at R1
            with pytest.raises(TableExists):
                await store.create(layout(version), version)

    asyncio.run(scenario())


async def _no_call(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {}


def test_deletetables_drops_say_the_table_is_deleted(tmp_path: Path) -> None:
    """DeleteTable's drop_group says so (``deleted``) with the table's incarnation: the node
    then never creates that table's group again, whoever asks (a leftover group's healing
    asked a node that had dropped it to create it again: session 14)."""
    calls: list[dict[str, Any]] = []

    async def node_call(node: str, op: str, deadline: float, **fields: Any) -> dict[str, Any]:
        calls.append({"node": node, "op": op, **fields})
        return {}

    async def scenario() -> int:
        spec = TableSpec("orders", KeySchema("pk", "S"), table_id="id-1")
        version = next_version(0)
        layout = build_layout(parse_topology("3x1x1"), replace(spec, incarnation=version), {})
        async with meta_store(tmp_path / "n1") as store:
            await store.create(layout, version)
            ctx = SimpleNamespace(
                config=SimpleNamespace(topology="3x1x1"),
                metadata=store,
                storage=SimpleNamespace(node_call=node_call),
                resolver=SimpleNamespace(learn=lambda *args: None),
                deadline=1.0,
            )
            await tables.delete_table(ctx, {"TableName": "orders"})  # type: ignore[arg-type]
        return version

    incarnation = asyncio.run(scenario())
    assert calls and all(c["op"] == "drop_group" for c in calls)
    assert {(c["incarnation"], c.get("deleted")) for c in calls} == {(incarnation, True)}
