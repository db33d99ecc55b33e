"""Compaction dumps the store through a pinned view in another thread: the replica goes on
writing meanwhile, and the snapshot is exactly the store at its index."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from cluster.consensus.messages import Membership
from cluster.consensus.raft import Role
from cluster.storage import itemstore
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.compaction import compaction_due
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
