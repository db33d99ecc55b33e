"""A replica that rejoins empty (its files were wiped while its node was down: its term and vote
went with them, Raft.rejoin) must not vote until a leader caught it up, also across restarts.
That state was in memory only: a node that stopped (a crash, a restart) before the catch-up
found the group's directory at its next start (Replica.open had created it) and opened it as
a replica that kept its state, which voted at once: the vote it cast before the wipe, in the
term it learns again, could be cast a second time (two leaders in one term). A marker in the
replica's directory (layout.rejoin_marker), written durably before the replica opens, now
makes every open rejoin until the replica caught up (review 15c)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from cluster.storage.layout import mark_rejoining, rejoin_marker, replica_dir, wal_dir
from tests.cluster.storage.test_node_incarnation import GROUP, NEW, NODES, OLD, Cluster, in_cluster


async def written_everywhere_then_stopped(cluster: Cluster) -> None:
    await cluster.start_with_old_item()
    for name in NODES:
        await cluster.stop(name)


def test_a_rejoining_replica_still_rejoins_after_a_restart_before_its_catch_up(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        await written_everywhere_then_stopped(cluster)
        shutil.rmtree(replica_dir(tmp_path / "sn-b1", GROUP))  # wiped while down
        b1 = await cluster.start("sn-b1")  # alone: no leader can catch it up
        assert b1.replicas[GROUP].raft.rejoin_until is not None  # as designed
        await cluster.stop("sn-b1")  # stops (or crashes) before any catch-up
        b1 = await cluster.start("sn-b1")
        raft = b1.replicas[GROUP].raft
        assert raft.rejoin_until is not None, (
            "restarted before its catch-up, the wiped replica votes again (its vote record "
            "is still the one lost with its files)"
        )
        for name in ("sn-a1", "sn-c1"):  # a leader catches it up: it votes again from then on
            await cluster.start(name)
        await cluster.put("new")
        marker = rejoin_marker(replica_dir(tmp_path / "sn-b1", GROUP))
        for _ in range(500):
            b1 = cluster.nodes["sn-b1"]
            if b1.replicas[GROUP].raft.rejoin_until is None and not marker.exists():
                break
            await asyncio.sleep(0.01)
        assert not marker.exists(), "caught up, yet still marked as rejoining"
        await cluster.until_everywhere("new")
        await cluster.stop("sn-b1")
        b1 = await cluster.start("sn-b1")
        assert b1.replicas[GROUP].raft.rejoin_until is None, "caught up, yet rejoins again"
        assert await cluster.keys("sn-b1") == ["old", "new"]

    in_cluster(tmp_path, scenario)


@pytest.mark.parametrize("lost", ["wal", "all but the marker"])
def test_a_replica_whose_wal_is_gone_from_its_directory_rejoins(tmp_path: Path, lost: str) -> None:
    """The WAL wiped inside the replica's directory (its term and vote with it), or the crash
    between the rejoin marker and the replica's first open: both rejoin, neither votes."""

    async def scenario(cluster: Cluster) -> None:
        await written_everywhere_then_stopped(cluster)
        path = replica_dir(tmp_path / "sn-b1", GROUP)
        if lost == "wal":
            shutil.rmtree(wal_dir(path))
        else:
            shutil.rmtree(path)
            mark_rejoining(path)
        b1 = await cluster.start("sn-b1")
        assert b1.replicas[GROUP].raft.rejoin_until is not None, "its lost vote record votes"
        assert rejoin_marker(path).exists()

    in_cluster(tmp_path, scenario)


def test_a_group_dropped_while_rejoining_leaves_no_marker_to_a_new_table(tmp_path: Path) -> None:
    """The marker goes with the replica's files: a replica of a table created again under the
    same name (a new incarnation) is not held rejoining by its predecessor's marker."""

    async def scenario(cluster: Cluster) -> None:
        await written_everywhere_then_stopped(cluster)
        path = replica_dir(tmp_path / "sn-b1", GROUP)
        shutil.rmtree(path)
        b1 = await cluster.start("sn-b1")
        assert b1.replicas[GROUP].raft.rejoin_until is not None
        assert await b1.drop_group(GROUP, OLD, deleted=True)
        assert not rejoin_marker(path).exists()
        assert await b1.create_group(GROUP, NODES, incarnation=NEW)
        assert b1.replicas[GROUP].raft.rejoin_until is None
        await cluster.stop("sn-b1")
        b1 = await cluster.start("sn-b1")
        assert b1.replicas[GROUP].raft.rejoin_until is None, "a new table's replica rejoins"

    in_cluster(tmp_path, scenario)


@pytest.mark.parametrize("set_aside", [False, True])
def test_a_replica_rebuilt_while_rejoining_still_rejoins(tmp_path: Path, set_aside: bool) -> None:
    """A rebuild keeps the replica's own Raft state (rebuild.py): a rejoining replica's, which
    lost its vote record; the rebuilt replica rejoins too, after a restart as well."""

    async def scenario(cluster: Cluster) -> None:
        await cluster.start_with_old_item()
        a1 = cluster.nodes["sn-a1"]
        dump: bytes = await a1.replica({"group": GROUP}).read_local(lambda s: s.dump())
        for name in NODES:
            await cluster.stop(name)
        path = replica_dir(tmp_path / "sn-b1", GROUP)
        shutil.rmtree(path)
        b1 = await cluster.start("sn-b1")
        await b1.rebuild_group(GROUP, dump, set_aside)
        assert b1.replicas[GROUP].raft.rejoin_until is not None, "rebuilt, it votes at once"
        assert rejoin_marker(path).exists()
        await cluster.stop("sn-b1")
        b1 = await cluster.start("sn-b1")
        assert b1.replicas[GROUP].raft.rejoin_until is not None
        assert await cluster.keys("sn-b1") == ["old"]

    in_cluster(tmp_path, scenario)
