"""The node journal: one fsync for every group's records, and recovery that rebuilds each WAL."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.consensus.messages import Entry, HardState, Membership, SnapshotMeta
from cluster.storage import journal as journal_module
from cluster.storage.journal import NodeJournal
from cluster.storage.layout import wal_segments
from cluster.storage.wal import WalCorruptionError, WriteAheadLog

MEMBERS = Membership(frozenset({"n1", "n2", "n3"}))


def entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, data=f"cmd{i}".encode()) for i in range(lo, hi + 1)]


def open_wals(tmp_path: Path, groups: list[str]) -> tuple[NodeJournal, dict[str, WriteAheadLog]]:
    journal = NodeJournal.open(tmp_path / "journal")
    wals = {}
    for g in groups:
        wals[g], _ = journal.recover(g, tmp_path / g / "wal", 4096)
        journal.register(g, wals[g], checkpoint=False)
    journal.checkpoint()
    return journal, wals


def lose_unsynced(tmp_path: Path, group: str, keep: int) -> None:
    """What a power loss may do to a WAL written without fsync: its tail is garbage."""
    last = wal_segments(tmp_path / group)[-1]
    data = bytearray(last.read_bytes())
    data[keep:] = b"\xff" * (len(data) - keep)
    last.write_bytes(bytes(data))


def test_recovery_rebuilds_each_wal_from_the_journal(tmp_path: Path) -> None:
    journal, wals = open_wals(tmp_path, ["p0", "p1"])
    sizes = {g: wals[g].position()[1] for g in wals}
    journal.save("p0", wals["p0"], HardState(1, "n1", 0), entries(1, 3))
    journal.save("p1", wals["p1"], None, entries(1, 2))
    journal.save("p0", wals["p0"], HardState(2, "n2", 3), entries(3, 5, term=2))  # overwrite
    journal.mark_snapshot("p1", wals["p1"], SnapshotMeta(2, 1, MEMBERS))
    journal.save("p1", wals["p1"], HardState(1, None, 3), entries(3, 3))
    # Crash (no close): the WALs' own copies were never fsynced and come back damaged.
    for g in wals:
        lose_unsynced(tmp_path, g, sizes[g] + 5)
    again = NodeJournal.open(tmp_path / "journal")
    wal0, state0 = again.recover("p0", tmp_path / "p0" / "wal", 4096)
    wal1, state1 = again.recover("p1", tmp_path / "p1" / "wal", 4096)
    assert state0.hard_state == HardState(2, "n2", 3)
    assert [(e.index, e.term) for e in state0.entries] == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert state1.snapshot == SnapshotMeta(2, 1, MEMBERS)
    assert [e.index for e in state1.entries] == [3]
    assert state1.hard_state == HardState(1, None, 3)
    wal0.close()
    wal1.close()


def test_a_torn_journal_tail_loses_only_what_was_never_acknowledged(tmp_path: Path) -> None:
    journal, wals = open_wals(tmp_path, ["p0"])
    journal.save("p0", wals["p0"], HardState(1, "n1", 0), entries(1, 2))
    (path,) = (tmp_path / "journal").glob("*.jnl")
    acknowledged = path.stat().st_size
    journal.save("p0", wals["p0"], None, entries(3, 3))
    with path.open("r+b") as f:  # the last append was torn (its fsync never returned)
        f.truncate(acknowledged + 7)
    again = NodeJournal.open(tmp_path / "journal")
    assert path.stat().st_size == acknowledged
    wal, state = again.recover("p0", tmp_path / "p0" / "wal", 4096)
    assert [e.index for e in state.entries] == [1, 2]
    wal.close()


def test_damage_inside_the_journal_is_refused(tmp_path: Path) -> None:
    journal, wals = open_wals(tmp_path, ["p0"])
    journal.save("p0", wals["p0"], HardState(1, "n1", 0), entries(1, 2))
    journal.save("p0", wals["p0"], None, entries(3, 4))
    (path,) = (tmp_path / "journal").glob("*.jnl")
    data = bytearray(path.read_bytes())
    data[60] ^= 0x40  # a bit flip in the first group record, with intact records after it
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptionError):
        NodeJournal.open(tmp_path / "journal")


def test_checkpoints_bound_the_journal_and_keep_the_segment_recovery_starts_from(
    tmp_path: Path,
) -> None:
    journal = NodeJournal.open(tmp_path / "journal", max_bytes=2048)
    wal, _ = journal.recover("p0", tmp_path / "p0" / "wal", 512)
    journal.register("p0", wal)
    for i in range(1, 60):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
    assert len(list((tmp_path / "journal").glob("*.jnl"))) == 1
    assert (tmp_path / "journal").stat().st_size >= 0
    assert next((tmp_path / "journal").glob("*.jnl")).stat().st_size < 4096
    journal.mark_snapshot("p0", wal, SnapshotMeta(50, 1, MEMBERS))
    journal.release_before("p0", wal, 51)
    journal.save("p0", wal, None, entries(60, 61))
    lose_unsynced(tmp_path, "p0", wal.position()[1] - 10)
    again = NodeJournal.open(tmp_path / "journal", max_bytes=2048)
    wal2, state = again.recover("p0", tmp_path / "p0" / "wal", 512)
    assert state.snapshot == SnapshotMeta(50, 1, MEMBERS)
    assert [e.index for e in state.entries] == list(range(51, 62))
    wal2.close()


def test_one_fsync_covers_many_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    groups = [f"p{i}" for i in range(8)]
    journal, wals = open_wals(tmp_path, groups)
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:  # a disk whose fsync takes a while
        time.sleep(0.02)
        real(fd)

    monkeypatch.setattr(journal_module.os, "fdatasync", slow_fdatasync)

    def writer(g: str) -> None:
        for i in range(1, 6):
            journal.save(g, wals[g], HardState(1, "n1", i - 1), entries(i, i))

    threads = [threading.Thread(target=writer, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.records == 40
    assert journal.commits < journal.records / 2  # group commit, not one fsync per record
    again = NodeJournal.open(tmp_path / "journal")
    for g in groups:
        lose_unsynced(tmp_path, g, 40)
        wal, state = again.recover(g, tmp_path / g / "wal", 4096)
        assert [e.index for e in state.entries] == [1, 2, 3, 4, 5]
        wal.close()


def test_forgotten_and_closed_wals_stand_alone(tmp_path: Path) -> None:
    journal, wals = open_wals(tmp_path, ["p0", "p1"])
    journal.save("p0", wals["p0"], HardState(1, "n1", 0), entries(1, 2))
    journal.save("p1", wals["p1"], HardState(1, "n1", 0), entries(1, 2))
    journal.forget("p0")  # e.g. dropped and created again: nothing may be replayed into it
    journal.save("p0", wals["p0"], None, entries(3, 3))  # no longer journaled: fsyncs itself
    journal.close()
    journal.save("p1", wals["p1"], None, entries(3, 3))  # after a clean stop, likewise
    for wal in wals.values():
        wal.close()
    again = NodeJournal.open(tmp_path / "journal")
    for g in ("p0", "p1"):
        wal, state = again.recover(g, tmp_path / g / "wal", 4096)
        assert [e.index for e in state.entries] == [1, 2, 3]
        wal.close()


def test_a_group_whose_files_are_gone_opens_empty(tmp_path: Path) -> None:
    journal, wals = open_wals(tmp_path, ["p0"])
    journal.save("p0", wals["p0"], HardState(1, "n1", 0), entries(1, 2))
    wals["p0"].close()
    for path in wal_segments(tmp_path / "p0"):
        path.unlink()  # wiped while the node was down
    again = NodeJournal.open(tmp_path / "journal")
    wal, state = again.recover("p0", tmp_path / "p0" / "wal", 4096)
    assert state.entries == [] and state.hard_state == HardState()
    wal.close()


def test_a_save_without_wait_is_fsynced_by_the_next_one_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wait=False`` (a Ready that only moved the commit index) costs no fsync of its own: the
    record is lost in a crash before the next fsync, and made durable, in order, by it."""
    journal, wals = open_wals(tmp_path, ["p0", "p1"])
    fsyncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(journal_module.os, "fdatasync", lambda fd: fsyncs.append(fd) or real(fd))
    sizes = {g: wals[g].position()[1] for g in wals}
    journal.save("p0", wals["p0"], HardState(1, "n1", 0), entries(1, 2))
    assert len(fsyncs) == 1
    journal.save("p0", wals["p0"], HardState(1, "n1", 2), [], wait=False)
    assert len(fsyncs) == 1  # returned without an fsync
    # A crash now: the commit index 2 was never fsynced anywhere, so it is gone.
    for g in wals:
        lose_unsynced(tmp_path, g, sizes[g] + 5)
    wal, state = NodeJournal.open(tmp_path / "journal").recover("p0", tmp_path / "p0" / "wal", 4096)
    assert state.hard_state == HardState(1, "n1", 0)
    assert [e.index for e in state.entries] == [1, 2]
    wal.close()
    # Another group's fsync covers it (the queue is the node's, in order).
    journal.save("p1", wals["p1"], HardState(1, "n1", 0), entries(1, 1))
    assert len(fsyncs) == 2
    for g in wals:
        lose_unsynced(tmp_path, g, sizes[g] + 5)
    wal, state = NodeJournal.open(tmp_path / "journal").recover("p0", tmp_path / "p0" / "wal", 4096)
    assert state.hard_state == HardState(1, "n1", 2)
    wal.close()


class PowerLoss:
    """Every file under ``root`` back to its size at its last fsync (or fdatasync), as the
    power-loss layer (chaos/backends/lazyfs.py) leaves it; deleted files stay deleted."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.synced: dict[str, int] = {}
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def synced(fd: int) -> None:
            real(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isfile(path):
                self.synced[path] = os.fstat(fd).st_size

        return synced

    def lose(self) -> None:
        for path in self.root.rglob("*"):
            keep = self.synced.get(str(path), 0)  # (a file never synced survives, empty)
            if path.is_file() and path.stat().st_size > keep:
                with path.open("r+b") as f:
                    f.truncate(keep)
                    f.seek(keep)
                    f.write(b"\xff" * 7)  # and torn garbage where unsynced writes were


def test_a_release_checkpoints_only_when_that_frees_a_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction releases the WAL every few thousand entries, but segments go whole: the
    checkpoint (an fsync of every WAL and a new journal generation) is taken only when it lets
    a segment go. A power loss after any release keeps every acknowledged record."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    wal, _ = journal.recover("p0", tmp_path / "p0" / "wal", 1024)
    journal.register("p0", wal)
    checkpoints = []
    real = journal._checkpoint_locked
    monkeypatch.setattr(journal, "_checkpoint_locked", lambda: checkpoints.append(1) or real())
    released = 0
    for i in range(1, 201):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
        if i % 10 == 0:  # "compaction" every 10 entries: store durable, mark, release
            journal.mark_snapshot("p0", wal, SnapshotMeta(i - 5, 1, MEMBERS))
            released += journal.release_before("p0", wal, i - 4)
    assert released >= 3
    assert len(checkpoints) <= released + 1 < 20  # not one per release
    power.lose()
    wal2, state = NodeJournal.open(tmp_path / "journal").recover(
        "p0", tmp_path / "p0" / "wal", 1024
    )
    assert state.snapshot == SnapshotMeta(195, 1, MEMBERS)
    assert [e.index for e in state.entries] == list(range(196, 201))
    assert state.hard_state == HardState(1, "n1", 199)
    wal2.close()


def test_segments_above_the_checkpoints_mark_wait_for_a_new_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments closed before the last checkpoint but holding entries above the snapshot mark
    the WAL had then: recovery opens the WAL as it stood at that checkpoint, so deleting them
    without a new checkpoint would leave a gap after that mark (refused as corruption)."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    wal, _ = journal.recover("p0", tmp_path / "p0" / "wal", 512)
    journal.register("p0", wal)
    for i in range(1, 41):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
    assert len(wal.segment_paths()) >= 3
    journal.checkpoint()  # e.g. another group registered: the mark then was none
    journal.mark_snapshot("p0", wal, SnapshotMeta(38, 1, MEMBERS))
    assert journal.release_before("p0", wal, 39) > 0
    power.lose()
    wal2, state = NodeJournal.open(tmp_path / "journal").recover("p0", tmp_path / "p0" / "wal", 512)
    assert state.snapshot == SnapshotMeta(38, 1, MEMBERS)
    assert [e.index for e in state.entries] == [39, 40]
    wal2.close()


@pytest.mark.parametrize("seed", range(40))
def test_power_loss_after_random_saves_marks_releases_and_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Recovery after a power loss returns exactly what was acknowledged, whatever the order of
    saves, snapshot marks, releases and checkpoints (register, max_bytes) before it."""
    rng = random.Random(seed)
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal", max_bytes=rng.choice([1500, 4000, 10**6]))
    wals = {}
    for g in ("p0", "p1"):
        wals[g], _ = journal.recover(g, tmp_path / g / "wal", 400)
        journal.register(g, wals[g])
    last = {g: 0 for g in wals}
    mark: dict[str, SnapshotMeta | None] = {g: None for g in wals}
    for _ in range(rng.randrange(20, 160)):
        g = rng.choice(["p0", "p1"])
        op = rng.random()
        if op < 0.7:
            n = rng.randint(1, 4)
            journal.save(g, wals[g], HardState(1, "n1", last[g]), entries(last[g] + 1, last[g] + n))
            last[g] += n
        elif op < 0.9 and last[g] > (mark[g].index if mark[g] else 0):
            m = rng.randint(mark[g].index if mark[g] else 1, last[g])
            mark[g] = SnapshotMeta(m, 1, MEMBERS)
            journal.mark_snapshot(g, wals[g], mark[g])
            journal.release_before(g, wals[g], m + 1)
        elif op < 0.95:
            journal.checkpoint()
    power.lose()
    again = NodeJournal.open(tmp_path / "journal")
    for g in wals:
        wal, state = again.recover(g, tmp_path / g / "wal", 400)
        low = mark[g].index if mark[g] else 0
        assert state.snapshot == mark[g]
        assert [e.index for e in state.entries] == list(range(low + 1, last[g] + 1))
        wal.close()


def test_a_wal_registered_again_without_a_checkpoint_is_released_only_after_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The floor the last checkpoint recorded belongs to the WAL registered then: a new WAL
    registered for the group without a checkpoint (a node's start registers all at once)
    gets one before any of its segments go."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    old, _ = journal.recover("p0", tmp_path / "old" / "wal", 512)
    journal.register("p0", old)
    for i in range(1, 41):
        journal.save("p0", old, HardState(1, "n1", i - 1), entries(i, i))
    journal.mark_snapshot("p0", old, SnapshotMeta(40, 1, MEMBERS))
    journal.checkpoint()  # old's floor: its last segment, mark 40
    new, _ = journal.recover("p0", tmp_path / "p0" / "wal", 512)
    journal.register("p0", new, checkpoint=False)
    for i in range(1, 41):
        journal.save("p0", new, HardState(1, "n1", i - 1), entries(i, i))
    journal.mark_snapshot("p0", new, SnapshotMeta(38, 1, MEMBERS))
    assert journal.release_before("p0", new, 39) > 0
    power.lose()
    wal, state = NodeJournal.open(tmp_path / "journal").recover("p0", tmp_path / "p0" / "wal", 512)
    assert state.snapshot == SnapshotMeta(38, 1, MEMBERS)
    assert [e.index for e in state.entries] == [39, 40]
    wal.close()
    old.close()


@pytest.mark.parametrize(("checkpoint_at", "compact_at"), [(20, 35), (30, 25)])
def test_nothing_is_released_while_the_node_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_at: int, compact_at: int
) -> None:
    """Until node.start's first checkpoint the generation on disk is the last run's, yet
    replicas already apply and may compact: a segment released then may be one recovery needs
    after a power loss (found by the session 9 safety review: the node refused to start)."""
    power = PowerLoss(tmp_path, monkeypatch)
    wal_dir = tmp_path / "p0" / "wal"
    # Run 1: entries over several segments, a mark at 10, a checkpoint, more (journaled).
    journal = NodeJournal.open(tmp_path / "journal")
    wal, _ = journal.recover("p0", wal_dir, 512)
    journal.register("p0", wal)
    for i in range(1, checkpoint_at + 1):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
    journal.mark_snapshot("p0", wal, SnapshotMeta(10, 1, MEMBERS))
    journal.checkpoint()
    for i in range(checkpoint_at + 1, 41):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
    power.lose()
    # Run 2, as node.start does it: recovered, registered without a checkpoint; before start's
    # checkpoint the replica compacts (its store made durable) and releases.
    journal = NodeJournal.open(tmp_path / "journal")
    wal, state = journal.recover("p0", wal_dir, 512)
    assert [e.index for e in state.entries][-1] == 40
    journal.register("p0", wal, checkpoint=False)
    journal.mark_snapshot("p0", wal, SnapshotMeta(compact_at, 1, MEMBERS))
    assert journal.release_before("p0", wal, compact_at + 1) == 0
    power.lose()  # before start's checkpoint
    # Run 3 starts, its log whole from its snapshot mark on.
    journal = NodeJournal.open(tmp_path / "journal")
    wal, state = journal.recover("p0", wal_dir, 512)
    assert state.snapshot is not None
    assert [e.index for e in state.entries] == list(range(state.snapshot.index + 1, 41))
    wal.close()
    # Once this run has checkpointed, releasing works again.
    journal.register("p0", wal := journal.recover("p0", wal_dir, 512)[0])
    journal.mark_snapshot("p0", wal, SnapshotMeta(35, 1, MEMBERS))
    assert journal.release_before("p0", wal, 36) > 0
    journal.close()


def test_a_journal_closed_after_a_failure_keeps_its_wals_from_releasing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal whose fsync failed closes without a last generation: the newest one on disk
    still lists each WAL at its checkpoint position. node.stop closes the journal before the
    replicas, so a compaction ending in between must not release what the next start's
    recovery needs (it refused to start: "journaled segment is missing"; session 9 review).
    Its snapshot mark is refused as every write is after a failure (a compaction's release
    then never runs: replica.release_wal marks first); the release releases nothing anyway."""
    wal_dir = tmp_path / "p0" / "wal"
    journal = NodeJournal.open(tmp_path / "journal")
    wal, _ = journal.recover("p0", wal_dir, 512)
    journal.register("p0", wal)
    for i in range(1, 31):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
    assert len(wal.segment_paths()) >= 3

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:  # the journal's fsync fails once: unusable from now on
        m.setattr(os, "fdatasync", eio)
        with pytest.raises(OSError):
            journal.save("p0", wal, HardState(1, "n1", 30), entries(31, 31))
    journal.close()
    with pytest.raises(OSError):
        journal.mark_snapshot("p0", wal, SnapshotMeta(25, 1, MEMBERS))
    wal.mark_snapshot(SnapshotMeta(25, 1, MEMBERS))  # (straight into the WAL: release_before)
    assert journal.release_before("p0", wal, 26) == 0
    wal.close()
    journal = NodeJournal.open(tmp_path / "journal")  # the next start
    wal, state = journal.recover("p0", wal_dir, 512)
    low = state.snapshot.index if state.snapshot else 0
    assert [e.index for e in state.entries][: 30 - low] == list(range(low + 1, 31))
    wal.close()


def test_a_group_registered_without_a_checkpoint_once_running_fsyncs_itself_until_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``register(checkpoint=False)`` while a generation is open (a batch of groups joining a
    running node): the open checkpoint does not list the group, so its saves fsync its own WAL
    until the next checkpoint lists it, and only then go to the journal. A power loss at any
    point keeps every acknowledged save and the node starts (its saves used to be journaled
    under an unlisted group: 'records of p1, which is not checkpointed', session 9 review)."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    p0, _ = journal.recover("p0", tmp_path / "p0" / "wal", 4096)
    journal.register("p0", p0)  # a generation is open from here (without p1)
    generations = sorted((tmp_path / "journal").glob("*.jnl"))
    p1, _ = journal.recover("p1", tmp_path / "p1" / "wal", 4096)
    journal.register("p1", p1, checkpoint=False)
    assert sorted((tmp_path / "journal").glob("*.jnl")) == generations  # batched: none taken
    for i in range(1, 6):
        journal.save("p1", p1, HardState(1, "n1", i - 1), entries(i, i))  # acknowledged
        journal.save("p0", p0, HardState(1, "n1", i - 1), entries(i, i))
    journal.save("p1", p1, None, entries(6, 6), wait=False)
    journal.sync([("p1", p1)])
    power.lose()
    again = NodeJournal.open(tmp_path / "journal")
    for g, last in (("p0", 5), ("p1", 6)):
        wal, state = again.recover(g, tmp_path / g / "wal", 4096)
        assert [e.index for e in state.entries] == list(range(1, last + 1))
        wal.close()
    # The next checkpoint lists p1: from then on its saves are the journal's (WAL unsynced).
    journal.checkpoint()
    synced = dict(power.synced)
    for i in range(7, 10):
        journal.save("p1", p1, HardState(1, "n1", i - 1), entries(i, i))
    assert power.synced[str(p1.segment_paths()[-1])] == synced[str(p1.segment_paths()[-1])]
    power.lose()
    wal, state = NodeJournal.open(tmp_path / "journal").recover("p1", tmp_path / "p1" / "wal", 4096)
    assert [e.index for e in state.entries] == list(range(1, 10))
    wal.close()
    p0.close()
    p1.close()


def test_a_listed_group_registered_again_without_a_checkpoint_takes_one_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open generation lists the group at its old WAL's position: recovery would cut the
    group's directory back there, so the new WAL's writes are kept only by a checkpoint that
    lists it, taken at once whatever ``checkpoint`` says."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    old, _ = journal.recover("p0", tmp_path / "p0" / "wal", 512)
    journal.register("p0", old)
    for i in range(1, 31):
        journal.save("p0", old, HardState(1, "n1", i - 1), entries(i, i))
    old.close()  # fsynced; opened again as the same directory (a replica reopened)
    new, _ = journal.recover("p0", tmp_path / "p0" / "wal", 512)
    journal.register("p0", new, checkpoint=False)
    for i in range(31, 41):
        journal.save("p0", new, HardState(1, "n1", i - 1), entries(i, i))
    power.lose()
    wal, state = NodeJournal.open(tmp_path / "journal").recover("p0", tmp_path / "p0" / "wal", 512)
    assert [e.index for e in state.entries] == list(range(1, 41))
    wal.close()


@pytest.mark.parametrize("seed", range(40))
def test_power_loss_with_groups_registered_at_any_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Groups join a running journal at any time, with or without a checkpoint (and registered
    again, the same WAL), between saves, saves without wait, marks, releases and checkpoints:
    recovery after a power loss returns exactly what was acknowledged."""
    rng = random.Random(seed)
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal", max_bytes=rng.choice([1500, 4000, 10**6]))
    wals: dict[str, WriteAheadLog] = {}
    last: dict[str, int] = {}
    acked: dict[str, int] = {}
    mark: dict[str, SnapshotMeta | None] = {}
    for _ in range(rng.randrange(10, 80)):
        op = rng.random()
        if op < 0.15 or not wals:
            g = f"p{rng.randrange(6)}"
            if g not in wals:
                wals[g], _ = journal.recover(g, tmp_path / g / "wal", 400)
                last[g] = acked[g] = 0
                mark[g] = None
            journal.register(g, wals[g], checkpoint=rng.random() < 0.2)
            continue
        g = rng.choice(sorted(wals))
        if op < 0.7:
            n = rng.randint(1, 4)
            wait = rng.random() < 0.8
            save = HardState(1, "n1", last[g]), entries(last[g] + 1, last[g] + n)
            journal.save(g, wals[g], *save, wait=wait)
            last[g] += n
            if wait:
                acked[g] = last[g]
            elif rng.random() < 0.5:
                journal.sync([(g, wals[g])])
                acked[g] = last[g]
        elif op < 0.9 and acked[g] > (mark[g].index if mark[g] else 0):
            m = rng.randint(mark[g].index if mark[g] else 1, acked[g])
            journal.sync([(g, wals[g])])  # the replica's Ready before its compaction
            acked[g] = last[g]
            mark[g] = SnapshotMeta(m, 1, MEMBERS)
            journal.mark_snapshot(g, wals[g], mark[g])
            journal.release_before(g, wals[g], m + 1)
        elif op < 0.92:
            journal.checkpoint()
    power.lose()
    again = NodeJournal.open(tmp_path / "journal")
    for g in wals:
        wal, state = again.recover(g, tmp_path / g / "wal", 400)
        low = mark[g].index if mark[g] else 0
        assert state.snapshot == mark[g]
        got = [e.index for e in state.entries]
        assert got[: acked[g] - low] == list(range(low + 1, acked[g] + 1))
        assert got == list(range(low + 1, low + 1 + len(got))) and len(got) <= last[g] - low
        wal.close()


@pytest.mark.parametrize("stays", [True, False], ids=["file-stays", "file-removed"])
@pytest.mark.parametrize("where", ["generation", "directory"])
def test_saves_acknowledged_after_a_failed_checkpoint_survive_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, stays: bool
) -> None:
    """A checkpoint whose new generation's fsync (or the directory's) fails may leave that
    generation on disk, and the next start would pick it: cut every WAL back to its positions
    and replay nothing. So nothing may be acknowledged after it (the journal refuses writes
    as after a failed flush). It used to stay usable on the old generation: every save
    acknowledged after it was lost at the next start (session 10 safety review)."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    wal, _ = journal.recover("p0", tmp_path / "p0" / "wal", 4096)
    journal.register("p0", wal)
    for i in range(1, 6):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
    # A group registered since the open generation (it fsyncs its own WAL until the next
    # checkpoint, which would list it): refused too after the failure.
    wal2, _ = journal.recover("p1", tmp_path / "p1" / "wal", 4096)
    journal.register("p1", wal2, checkpoint=False)
    journal.save("p1", wal2, HardState(1, "n1", 0), entries(1, 1))

    real_fsync, real_dir = os.fsync, journal_module._fsync_dir
    armed = {"on": True}

    def failing_fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if armed["on"] and where == "generation" and path.endswith(".jnl"):
            armed["on"] = False
            raise OSError(5, "EIO (injected)")
        real_fsync(fd)

    def failing_dir(directory: Path) -> None:
        if armed["on"] and where == "directory" and directory == tmp_path / "journal":
            armed["on"] = False
            real_dir(directory)  # (the entry may or may not be durable: EIO says nothing)
            raise OSError(5, "EIO (injected)")
        real_dir(directory)

    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if stays and path.suffix == ".jnl":  # the failed generation's removal fails too (or
            raise OSError(5, "EIO (injected)")  # never reaches the disk): the worst case
        real_unlink(path, missing_ok)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    monkeypatch.setattr(journal_module, "_fsync_dir", failing_dir)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError):
        journal.checkpoint()  # e.g. taken by a release_before of a compaction
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert len(list((tmp_path / "journal").glob("*.jnl"))) == (2 if stays else 1)
    acked = 5
    for i in range(6, 11):
        try:
            journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
        except OSError:
            break  # refused: not acknowledged (what a failed fsync should lead to)
        acked = i
    acked1 = 1
    with contextlib.suppress(OSError):
        journal.save("p1", wal2, HardState(1, "n1", 1), entries(2, 2))
        acked1 = 2
    with contextlib.suppress(OSError):  # (on the old code: O_EXCL on the failed generation)
        journal.close()  # the node stops (a failed journal writes no last generation)
    wal.close()
    wal2.close()
    if where == "directory":
        power.lose()  # every file back to its last fsync (the generation was fsynced)
    # (where == "generation": a process crash; the page cache keeps every file as it is)
    again = NodeJournal.open(tmp_path / "journal")
    wal, state = again.recover("p0", tmp_path / "p0" / "wal", 4096)
    got = [e.index for e in state.entries]
    wal.close()
    assert got[:acked] == list(range(1, acked + 1)), f"acknowledged 1..{acked}, recovered {got}"
    wal2, state2 = again.recover("p1", tmp_path / "p1" / "wal", 4096)
    wal2.close()
    assert [e.index for e in state2.entries][:acked1] == list(range(1, acked1 + 1))
    assert (acked, acked1) == (5, 1)  # (the journal refused both once the checkpoint failed)


@pytest.mark.parametrize("restart", ["crash", "power-loss"])
@pytest.mark.parametrize("failure", ["flush", "checkpoint"])
def test_no_write_is_acknowledged_after_a_failed_journal_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str, restart: str
) -> None:
    """A journal that failed (its fsync, or a checkpoint that may leave its generation behind)
    closes without a last generation: the newest one on disk still lists the WALs it knew,
    and the next start cuts each back to its checkpoint position. node.stop closes the
    journal before the replicas, with client connections still open, so a replica may still
    write: such a write must be refused, not fsynced by its WAL and acknowledged (that write
    was cut away at the next start, no power loss needed; session 10 safety review)."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    wals = {"p0": journal.recover("p0", tmp_path / "p0" / "wal", 4096)[0]}
    journal.register("p0", wals["p0"])  # listed by the open generation: journaled
    wals["p1"] = journal.recover("p1", tmp_path / "p1" / "wal", 4096)[0]
    journal.register("p1", wals["p1"], checkpoint=False)  # fsyncs itself until one lists it
    for i in range(1, 4):
        for g, wal in wals.items():
            journal.save(g, wal, HardState(1, "n1", i - 1), entries(i, i))
    last, acked = {"p0": 3, "p1": 3}, {"p0": 3, "p1": 3}
    real_fsync = os.fsync

    def eio(fd: int) -> None:
        raise OSError(5, "EIO (injected)")

    def jnl_eio(fd: int) -> None:  # the new generation's fsync fails, the WALs' do not
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".jnl"):
            raise OSError(5, "EIO (injected)")
        real_fsync(fd)

    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.suffix == ".jnl":  # the failed generation stays (the worst case)
            raise OSError(5, "EIO (injected)")
        real_unlink(path, missing_ok)

    with monkeypatch.context() as m:
        if failure == "flush":
            m.setattr(os, "fdatasync", eio)
            with pytest.raises(OSError):
                journal.save("p0", wals["p0"], HardState(1, "n1", 3), entries(4, 4))
            last["p0"] = 4  # (written, not acknowledged)
        else:
            m.setattr(os, "fsync", jnl_eio)
            m.setattr(Path, "unlink", unlink)
            with pytest.raises(OSError):
                journal.checkpoint()  # e.g. a compaction's release_before
    journal.close()  # node.stop: the journal first (no last generation), the replicas after
    for g, wal in wals.items():  # a replica's trip after the close: a save, or one synced
        try:
            n = last[g] + 1
            journal.save(g, wal, HardState(1, "n1", n - 1), entries(n, n))
            last[g] = acked[g] = n
            journal.save(g, wal, None, entries(n + 1, n + 1), wait=False)
            last[g] = n + 1
            journal.sync([(g, wal)])
            acked[g] = n + 1
        except OSError:
            pass  # refused: not acknowledged
        wal.close()
    if restart == "power-loss":
        power.lose()  # every file back to its last fsync
    again = NodeJournal.open(tmp_path / "journal")
    for g in wals:
        wal, state = again.recover(g, tmp_path / g / "wal", 4096)
        got = [e.index for e in state.entries]
        wal.close()
        assert got[: acked[g]] == list(range(1, acked[g] + 1)), f"{g}: acked {acked[g]}, {got}"
    assert acked == {"p0": 3, "p1": 3}  # (both refused once the journal failed)


def test_a_wal_written_unsynced_after_a_clean_close_is_listed_only_once_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a clean close the WALs stand alone, and a replica not closed yet may still append
    a commit-only hard state without fsync (``wait=False``; its close would fsync it). If the
    process dies first, the next start reads that record from the page cache, and its first
    checkpoint lists the WAL at that size: it must be durable by then, or a power loss leaves
    the WAL shorter than its listed size and the node refuses to start ("shorter than its
    journaled ... bytes", before the WAL's open made what it read durable)."""
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    wal, _ = journal.recover("p0", tmp_path / "p0" / "wal", 4096)
    journal.register("p0", wal)
    journal.save("p0", wal, HardState(1, "n1", 0), entries(1, 3))
    journal.close()  # node.stop: the journal first
    journal.save("p0", wal, HardState(1, "n1", 3), [], wait=False)  # commit-only: not waited
    with monkeypatch.context() as m:  # the process dies: its files close without an fsync
        m.setattr(os, "fsync", lambda fd: None)
        wal.close()
    journal = NodeJournal.open(tmp_path / "journal")  # the next start, as node.start does it
    wal, state = journal.recover("p0", tmp_path / "p0" / "wal", 4096)
    assert state.hard_state == HardState(1, "n1", 3)
    journal.register("p0", wal, checkpoint=False)
    journal.checkpoint()
    power.lose()
    again = NodeJournal.open(tmp_path / "journal")  # it starts
    wal2, state = again.recover("p0", tmp_path / "p0" / "wal", 4096)
    wal2.close()
    assert [e.index for e in state.entries] == [1, 2, 3]
    wal.close()
