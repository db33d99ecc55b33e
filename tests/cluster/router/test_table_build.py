"""A table's creation is finished by whichever router a waiting client asks: one left CREATING
(its router stopped, or its attempts failed) becomes ACTIVE when DescribeTable is called, and
one deleted meanwhile never comes back, nor do its groups (cluster/router/tablebuild.py). The
metadata's writes after a read (activate, update) are conditional for the same reason.

Before the build, a CreateTable whose groups did not elect within 15 s left its table CREATING
for ever: the client's retry was told ResourceInUseException and waited in vain (CI, session
12, the Kubernetes game day's first step)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from chaos.backends.local import LocalCluster
from cluster.metadata.partitionmap import (
    KeySchema,
    TableLayout,
    TableSpec,
    build_layout,
    meta_replicas,
    next_version,
)
from cluster.metadata.store import TABLES, MetadataStore
from cluster.router.context import RouterContext
from cluster.router.settings import update_table
from cluster.router.tablebuild import STALE_SECONDS, start_build
from cluster.router.tables import delete_table
from cluster.storage.client import GroupClient
from cluster.storage.commands import PutCommand
from cluster.topology import parse_topology
from tests.conftest import client_for

pytestmark = pytest.mark.slow


def _store(cluster: LocalCluster) -> tuple[MetadataStore, GroupClient]:
    nodes = GroupClient({p.id: p.listen for p in cluster.config.processes_with_role("storage")})
    return MetadataStore(nodes, meta_replicas(parse_topology(cluster.config.topology))), nodes


async def _abandon_creation(
    cluster: LocalCluster, name: str, age: float, legacy: bool = False
) -> TableLayout:
    """Record ``name`` as CREATING, created ``age`` seconds ago, as a router that stopped right
    after that step leaves it: no group was created. ``legacy``: the item as the code before
    items named their TableId wrote it."""
    store, nodes = _store(cluster)
    try:
        current = await store.read_map()
        version = next_version(current.version)
        spec = TableSpec(
            name,
            KeySchema("k", "S"),
            partitions=2,
            created_at=time.time() - age,
            table_id=str(uuid.uuid4()),
            incarnation=version,
        )
        layout = build_layout(
            parse_topology(cluster.config.topology), spec, current.replicas_per_node()
        )
        if legacy:
            item = store._item(layout, version)
            del item["table_id"]
            assert (await store._write(PutCommand(TABLES, store._pk(name), b"", item)))["ok"]
        else:
            await store.create(layout, version)
        return layout
    finally:
        await nodes.close()


async def _build_from(cluster: LocalCluster, view: TableLayout) -> TableLayout | None:
    """What a router whose cache (or MemDS) shows ``view`` does on DescribeTable: a build."""
    async with aiohttp.ClientSession() as session:
        ctx = RouterContext(cluster.config, "rt-b", session)
        await ctx.start()
        try:
            return await asyncio.wait_for(start_build(ctx, view), 40)
        finally:
            await ctx.stop()


def _hosted(cluster: LocalCluster, groups: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for node in cluster.process_ids("storage"):
        status = cluster.storage_status(node) or {"replicas": []}
        mine = sorted(r["group"] for r in status["replicas"] if r["group"] in groups)
        if mine:
            found[node] = mine
    return found


def _status(client: Any, name: str) -> str:
    """The table's status, once MemDS has the map that names it (a few hundred ms)."""
    for _ in range(50):
        try:
            return str(client.describe_table(TableName=name)["Table"]["TableStatus"])
        except client.exceptions.ResourceNotFoundException:
            time.sleep(0.1)
    return str(client.describe_table(TableName=name)["Table"]["TableStatus"])


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_a_table_its_router_abandoned_becomes_active_for_the_client_waiting(
    local_cluster: LocalCluster,
) -> None:
    name = _name("abandoned")
    asyncio.run(_abandon_creation(local_cluster, name, age=STALE_SECONDS + 30))
    client = client_for(local_cluster, router="rt-b")
    statuses = []
    deadline = time.monotonic() + 60
    while (status := _status(client, name)) != "ACTIVE" and time.monotonic() < deadline:
        statuses.append(status)
        time.sleep(0.5)
    assert status == "ACTIVE", f"still {status} after 60 s of DescribeTable"
    assert statuses and set(statuses) == {"CREATING"}
    client.put_item(TableName=name, Item={"k": {"S": "a"}, "v": {"S": "1"}})
    got = client.get_item(TableName=name, Key={"k": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"]["v"] == {"S": "1"}


def test_an_abandoned_table_becomes_active_with_no_describetable(
    local_cluster: LocalCluster,
) -> None:
    """A client that never calls DescribeTable (it polls GetItem, or waits) still gets its
    table: every router's background (StaleBuilds) resumes an abandoned creation. Before, only
    a DescribeTable did, and such a client waited for ever (session 13's closing note)."""
    name = _name("unwatched")
    asyncio.run(_abandon_creation(local_cluster, name, age=STALE_SECONDS + 30))

    async def status_in_metadata() -> str | None:
        store, nodes = _store(local_cluster)
        try:
            layout = (await store.read_map()).tables.get(name)
            return None if layout is None else layout.spec.status
        finally:
            await nodes.close()

    deadline = time.monotonic() + 40  # a few SWEEP_SECONDS and a build
    while (status := asyncio.run(status_in_metadata())) != "ACTIVE":
        assert time.monotonic() < deadline, f"still {status} after 40 s, no DescribeTable"
        time.sleep(0.5)
    client = client_for(local_cluster, router="rt-a")
    for _ in range(50):  # MemDS serves the ACTIVE table within a refresh
        try:
            client.put_item(TableName=name, Item={"k": {"S": "a"}, "v": {"S": "1"}})
            break
        except client.exceptions.ResourceNotFoundException:
            time.sleep(0.1)
    got = client.get_item(TableName=name, Key={"k": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"]["v"] == {"S": "1"}


def test_a_young_creating_table_is_left_to_its_router(local_cluster: LocalCluster) -> None:
    """Within STALE_SECONDS a CREATING table is its creating router's: DescribeTable does not
    start a second build (its groups are not created by a reader)."""
    name = _name("young")
    layout = asyncio.run(_abandon_creation(local_cluster, name, age=0))
    client = client_for(local_cluster, router="rt-a")
    for _ in range(4):
        assert _status(client, name) == "CREATING"
        time.sleep(0.5)
    assert _hosted(local_cluster, {p.id for p in layout.partitions}) == {}
    client.delete_table(TableName=name)


def test_a_build_from_a_stale_view_leaves_no_groups_of_a_deleted_table(
    local_cluster: LocalCluster,
) -> None:
    name = _name("orphan")
    stale = asyncio.run(_abandon_creation(local_cluster, name, age=STALE_SECONDS + 30))
    groups = {p.id for p in stale.partitions}
    client = client_for(local_cluster, router="rt-a")
    client.delete_table(TableName=name)  # tombstone, then drop_group on every replica
    assert asyncio.run(_build_from(local_cluster, stale)) is None
    assert name not in client.list_tables()["TableNames"]
    time.sleep(1)
    assert _hosted(local_cluster, groups) == {}, "groups of a deleted table put back"


def test_a_table_left_creating_by_the_code_before_becomes_active(
    local_cluster: LocalCluster,
) -> None:
    name = _name("legacy")
    layout = asyncio.run(_abandon_creation(local_cluster, name, STALE_SECONDS + 30, legacy=True))
    built = asyncio.run(_build_from(local_cluster, layout))
    status = _status(client_for(local_cluster, router="rt-a"), name)
    assert built is not None and status == "ACTIVE", f"build gave {built}; table {status}"


def test_activate_brings_back_neither_a_deleted_table_nor_a_replaced_one(
    local_cluster: LocalCluster,
) -> None:
    name = _name("act")

    def active(layout: TableLayout) -> TableLayout:
        return TableLayout(replace(layout.spec, status="ACTIVE"), layout.partitions)

    async def activations() -> list[bool | str]:
        store, nodes = _store(local_cluster)
        try:
            first = await _abandon_creation(local_cluster, name, age=0)
            await store.delete(name, first.spec.incarnation + 1, first.spec.table_id)
            out: list[bool | str] = [
                await store.activate(active(first), first.spec.incarnation + 2)
            ]
            out.append(name in (await store.read_map()).tables)
            second = await _abandon_creation(local_cluster, name, age=0)
            out.append(await store.activate(active(first), second.spec.incarnation + 1))
            out.append((await store.read_map()).tables[name].spec.status)
            out.append(await store.activate(active(second), second.spec.incarnation + 1))
            out.append((await store.read_map()).tables[name].spec.status)
            return out
        finally:
            await nodes.close()

    assert asyncio.run(activations()) == [False, False, False, "CREATING", True, "ACTIVE"]


def test_an_update_table_racing_a_delete_does_not_bring_the_table_back(
    local_cluster: LocalCluster,
) -> None:
    """UpdateTable reads the map, then writes the changed spec; a DeleteTable in between must
    win (an unconditional write brought the table back ACTIVE with its groups dropped)."""
    name = _name("upd")
    client = client_for(local_cluster, router="rt-a")
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})

    async def update_racing_a_delete() -> str:
        async with aiohttp.ClientSession() as session:
            ctx = RouterContext(local_cluster.config, "rt-b", session)
            await ctx.start()
            update = ctx.metadata.update

            async def deleted_first(layout: TableLayout, version: int) -> bool:
                await delete_table(ctx, {"TableName": name})  # another client, another router
                return await update(layout, version)

            ctx.metadata.update = deleted_first  # type: ignore[method-assign]
            try:
                await update_table(ctx, {"TableName": name, "DeletionProtectionEnabled": True})
            except Exception as exc:  # DynamoError: the client is told the table is gone
                return str(getattr(exc, "type", exc))
            finally:
                await ctx.stop()
            return "updated"

    assert asyncio.run(update_racing_a_delete()) == "ResourceNotFoundException"
    assert name not in client.list_tables()["TableNames"], "deleted table back (ACTIVE)"
