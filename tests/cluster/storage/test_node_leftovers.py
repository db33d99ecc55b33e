"""What a crash leaves in a node's groups/ directory is deleted at the next start: a replica
being deleted (renamed to .dropped-*, then removed: ``StorageNode._trash``, a rebuild's old
files) and a rebuild's staging (.rebuild-*). Nothing reads them (a group whose files were
renamed away rejoins empty), yet they stayed for ever. quarantine/ (set aside for people:
corrupt or retired replicas) and a hosted group whose name starts the same way stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.storage.layout import replica_dir
from tests.cluster.storage.test_node_incarnation import GROUP, NODES, OLD, Cluster, in_cluster


def test_the_start_deletes_what_a_crash_left_of_drops_and_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    odd = ".dropped-odd.p0"  # a table named ".dropped-odd": its group is no leftover

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        assert await b1.create_group(odd, NODES, incarnation=OLD)
        await cluster.stop("sn-b1")
        node_dir = tmp_path / "sn-b1"
        groups = replica_dir(node_dir, GROUP).parent
        left = [groups / f".dropped-{GROUP}-123", groups / f".rebuild-{GROUP}-456"]
        kept = [node_dir / "quarantine" / f"{GROUP}-789", replica_dir(node_dir, GROUP)]
        for path in left + kept[:1]:
            (path / "wal").mkdir(parents=True)
            (path / "wal" / "x.wal").write_bytes(b"old")
        b1 = await cluster.start("sn-b1")
        assert not any(path.exists() for path in left), "a crash's leftovers stayed"
        assert all(path.exists() for path in kept)
        assert replica_dir(node_dir, odd).exists() and odd in b1.replicas
        assert f"deleted {left[0]} (left by a crash)" in caplog.text

    in_cluster(tmp_path, scenario)
