"""Consistent (lease) reads when the replica's ticks lag real time: they wait for the tick loop
to catch up instead of being refused at once, and are still refused while the ticks lag."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cluster.storage.replica import NotLeader, Replica, ReplicaSettings

TICK = ReplicaSettings().tick_seconds


async def single_leader(tmp_path: Path) -> Replica:
    """A one-replica group, ticked by hand until it leads and holds its lease."""
    replica = await Replica.open(
        "n1", "g", frozenset({"n1"}), tmp_path / "g", ReplicaSettings(), lambda _: None
    )
    for _ in range(200):
        replica.tick()
        await asyncio.sleep(0.001)
        if replica.raft.lease_read_index() is not None:
            return replica
    raise AssertionError("the single replica never held a lease")


def read_applied(replica: Replica) -> asyncio.Task[object]:
    return asyncio.ensure_future(replica.read_consistent(lambda store: store.applied(), 1.0))


def test_a_read_that_finds_the_ticks_late_waits_for_the_next_tick(tmp_path: Path) -> None:
    async def scenario() -> None:
        replica = await single_leader(tmp_path)
        try:
            await asyncio.sleep(TICK * 2)  # no tick for two intervals: the lease is unjudgeable
            read = read_applied(replica)
            await asyncio.sleep(TICK / 2)
            assert not read.done()  # waiting, not refused
            replica.tick()  # the tick loop catches up
            await asyncio.wait_for(read, 1.0)
        finally:
            await replica.close()

    asyncio.run(scenario())


def test_a_read_is_refused_while_the_ticks_keep_lagging(tmp_path: Path) -> None:
    async def scenario() -> None:
        replica = await single_leader(tmp_path)
        try:
            await asyncio.sleep(TICK * 2)
            read = read_applied(replica)
            await asyncio.sleep(TICK / 2)
            # A tick processed now that stands for an instant long past (queued before a
            # stall) leaves the count behind real time: still no lease read.
            replica.tick(at=time.monotonic() - 10 * TICK)
            started = time.monotonic()
            with pytest.raises(NotLeader):
                await asyncio.wait_for(read, 1.0)
            assert time.monotonic() - started < 5 * TICK  # bounded wait, then refused
        finally:
            await replica.close()

    asyncio.run(scenario())
