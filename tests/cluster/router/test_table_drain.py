"""DeleteTable's drops go on until the deleted table's groups can commit nothing more, and
CreateTable of the name is refused until then (cluster/router/tabledrain.py), on a real
metadata group with storage nodes that refuse drops while "down"."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from cluster.metadata.partitionmap import TableLayout
from cluster.metadata.store import MetadataStore
from cluster.router import tabledrain, tables
from cluster.router.errors import DynamoError
from cluster.router.storage_access import StorageAccess
from cluster.router.tabledrain import TableDrains
from cluster.storage.client import GroupClient
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
            # It names the nodes the name waits for (one gone for good shows there).
            assert all(n in str(refused.value.body()) for n in nodes.down)
            assert not any(n in str(refused.value.body()) for n in up)
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


def with_lookup(ctx: Any, store: MetadataStore) -> Any:
    """``RouterContext.table`` over the metadata (what MemDS serves: tombstones are absent)."""

    async def table(name: str, active: bool = True) -> TableLayout:
        layout = (await store.read_map()).tables.get(name)
        if layout is None or (active and layout.spec.status != "ACTIVE"):
            raise DynamoError.not_found(None if active else name)
        return layout

    ctx.table = table
    return ctx


def test_describe_says_deleting_until_the_name_is_free_so_the_waiter_waits(tmp_path: Path) -> None:
    """DynamoDB's documented way to recreate a table: DeleteTable, boto3's table_not_exists
    waiter (DescribeTable until ResourceNotFoundException), CreateTable. The SDKs do not retry
    CreateTable's ResourceInUseException: the waiter must not end while the name is held."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        nodes = Nodes()
        described: list[str] = []
        async with meta_store(tmp_path / "n1") as store:
            ctx = with_lookup(router(store, nodes), store)
            await created(ctx)
            layout = (await store.read_map()).tables["orders"]
            nodes.down = set(layout.partitions[0].replicas[1:])  # any two nodes hold the name
            await tables.delete_table(ctx, {"TableName": "orders"})

            async def describe(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                if described:  # the nodes are back between the waiter's 1st and 2nd call
                    nodes.down = set()
                    await TableDrains(ctx).drain_due()
                try:
                    reply = await tables.describe_table(ctx, request)
                except DynamoError as exc:
                    described.append(exc.type)
                    return exc.status, exc.body()
                described.append(reply["Table"]["TableStatus"])
                return 200, reply

            def answer(request: Any, **kwargs: Any) -> AWSResponse:
                call = describe(json.loads(request.body))
                status, body = asyncio.run_coroutine_threadsafe(call, loop).result(30)
                raw = SimpleNamespace(stream=lambda: iter([json.dumps(body).encode()]))
                headers = {"Content-Type": "application/x-amz-json-1.0"}
                return AWSResponse(request.url, status, headers, raw)

            client = boto3.client(
                "dynamodb",
                region_name="us-east-1",
                endpoint_url="http://127.0.0.1:9",
                aws_access_key_id="x",
                aws_secret_access_key="x",
            )
            client.meta.events.register("before-send.dynamodb.DescribeTable", answer)
            waiter = client.get_waiter("table_not_exists")
            config = {"Delay": 0, "MaxAttempts": 5}
            await asyncio.to_thread(waiter.wait, TableName="orders", WaiterConfig=config)
            assert described == ["DELETING", "ResourceNotFoundException"], described
            await created(ctx)  # what the client does next

    asyncio.run(scenario())


def test_a_drop_on_a_node_the_router_cannot_dial_fails_alone(tmp_path: Path) -> None:
    """A node the map lists outside the topology (new_drain lists it, on purpose): the
    router's node_call raises KeyError. DeleteTable answered 500 after its tombstone and no
    drain round ever recorded a drop: the name stayed taken for good."""

    async def scenario() -> None:
        nodes = Nodes()
        # The router's real node_call: it knows the topology's nodes only (dial map).
        real = SimpleNamespace(nodes=GroupClient({n: "127.0.0.1:9" for n in NODES}, 0.5))

        async def node_call(node: str, op: str, deadline: float, **fields: Any) -> Any:
            if node in NODES:
                return await nodes.node_call(node, op, deadline, **fields)
            return await StorageAccess.node_call(real, node, op, deadline, **fields)  # type: ignore[arg-type]

        async with meta_store(tmp_path / "n1") as store:
            ctx = router(store, cast(Any, SimpleNamespace(node_call=node_call)))
            await created(ctx)
            layout = (await store.read_map()).tables["orders"]
            p0 = layout.partitions[0]  # written under another topology: sn-x9 is not in it
            moved = replace(p0, replicas=(p0.replicas[0], p0.replicas[1], "sn-x9"))
            odd = TableLayout(layout.spec, (moved, *layout.partitions[1:]))
            version = (await store.read_map()).version + 1
            assert await store.activate(
                replace(odd, spec=replace(odd.spec, status="ACTIVE")), version
            )
            await tables.delete_table(ctx, {"TableName": "orders"})
            # Every topology node dropped: sn-x9 alone is left, so the name is free.
            (drain,) = await store.drains()
            assert drain.holding() == 0 and drain.waiting() == [], drain
            await created(ctx)
            await real.nodes.close()

    asyncio.run(scenario())


def test_a_delete_of_a_table_still_being_deleted_answers_deleting(tmp_path: Path) -> None:
    """DynamoDB: "If table is already in the DELETING state, no error is returned" (DeleteTable's
    API reference). It answered ResourceNotFoundException while DescribeTable said DELETING."""

    async def scenario() -> None:
        nodes = Nodes()
        async with meta_store(tmp_path / "n1") as store:
            ctx = router(store, nodes)
            await created(ctx)
            nodes.down = {"sn-a1", "sn-b1"}  # any two nodes hold the name
            first = await tables.delete_table(ctx, {"TableName": "orders"})
            again = await tables.delete_table(ctx, {"TableName": "orders"})
            assert first["TableDescription"]["TableStatus"] == "DELETING"
            assert again["TableDescription"]["TableStatus"] == "DELETING"
            assert again["TableDescription"]["TableName"] == "orders"
            nodes.down = set()
            await TableDrains(ctx).drain_due()
            with pytest.raises(DynamoError) as gone:  # the name is free: no such table
                await tables.delete_table(ctx, {"TableName": "orders"})
            assert gone.value.type == "ResourceNotFoundException"

    asyncio.run(scenario())


class CountingNodes(Nodes):
    """Nodes whose drops take a moment; the most drop calls in flight at once is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most = 0

    async def node_call(self, node: str, op: str, deadline: float, **fields: Any) -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            return await super().node_call(node, op, deadline, **fields)
        finally:
            self.in_flight -= 1


def test_a_round_has_a_bounded_number_of_drops_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round sent every pending drop of every due drain at once (drains x partitions x
    nodes). DeleteTable's own attempt still sends a table's drops in one wave."""

    async def scenario() -> None:
        nodes = CountingNodes()
        async with meta_store(tmp_path / "n1") as store:
            ctx = router(store, nodes)
            ctx.config.default_partitions = 8
            for name in ("t-a", "t-b", "t-c"):
                await tables.create_table(ctx, dict(REQUEST, TableName=name))
            await tables.delete_table(ctx, {"TableName": "t-a"})
            assert nodes.most == 8 * len(NODES)  # one wave: the name is free at once
            assert await store.drains() == []
            nodes.down = set(NODES)
            for name in ("t-b", "t-c"):
                await tables.delete_table(ctx, {"TableName": name})
            nodes.down, nodes.most = set(), 0
            monkeypatch.setattr(tabledrain, "DROPS_IN_FLIGHT", 5, raising=False)
            after = await TableDrains(ctx).drain_due()
            assert nodes.most == 5, nodes.most  # 96 drops, 5 at a time
            assert len(after) == 2 and all(d.done() for d in after)

    asyncio.run(scenario())
