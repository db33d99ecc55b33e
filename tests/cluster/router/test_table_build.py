"""A table's creation is finished by whichever router a waiting client asks: one left CREATING
(its router stopped, or its attempts failed) becomes ACTIVE when DescribeTable is called, and
one deleted meanwhile never comes back (cluster/router/tablebuild.py).

Before the build, a CreateTable whose groups did not elect within 15 s left its table CREATING
for ever: the client's retry was told ResourceInUseException and waited in vain (CI, session
12, the Kubernetes game day's first step)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from chaos.backends.local import LocalCluster
from cluster.metadata.partitionmap import KeySchema, TableSpec, build_layout, meta_replicas
from cluster.metadata.store import MetadataStore
from cluster.router.tablebuild import STALE_SECONDS
from cluster.storage.client import GroupClient
from cluster.topology import parse_topology
from tests.conftest import client_for

pytestmark = pytest.mark.slow


async def _abandon_creation(cluster: LocalCluster, name: str, age: float) -> None:
    """Record ``name`` as CREATING, created ``age`` seconds ago, as a router that stopped right
    after that step leaves it: no group was created."""
    topology = parse_topology(cluster.config.topology)
    nodes = GroupClient({p.id: p.listen for p in cluster.config.processes_with_role("storage")})
    store = MetadataStore(nodes, meta_replicas(topology))
    try:
        current = await store.read_map()
        version = max(int(time.time() * 1000), current.version + 1)
        spec = TableSpec(
            name,
            KeySchema("k", "S"),
            partitions=2,
            created_at=time.time() - age,
            table_id=str(uuid.uuid4()),
            incarnation=version,
        )
        await store.create(build_layout(topology, spec, current.replicas_per_node()), version)
    finally:
        await nodes.close()


def _status(client: Any, name: str) -> str:
    return str(client.describe_table(TableName=name)["Table"]["TableStatus"])


def test_a_table_its_router_abandoned_becomes_active_for_the_client_waiting(
    local_cluster: LocalCluster,
) -> None:
    asyncio.run(_abandon_creation(local_cluster, "abandoned", age=STALE_SECONDS + 30))
    client = client_for(local_cluster, router="rt-b")
    statuses = []
    deadline = time.monotonic() + 60
    while (status := _status(client, "abandoned")) != "ACTIVE" and time.monotonic() < deadline:
        statuses.append(status)
        time.sleep(0.5)
    assert status == "ACTIVE", f"still {status} after 60 s of DescribeTable"
    assert statuses and set(statuses) == {"CREATING"}
    client.put_item(TableName="abandoned", Item={"k": {"S": "a"}, "v": {"S": "1"}})
    got = client.get_item(TableName="abandoned", Key={"k": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"]["v"] == {"S": "1"}


def test_a_young_creating_table_is_left_to_its_router(local_cluster: LocalCluster) -> None:
    """Within STALE_SECONDS a CREATING table is its creating router's: DescribeTable does not
    start a second build (its groups are not created by a reader)."""
    asyncio.run(_abandon_creation(local_cluster, "young", age=0))
    client = client_for(local_cluster, router="rt-a")
    for _ in range(50):  # until MemDS has the new map (a few hundred ms)
        try:
            _status(client, "young")
            break
        except client.exceptions.ResourceNotFoundException:
            time.sleep(0.1)
    for _ in range(4):
        assert _status(client, "young") == "CREATING"
        time.sleep(0.5)
    client.delete_table(TableName="young")


def test_a_table_deleted_while_its_creation_resumes_stays_deleted(
    local_cluster: LocalCluster,
) -> None:
    asyncio.run(_abandon_creation(local_cluster, "gone-again", age=STALE_SECONDS + 30))
    client = client_for(local_cluster, router="rt-a")
    for _ in range(50):  # until MemDS has the new map; the first answer starts the build
        try:
            _status(client, "gone-again")
            break
        except client.exceptions.ResourceNotFoundException:
            time.sleep(0.1)
    client.delete_table(TableName="gone-again")
    time.sleep(3)  # a build's switch to ACTIVE must not bring it back
    names = client.list_tables()["TableNames"]
    assert "gone-again" not in names
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_table(TableName="gone-again")
