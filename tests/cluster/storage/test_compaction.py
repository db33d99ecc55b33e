"""Compaction dumps the store through a pinned view in another thread: the replica goes on
writing meanwhile, and the snapshot is exactly the store at its index."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.consensus.messages import Membership
from cluster.consensus.raft import Role
from cluster.storage import itemstore
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.compaction import (
    MAX_STRETCH,
    ROWS_PER_ENTRY,
    Compaction,
    compaction_due,
    compaction_interval,
)
from cluster.storage.itemstore import AppliedMark, ItemStore, encode_key_value
from cluster.storage.replica import Replica, ReplicaSettings


def put(i: int) -> bytes:
    key = f"k{i}"
    return encode_command(PutCommand("t", encode_key_value({"S": key}), b"", {"id": {"S": key}}))


async def until(done: Callable[[], bool], step: Callable[[], None] = lambda: None) -> None:
    """Wait for ``done`` (a busy machine is slow: generous bound, no timing assert)."""
    for _ in range(3000):
        if done():
            return
        step()
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


def test_writes_go_on_while_the_dump_runs_and_the_snapshot_is_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    dump = itemstore.DumpView.dump

    def held_dump(view: itemstore.DumpView, pause: float = 0.0) -> bytes:
        assert gate.wait(120), "the test never opened the gate"
        return dump(view, pause)

    monkeypatch.setattr(itemstore.DumpView, "dump", held_dump)

    async def scenario() -> None:
        settings = ReplicaSettings(compact_every=20)
        replica = await Replica.open(
            "n1", "g", frozenset({"n1"}), tmp_path / "g", settings, lambda _: None
        )
        try:
            await until(lambda: replica.raft.role is Role.LEADER, replica.tick)  # ticks elect it
            for i in range(25):  # past compact_every: a dump starts, held at the gate
                assert (await replica.propose(put(i), timeout=5.0)).ok
            for i in range(25, 35):  # the replica does not wait for the dump
                assert (await replica.propose(put(i), timeout=5.0)).ok
            assert replica.raft.snapshot().meta.index == 0  # not compacted before it is done
            gate.set()
            await until(lambda: replica.raft.snapshot().meta.index > 0)
            snapshot = replica.raft.snapshot()
            assert 20 <= snapshot.meta.index < replica.raft.applied_index
            copy = ItemStore(tmp_path / "copy.sqlite")
            copy.restore(snapshot.data)
            assert copy.applied().index == snapshot.meta.index
            assert copy.applied().term == snapshot.meta.term
            present = [i for i in range(35) if copy.get("t", encode_key_value({"S": f"k{i}"}), b"")]
            # Exactly the puts up to the snapshot's index (the first entry is the leader's no-op).
            assert present == list(range(snapshot.meta.index - 1))
            live = await replica.read_local(lambda store: store.applied())
            assert live == AppliedMark(
                replica.raft.applied_index, snapshot.meta.term, live.membership
            )
            copy.close()
        finally:
            gate.set()
            await replica.close()

    asyncio.run(scenario())


def test_replicas_of_a_group_compact_at_their_own_phase() -> None:
    """Every ``every`` entries, but not all replicas at once (their dumps together stalled a
    busy node's writes), and never sooner than 3/4 ``every`` after the snapshot."""
    members = Membership(frozenset({"n1", "n2", "n3"}))
    every = 2000
    points: dict[str, list[int]] = {}
    for me in ("n1", "n2", "n3"):
        snap, seen = 0, []
        for _ in range(6):
            snap = compaction_due(snap, every, me, members)
            seen.append(snap)
        points[me] = seen
        assert all(b - a >= every * 3 // 4 for a, b in pairwise([0, *seen]))
        assert [b - a for a, b in pairwise(seen[2:])] == [every] * 3
    steady = sorted(points[me][-1] % every for me in points)
    assert steady == [0, 667, 1334]  # a third of the interval apart
    # A node that is not a voter (yet) compacts at phase 0.
    assert compaction_due(0, every, "n9", members) == every


def test_the_interval_grows_with_the_store_a_full_replica_dumps_up_to_a_cap() -> None:
    """A dump reads the whole store: a big one is dumped at most once per ROWS_PER_ENTRY rows
    of it per entry applied, never less often than MAX_STRETCH intervals."""
    every = 2000
    assert compaction_interval(every, 0) == every  # nothing dumped yet (a start)
    assert compaction_interval(every, every * ROWS_PER_ENTRY) == every  # small: as configured
    assert compaction_interval(every, 6_000 * ROWS_PER_ENTRY) == 6_000
    assert compaction_interval(every, 10**9) == every * MAX_STRETCH


def test_a_full_replica_with_a_big_store_compacts_less_often(tmp_path: Path) -> None:
    """The gaps between a replica's snapshots follow the rows its last dump held: as
    configured while the store is small, stretched (up to the cap) once it is big."""
    every = 10
    rows_for_cap = every * MAX_STRETCH * ROWS_PER_ENTRY

    async def scenario() -> list[tuple[int, int]]:
        settings = ReplicaSettings(compact_every=every)
        replica = await Replica.open(
            "n1", "g", frozenset({"n1"}), tmp_path / "g", settings, lambda _: None
        )
        snapshots: list[tuple[int, int]] = []  # (snapshot index, rows of the dump behind it)
        try:
            await until(lambda: replica.raft.role is Role.LEADER, replica.tick)
            i = 0
            while len(snapshots) < 4 or snapshots[-4][1] < rows_for_cap:
                assert (await replica.propose(put(i), timeout=5.0)).ok
                i += 1
                assert i < 5000, "the store never grew past the cap"
                index = replica.raft.snapshot().meta.index
                if index and (not snapshots or snapshots[-1][0] != index):
                    snapshots.append((index, replica.compaction.dumped_rows))
                if replica.compaction._dumping is not None:
                    await until(lambda: replica.compaction._dumping is None)
        finally:
            await replica.close()
        return snapshots

    snapshots = asyncio.run(scenario())
    gaps = [(b - a, rows) for (a, rows), (b, _) in pairwise(snapshots)]
    small = [gap for gap, rows in gaps if rows <= every * ROWS_PER_ENTRY]
    capped = [gap for gap, rows in gaps if rows >= rows_for_cap]
    assert small and all(every * 3 // 4 <= gap <= 2 * every for gap in small)
    # Stretched to the cap (the dump may end a few entries after it was due).
    assert capped and all(
        every * MAX_STRETCH * 3 // 4 <= gap <= 2 * every * MAX_STRETCH for gap in capped
    )


def test_the_due_index_follows_the_snapshot_the_interval_and_the_membership() -> None:
    """Compaction.due is computed again (it is kept between Readies) whenever the snapshot,
    the interval or the membership changed: each moves the index the replica compacts at."""
    two = Membership(frozenset({"n1", "n2"}))
    raft = SimpleNamespace(
        id="n2", membership=two, snapshot=lambda: SimpleNamespace(meta=SimpleNamespace(index=0))
    )
    compaction = Compaction(SimpleNamespace(raft=raft))
    assert compaction.due(20) == compaction_due(0, 20, "n2", two) == 15
    assert compaction.due(40) == compaction_due(0, 40, "n2", two)
    assert compaction.due(20) == 15
    raft.membership = one = Membership(frozenset({"n2"}))
    assert compaction.due(20) == compaction_due(0, 20, "n2", one) == 20
    raft.snapshot = lambda: SimpleNamespace(meta=SimpleNamespace(index=20))
    assert compaction.due(20) == compaction_due(20, 20, "n2", one) == 40
