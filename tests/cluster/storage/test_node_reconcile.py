"""A node's reconcile loop (``StorageNode._join_missing``) joins the groups MemDS's map places on
it, but never puts back a group it was told to drop, nor joins a table still being created.

MemDS's map lags the metadata by a refresh or more. In session 12's official CI, DeleteTable
dropped a table's groups, a reconcile still saw the table in MemDS and created them again,
empty and rejoining (no votes, no campaign); the test then created a table of the same name
(same group ids), the nodes kept those replicas instead of fresh ones, the group with two such
replicas never elected a leader, CreateTable answered 503 after 15 s, and boto3's retry was
told ResourceInUseException "Table already exists" (tests/cluster/router/test_api_boto3.py::
test_delete_table_then_not_found). These tests drive that interleaving on one node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cluster.consensus.raft import RaftConfig
from cluster.metadata.partitionmap import KeySchema, TableSpec, TableStatus, build_layout
from cluster.storage.node import NodeConfig, StorageNode
from cluster.topology import parse_topology

GROUP = "orders.p0"
MEMBERS = ["sn-a1", "sn-b1", "sn-c1"]


def memds_tables(status: TableStatus) -> dict[str, Any]:
    """MemDS's /map "tables": table "orders", one partition, on sn-a1, sn-b1 and sn-c1."""
    spec = TableSpec("orders", KeySchema("pk", "S"), status=status)
    layout = build_layout(parse_topology("3x1x1"), spec, {})
    assert [layout.partitions[0].id, list(layout.partitions[0].replicas)] == [GROUP, MEMBERS]
    return {"orders": layout.to_dict()}


def on_a_node(tmp_path: Path, scenario: Callable[[StorageNode], Awaitable[None]]) -> None:
    """Run ``scenario`` on a started node sn-a1 (its peers are never dialled)."""

    async def main() -> None:
        node = StorageNode(
            NodeConfig(
                node_id="sn-a1",
                listen="127.0.0.1:0",
                admin="127.0.0.1:0",
                data_dir=tmp_path / "sn-a1",
                tick_seconds=0.01,
                raft=RaftConfig(),
            )
        )
        await node.start()
        try:
            await scenario(node)
        finally:
            await node.stop()

    asyncio.run(main())


def rejoining(node: StorageNode) -> bool:
    return node.replicas[GROUP].raft.status().rejoining


def test_a_dropped_group_is_not_put_back_and_the_table_created_again_gets_a_fresh_replica(
    tmp_path: Path,
) -> None:
    async def scenario(node: StorageNode) -> None:
        assert await node.create_group(GROUP, MEMBERS)  # CreateTable
        await node._join_missing(memds_tables("ACTIVE"))  # hosted: nothing to do
        assert await node.drop_group(GROUP)  # DeleteTable
        await node._join_missing(memds_tables("ACTIVE"))  # MemDS has not seen the delete yet
        assert GROUP not in node.replicas, "the dropped group was put back"
        # CreateTable of the same name: a replica that votes and campaigns.
        assert await node.create_group(GROUP, MEMBERS)
        assert not rejoining(node)

    on_a_node(tmp_path, scenario)


def test_a_drop_that_reaches_the_node_first_still_counts(tmp_path: Path) -> None:
    """DeleteTable's drop can reach a node that does not host the group (yet) while a
    reconcile from the older map is about to create it: the reconcile must not."""

    async def scenario(node: StorageNode) -> None:
        assert not await node.drop_group(GROUP)
        await node._join_missing(memds_tables("ACTIVE"))
        assert GROUP not in node.replicas

    on_a_node(tmp_path, scenario)


def test_a_table_being_created_is_left_to_its_router(tmp_path: Path) -> None:
    async def scenario(node: StorageNode) -> None:
        await node._join_missing(memds_tables("CREATING"))
        assert GROUP not in node.replicas
        assert await node.create_group(GROUP, MEMBERS)  # the router's create
        assert not rejoining(node)

    on_a_node(tmp_path, scenario)


def test_a_group_of_an_active_table_missing_here_is_joined_rejoining(tmp_path: Path) -> None:
    """What the loop is for: a node that was down when the table was created (or that lost
    its copy) joins, and waits to be caught up before it votes again. A group created again
    on purpose after a drop (healing, CreateTable) is an ordinary one for the loop again."""

    async def scenario(node: StorageNode) -> None:
        await node._join_missing(memds_tables("ACTIVE"))
        assert rejoining(node)
        assert await node.drop_group(GROUP)
        assert await node.create_group(GROUP, MEMBERS, rejoin=True)  # healing's recreate
        await node.replicas.pop(GROUP).close()  # its copy lost some other way
        await node._join_missing(memds_tables("ACTIVE"))
        assert rejoining(node)

    on_a_node(tmp_path, scenario)
