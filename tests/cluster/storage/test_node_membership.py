"""The node's change_membership keeps every group at two voters or more.

Raft allows a group of one voter, but DeleteTable's drain opens a table's name once all but one
node of the cluster dropped each of its groups (cluster/router/tabledrain.py): sound only while
every majority holds two nodes. Healing never shrinks a group below two; the node's admin call
refuses to, whoever asks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.cluster.storage.test_node_incarnation import GROUP, NODES, OLD, Cluster, in_cluster


async def change(cluster: Cluster, voters: list[str]) -> dict[str, Any]:
    """The leader's answer to changing ``GROUP``'s voters to ``voters``."""
    request = {"op": "change_membership", "group": GROUP, "voters": voters, "incarnation": OLD}
    for _ in range(500):
        for node in cluster.nodes.values():
            reply: dict[str, Any] = await node.handle_request(dict(request))
            if reply.get("error") != "NotLeader":
                return reply
        await asyncio.sleep(0.02)
    raise AssertionError(f"{GROUP} elected no leader")


def test_a_group_is_never_shrunk_below_two_voters(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        for name in NODES:
            await cluster.start(name)
        for node in cluster.nodes.values():
            assert await node.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.put("old")
        two = await change(cluster, NODES[:2])
        assert two.get("members") == NODES[:2], two
        one = await change(cluster, NODES[:1])
        assert one.get("error") == "ValidationException", one
        assert "at least 2 voters" in one["message"]

    in_cluster(tmp_path, scenario)
