"""What a crash leaves in a node's groups/ directory is deleted at the next start: a replica
being deleted (renamed to .dropped-*, then removed: ``StorageNode._trash``, a rebuild's old
files) and a rebuild's staging (.rebuild-*). Nothing reads them (a group whose files were
renamed away rejoins empty), yet they stayed for ever. quarantine/ (set aside for people:
corrupt or retired replicas) and a hosted group whose name starts the same way stay.

A crash inside a rebuild's swap (between its two renames) leaves a hosted group without its
directory and its old replica, whole, at .swapped-<group>-<ns>: the start puts it back (was: it
rejoined empty, forgetting its vote and acknowledged entries, and since ea14216 the start
deleted the only old copy; review15a, session 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.storage.layout import remove_leftovers, replica_dir, restore_swapped, swapped_dir
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


def test_a_crash_inside_a_rebuilds_swap_does_not_forget_the_replica(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        for name in NODES:
            await cluster.start(name)
        for node in cluster.nodes.values():
            assert await node.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.put("old")  # acknowledged
        await cluster.until_everywhere("old")
        b1 = cluster.nodes["sn-b1"]
        term = b1.replicas[GROUP].raft.term
        dump = {"op": "snapshot_dump", "group": GROUP, "incarnation": OLD}
        data = (await cluster.nodes["sn-a1"].handle_request(dump))["data"]
        real, dead = Path.rename, []

        def crash(self: Path, target: Any) -> Any:  # the process dies at the staged rename
            if dead or self.name.startswith(".rebuild-"):
                dead.append(self)  # (nothing it would do next happens)
                raise OSError("power lost here")
            return real(self, target)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Path, "rename", crash)
            with pytest.raises(OSError, match="power lost"):
                await b1.rebuild_group(GROUP, bytes(data), set_aside=False)
        path = replica_dir(tmp_path / "sn-b1", GROUP)
        assert not path.exists()
        for name in NODES:
            await cluster.stop(name)
        b1 = await cluster.start("sn-b1")  # alone: nobody can refill it
        raft = b1.replicas[GROUP].raft
        assert raft.rejoin_until is None, "the replica rejoined empty: its vote was forgotten"
        assert raft.term >= term
        assert await cluster.keys("sn-b1") == ["old"], "its acknowledged entry is gone"
        assert [p.name for p in path.parent.iterdir() if p.name != "meta"] == [GROUP]

    in_cluster(tmp_path, scenario)


def test_only_a_whole_old_replica_of_the_group_itself_is_put_back(tmp_path: Path) -> None:
    """restore_swapped puts back a missing hosted group's .swapped-<group>-<ns> only: never a
    copy being deleted (.dropped-*, maybe partly), nor another group's whose name starts the
    same (t.p0-1.p0 for t.p0); remove_leftovers keeps a copy still needed, deletes the rest."""

    def make(path: Path) -> Path:
        (path / "wal").mkdir(parents=True)
        (path / "wal" / "x.wal").write_bytes(path.name.encode())
        return path

    hosted = {"t.p0", "u.p0", "v.p0"}
    other = make(swapped_dir(tmp_path, "t.p0-1.p0", 5))  # another group's (not hosted)
    partial = make(replica_dir(tmp_path, f".dropped-{swapped_dir(tmp_path, 't.p0', 6).name}-7"))
    whole = make(swapped_dir(tmp_path, "u.p0", 8))
    make(replica_dir(tmp_path, "v.p0"))
    stale = make(swapped_dir(tmp_path, "v.p0", 9))  # the swap ended: the rebuilt one is there
    assert remove_leftovers(tmp_path, hosted) == sorted([other, partial, stale])
    assert whole.exists(), "deleted while still needed"
    make(other)
    make(partial)
    assert restore_swapped(tmp_path, hosted) == ["u.p0"]
    assert (replica_dir(tmp_path, "u.p0") / "wal" / "x.wal").read_bytes() == whole.name.encode()
    assert not replica_dir(tmp_path, "t.p0").exists()  # rejoins empty: no whole copy of it
