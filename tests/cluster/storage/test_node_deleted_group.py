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

import pytest

from cluster.storage.deletedrecord import DeletedRecord
from cluster.storage.layout import (
    RecordCorruption,
    deleted_file,
    deleted_log,
    groups_file,
    replica_dir,
)
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
    """The record (deleted.log) is written at the first DeleteTable drop only (and not by older
    code): a node without it starts with no group refused; a retried drop writes nothing more."""

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.stop("sn-b1")
        log = deleted_log(tmp_path / "sn-b1")
        assert not log.exists()
        b1 = await cluster.start("sn-b1")
        assert b1.incarnation_of(GROUP) == OLD
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD, "deleted": True}
        for _ in range(2):  # a retried DeleteTable
            await b1.handle_request(drop)
            assert DeletedRecord.open(tmp_path / "sn-b1").entries() == {GROUP: OLD}
            assert len(log.read_text().splitlines()) == 1
        older = {**drop, "incarnation": OLD - 1}  # an older one's late drop: the newest kept
        assert (await b1.handle_request(older)) == {"dropped": False}
        assert DeletedRecord.open(tmp_path / "sn-b1").entries() == {GROUP: OLD}
        assert len(log.read_text().splitlines()) == 1

    in_cluster(tmp_path, scenario)


def test_a_crash_between_the_record_and_the_discard_does_not_bring_the_group_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash after the record was written (here in its older form, deleted.json: migrated),
    before the drop's discard: groups.json still
    lists the group. The start discards it (files first, then groups.json) rather than open it:
    opened, it voted in the deleted table's leftover group, and DeleteTable (its drops best
    effort) does not drop it again (review, session 14)."""

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.stop("sn-b1")
        # The crash point: deleted.json written and fsynced, groups.json not rewritten yet.
        deleted_file(tmp_path / "sn-b1").write_text(json.dumps({GROUP: OLD}))
        b1 = await cluster.start("sn-b1")
        assert GROUP not in b1.replicas, "a group deleted.json records as deleted is hosted"
        assert f"{GROUP}: of incarnation {OLD}, which DeleteTable dropped" in caplog.text
        assert GROUP not in json.loads(groups_file(tmp_path / "sn-b1").read_text())
        assert not replica_dir(tmp_path / "sn-b1", GROUP).exists()
        assert not await b1.create_group(GROUP, NODES, from_map=True, incarnation=OLD)
        assert await b1.create_group(GROUP, NODES, incarnation=NEW)  # a newer table: created

    in_cluster(tmp_path, scenario)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deleted.json", '{"orders.p0": 10'),  # torn
        ("deleted.json", '["orders.p0"]'),
        ("deleted.json", '{"orders.p0": "10"}'),
        ("groups.json", '{"orders.p0": {"members": ["sn-b1"'),  # torn
        ("groups.json", '{"orders.p0": ["sn-b1"]}'),
    ],
)
def test_a_corrupt_record_of_deletes_names_the_file(tmp_path: Path, name: str, text: str) -> None:
    """A torn or malformed record stops the start with an error naming the file and what it
    should hold (was: a bare JSONDecodeError or AttributeError); never read as empty, which
    would forget the tables deleted here or the groups hosted (review, session 14)."""

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.stop("sn-b1")
        (tmp_path / "sn-b1" / name).write_text(text)
        with pytest.raises(RecordCorruption, match=f"{name}.*expected|{name}.*object of"):
            await cluster.start("sn-b1")

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
