"""DeleteTable's drops go on until the deleted table's groups can commit nothing more, and
CreateTable of the name is refused until then (cluster/router/tabledrain.py), on a real
metadata group with storage nodes that refuse drops while "down"."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.metadata.store import MetadataStore
from cluster.router import tables
from cluster.router.errors import DynamoError
from cluster.router.tabledrain import TableDrains
from tests.cluster.metadata.test_store_incarnation import meta_store

REQUEST = {
    "TableName": "orders",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}
NODES = ("sn-a1", "sn-a2", "sn-b1", "sn-b2", "sn-c1", "sn-c2")


class Nodes:
    """Storage nodes: each drop is recorded; a node in ``down`` does not answer."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.dropped: dict[str, set[tuple[str, int]]] = {n: set() for n in NODES}

    async def node_call(self, node: str, op: str, deadline: float, **fields: Any) -> dict[str, Any]:
        assert op == "drop_group" and fields["deleted"] is True
        if node in self.down:
            raise DynamoError.unavailable(f"storage node {node} unavailable")
        self.dropped[node].add((fields["group"], fields["incarnation"]))
        return {"dropped": True}


def router(store: MetadataStore, nodes: Nodes) -> Any:
    return SimpleNamespace(
        config=SimpleNamespace(topology="3x2x1", default_partitions=2),
        metadata=store,
        storage=nodes,
        resolver=SimpleNamespace(learn=lambda *args: None),
        deadline=1.0,
    )


@pytest.fixture(autouse=True)
def no_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    async def built(*args: Any) -> None:
        return None

    monkeypatch.setattr(tables, "start_build", lambda ctx, layout: None)
    monkeypatch.setattr(tables, "wait_built", built)


async def created(ctx: Any) -> int:
    reply = await tables.create_table(ctx, dict(REQUEST))
    layout = (await ctx.metadata.read_map()).tables["orders"]
    assert reply["TableDescription"]["TableId"] == layout.spec.table_id
    return layout.spec.incarnation


def test_the_name_is_refused_until_two_down_nodes_dropped_the_groups(tmp_path: Path) -> None:
    async def scenario() -> None:
        nodes = Nodes()
        async with meta_store(tmp_path / "n1") as store:
            ctx = router(store, nodes)
            old = await created(ctx)
            layout = (await store.read_map()).tables["orders"]
            nodes.down = set(layout.partitions[0].replicas[1:])  # 2 of p0's replicas
            await tables.delete_table(ctx, {"TableName": "orders"})
            # Every node was asked, replica or not (members change; healing may place it).
            up = set(NODES) - nodes.down
            groups = {(p.id, old) for p in layout.partitions}
            assert all(nodes.dropped[n] == groups for n in up)
            with pytest.raises(DynamoError) as refused:
                await tables.create_table(ctx, dict(REQUEST))
            assert refused.value.type == "ResourceInUseException"
            assert "still being dropped" in str(refused.value.body())
            assert "2 of its 2 partitions" in str(refused.value.body())
            # One node back: a quorum of the old group is gone, whatever its members.
            nodes.down.pop()
            drains = TableDrains(ctx)
            (after,) = await drains.drain_due()
            assert after.holding() == 0 and not after.done()
            new = await created(ctx)
            assert new > old

    asyncio.run(scenario())


def test_a_drain_its_router_left_is_finished_by_another(tmp_path: Path) -> None:
    """The deleting router stopped after its tombstone: the name must not stay taken."""

    async def scenario() -> None:
        nodes = Nodes()
        async with meta_store(tmp_path / "n1") as store:
            ctx = router(store, nodes)
            await created(ctx)
            nodes.down = set(NODES)  # its own attempt reaches nobody
            await tables.delete_table(ctx, {"TableName": "orders"})
            (pending,) = await store.drains()
            assert pending.holding() == 2
            nodes.down = set()
            other = TableDrains(router(store, nodes))
            (after,) = await other.drain_due()
            assert after.done() and await store.drains() == []
            await created(ctx)

    asyncio.run(scenario())


def test_a_delete_with_every_node_up_frees_the_name_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        nodes = Nodes()
        async with meta_store(tmp_path / "n1") as store:
            ctx = router(store, nodes)
            old = await created(ctx)
            await tables.delete_table(ctx, {"TableName": "orders"})
            assert await store.drains() == []
            assert await created(ctx) > old

    asyncio.run(scenario())
