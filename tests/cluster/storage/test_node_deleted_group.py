"""A deleted table's group is never created again on a node that got DeleteTable's drop, and a
late create of an older table changes nothing of the newer one's replica (session 14).

DeleteTable's drops are best effort: orphans of the deleted table (OLD) on nodes it could not
reach still form a group, whose leader heals it like any other. Its planner found the member
that did get the drop answering without the group (rule 2) and had it created again: the
create cleared the node's record of the drop, and the deleted table's group was whole again.
"""

from __future__ import annotations

import json
from pathlib import Path

from cluster.storage.layout import deleted_file
from tests.cluster.storage.test_node_incarnation import GROUP, NEW, NODES, OLD, Cluster, in_cluster


def test_a_group_deletetable_dropped_is_never_created_again_by_a_leftover(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD, "deleted": True}
        assert (await b1.handle_request(drop)) == {"dropped": True}  # DeleteTable's
        # The leftover leader's healing (rule 2: recreate a member's lost replica), as it asks.
        recreate = {"op": "create_group", "group": GROUP, "members": NODES, "rejoin": True}
        for incarnation in (OLD, OLD - 1):
            reply = await b1.handle_request({**recreate, "incarnation": incarnation})
            assert reply.get("error") == "TableDeleted", reply
        assert GROUP not in b1.replicas, "the deleted table's group was created again"
        # The reconcile, from a map that still shows the deleted table: not created either.
        assert not await b1.create_group(GROUP, NODES, from_map=True, incarnation=OLD)
        assert GROUP not in b1.replicas
        # The table created again under the name (a newer incarnation) is.
        assert await b1.create_group(GROUP, NODES, incarnation=NEW)
        assert b1.incarnation_of(GROUP) == NEW

    in_cluster(tmp_path, scenario)


def test_a_deleted_group_stays_refused_after_the_node_restarts(tmp_path: Path) -> None:
    """The record of DeleteTable's drop is durable (deleted.json): in memory only, a node
    restarted since (a deploy, a crash) took a leftover leader's create_group of the deleted
    table's group again, and the group was whole again (review, session 14)."""

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD, "deleted": True}
        assert (await b1.handle_request(drop)) == {"dropped": True}  # DeleteTable's
        await cluster.stop("sn-b1")
        b1 = await cluster.start("sn-b1")
        recreate = {"op": "create_group", "group": GROUP, "members": NODES, "rejoin": True}
        reply = await b1.handle_request({**recreate, "incarnation": OLD})  # the leftover's
        assert reply.get("error") == "TableDeleted", reply
        assert GROUP not in b1.replicas, "the deleted table's group was created again"
        assert not await b1.create_group(GROUP, NODES, from_map=True, incarnation=OLD)
        assert await b1.create_group(GROUP, NODES, incarnation=NEW)  # a newer table: created

    in_cluster(tmp_path, scenario)


def test_a_node_without_a_record_of_deletes_starts(tmp_path: Path) -> None:
    """deleted.json is written at the first DeleteTable drop only (and not by older code): a
    node without it starts with no group refused; a retried drop writes nothing more."""

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.stop("sn-b1")
        assert not deleted_file(tmp_path / "sn-b1").exists()
        b1 = await cluster.start("sn-b1")
        assert b1.incarnation_of(GROUP) == OLD
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD, "deleted": True}
        for _ in range(2):  # a retried DeleteTable
            await b1.handle_request(drop)
            assert json.loads(deleted_file(tmp_path / "sn-b1").read_text()) == {GROUP: OLD}
        older = {**drop, "incarnation": OLD - 1}  # an older one's late drop: the newest kept
        assert (await b1.handle_request(older)) == {"dropped": False}
        assert json.loads(deleted_file(tmp_path / "sn-b1").read_text()) == {GROUP: OLD}

    in_cluster(tmp_path, scenario)


def test_healings_drop_of_a_member_does_not_forbid_its_return(tmp_path: Path) -> None:
    """Only DeleteTable's drop forbids: healing drops a copy on a node that is no longer a
    member (rule 8), and the same table's group may place a member there again."""

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD}
        assert (await b1.handle_request(drop)) == {"dropped": True}
        recreate = {"op": "create_group", "group": GROUP, "members": NODES, "incarnation": OLD}
        assert (await b1.handle_request(recreate)) == {"created": True}

    in_cluster(tmp_path, scenario)


def test_a_late_create_of_an_older_table_leaves_the_newer_ones_rate(tmp_path: Path) -> None:
    """create_group checks the incarnation before it sets the partition's rate: a build of the
    deleted table (OLD) arriving late set its rate on the replica of the table created since."""

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, rate=100.0, incarnation=NEW)
        assert not await b1.create_group(GROUP, NODES, rate=5.0, provisioned=True, incarnation=OLD)
        assert b1.rate_of(GROUP) == (100.0, False), "an older table's create set the rate"
        assert b1.incarnation_of(GROUP) == NEW
        # The same table's create (a build's retry, healing's) still sets it.
        assert not await b1.create_group(GROUP, NODES, rate=50.0, incarnation=NEW)
        assert b1.rate_of(GROUP) == (50.0, False)

    in_cluster(tmp_path, scenario)
