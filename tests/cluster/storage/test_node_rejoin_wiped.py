"""A replica that lost its vote record rejoins (b4c2af9), also when only its WAL's segments are
gone (the wal/ directory left in place); a rebuild of a rejoining replica whose marking of the
rebuilt copy fails reopens the old files, as a failed finish_rebuild does (review15e)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import cluster.storage.layout as layout_module
import cluster.storage.node as node_module
from cluster.storage.layout import rejoin_marker, replica_dir
from tests.cluster.storage.test_node_incarnation import GROUP, NODES, Cluster, in_cluster


def test_a_rebuild_whose_marking_fails_reopens_the_old_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(cluster: Cluster) -> None:
        await cluster.start_with_old_item()
        a1 = cluster.nodes["sn-a1"]
        dump: bytes = await a1.replica({"group": GROUP}).read_local(lambda s: s.dump())
        for name in NODES:
            await cluster.stop(name)
        path = replica_dir(tmp_path / "sn-b1", GROUP)
        shutil.rmtree(path)
        b1 = await cluster.start("sn-b1")
        assert rejoin_marker(path).exists()
        real = layout_module.mark_rejoining

        def failing(replica: Path) -> None:
            if replica != path:  # the staged copy
                raise OSError(28, "No space left on device")
            real(replica)

        monkeypatch.setattr(node_module, "mark_rejoining", failing)
        with pytest.raises(OSError):
            await b1.rebuild_group(GROUP, dump, False)
        assert GROUP in b1.replicas, "the failed rebuild left the group closed and unhosted"
        replica: Any = b1.replicas[GROUP]
        assert replica.raft.rejoin_until is not None

    in_cluster(tmp_path, scenario)


def test_a_replica_whose_wal_segments_are_gone_rejoins(tmp_path: Path) -> None:
    """b4c2af9 rejoins a replica whose wal/ directory is gone; its segments wiped inside a
    wal/ left in place lose the same term and vote (a healthy replica's WAL always holds a
    segment: Replica.open writes one), yet it opens at term 0 and votes at once."""

    async def scenario(cluster: Cluster) -> None:
        await cluster.start_with_old_item()
        for name in NODES:
            await cluster.stop(name)
        wal = replica_dir(tmp_path / "sn-b1", GROUP) / "wal"
        for segment in wal.iterdir():
            segment.unlink()
        b1 = await cluster.start("sn-b1")
        raft = b1.replicas[GROUP].raft
        assert raft.rejoin_until is not None, f"its lost vote record votes (term {raft.term})"

    in_cluster(tmp_path, scenario)
