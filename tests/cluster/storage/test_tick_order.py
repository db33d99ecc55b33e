"""Ticks reach a replica in real-time order with the peer messages (``TickSchedule``).

A follower's stickiness (no vote until election_ticks after it last heard the leader) is the
other half of the leader's lease. After a stall, the messages that waited are read before the
tick loop wakes; their catch-up ticks, processed after a heartbeat, would count the stall as
time since that heartbeat and end the stickiness at once, while the leader holds a lease from
that heartbeat for lease_ticks more: a second leader could commit writes the first still hides
from its lease reads.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from cluster.consensus.messages import AppendEntries, Membership, RequestVote, VoteResponse
from cluster.consensus.raft import Raft, RaftConfig
from cluster.storage.node import NodeConfig, StorageNode
from cluster.storage.tickclock import TickSchedule
from cluster.storage.wire import encode_frame, encode_message

TICK = 0.05
CONFIG = RaftConfig()


def heartbeat(seq: int) -> AppendEntries:
    return AppendEntries("g", "n1", "n2", 1, 0, 0, (), 0, seq)


def follower() -> Raft:
    raft = Raft(
        "n2", "g", CONFIG, random.Random(1), membership=Membership(frozenset({"n1", "n2", "n3"}))
    )
    raft.step(heartbeat(1))
    raft.messages.clear()
    return raft


def grants_pre_vote(raft: Raft) -> bool:
    raft.step(RequestVote("g", "n3", "n2", raft.term + 1, 0, 0, pre=True))
    return any(isinstance(m, VoteResponse) and m.granted for m in raft.ready().messages)


def test_why_the_order_matters_a_heartbeat_then_a_stalls_ticks_ends_stickiness() -> None:
    stall = CONFIG.election_ticks + 2
    late = follower()
    late.step(heartbeat(2))  # the leader's lease now runs lease_ticks from this heartbeat
    for _ in range(stall):  # ... but these ticks stand for instants before it arrived
        late.tick()
    assert grants_pre_vote(late)  # a rival may win at once: two leaders, one with a lease

    in_order = follower()
    for _ in range(stall):
        in_order.tick()
    in_order.step(heartbeat(2))
    assert not grants_pre_vote(in_order)  # sticky: the heartbeat is recent


def test_the_schedule_hands_out_each_due_instant_once_in_order() -> None:
    schedule = TickSchedule(TICK, start=100.0)
    assert list(schedule.due(100.0 + 2.5 * TICK)) == pytest.approx([100.0, 100.05, 100.1])
    assert list(schedule.due(100.0 + 2.9 * TICK)) == []
    assert list(schedule.due(100.0 + 3 * TICK)) == pytest.approx([100.15])


def test_a_stalled_loop_is_logged_once_per_ten_seconds_and_every_stall_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schedule = TickSchedule(TICK, start=100.0)
    list(schedule.due(100.3))  # 0.3 s late: a busy moment, not a stall
    assert (schedule.stalls, caplog.records) == (0, [])
    list(schedule.due(101.2))
    list(schedule.due(102.0))  # late again within 10 s: counted, not logged
    list(schedule.due(113.0))
    assert schedule.stalls == 3
    assert [r.getMessage()[:37] for r in caplog.records] == [
        "event loop stalled: ticks 0.85 s late",
        "event loop stalled: ticks 10.95 s lat",
    ]


class Recorder:
    """Stands in for a replica: records the ticks and steps the node hands it, in order."""

    incarnation = 0  # the messages' (Message.incarnation): the node steps them

    def __init__(self) -> None:
        self.events: list[str] = []

    def tick(self, at: float | None = None, catch_up: bool = False) -> None:
        self.events.append("catch-up tick" if catch_up else "tick")

    def step(self, msg: object) -> None:
        self.events.append("step")


def test_the_ticks_of_a_stall_reach_a_replica_before_the_messages_that_waited(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        node = StorageNode(NodeConfig("n2", "127.0.0.1:0", "127.0.0.1:0", tmp_path))
        replica = Recorder()
        node.replicas["g"] = replica  # type: ignore[assignment]
        # The loop stalled for 12 intervals: their ticks are due, the tick loop has not woken.
        node.ticks = TickSchedule(TICK, time.monotonic() - 12 * TICK)
        reader = asyncio.StreamReader()
        for seq in (2, 3):
            reader.feed_data(encode_frame({"raft": encode_message(heartbeat(seq))}))
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await node._serve_peer("n1", reader)
        first_step = replica.events.index("step")
        # ... as catch-up ticks (Raft.tick: they elect and depose nobody before the steps)
        assert replica.events[:first_step].count("catch-up tick") >= 12
        assert "tick" not in replica.events[:first_step]
        assert replica.events[first_step:] in (["step", "step"], ["step", "tick", "step"])

    asyncio.run(scenario())
