"""A storage node steps EVERY Raft message of a peer's batch frame, each to its own group, in
the order sent (transport.py sends all that waited for a link in one frame). Raft's resending
would hide a receiver that stepped only part of a batch, so this is checked directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.consensus.messages import AnyMessage, RequestVote
from cluster.storage.node import NodeConfig, StorageNode
from cluster.storage.wire import encode_batch


class SteppedReplica:
    def __init__(self, group: str = "", incarnation: int = 0) -> None:
        self.group, self.incarnation = group, incarnation
        self.stepped: list[AnyMessage] = []

    def step(self, msg: AnyMessage) -> None:
        self.stepped.append(msg)

    def tick(self, instant: float, catch_up: bool = False) -> None:
        pass


def pre_vote(group: str, term: int) -> RequestVote:
    return RequestVote(group, "n2", "n1", term, 0, 0, pre=True)


def test_every_message_of_a_batch_frame_reaches_its_group_in_order(tmp_path: Path) -> None:
    node = StorageNode(
        NodeConfig(node_id="n1", listen="127.0.0.1:0", admin="127.0.0.1:0", data_dir=tmp_path)
    )
    g1, g2 = SteppedReplica(), SteppedReplica()
    node.replicas = {"g1": g1, "g2": g2}  # type: ignore[dict-item]
    first = [pre_vote("g1", 1), pre_vote("g2", 2), pre_vote("g1", 3), pre_vote("g9", 4)]
    second = [pre_vote("g2", 5), pre_vote("g1", 6)]

    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(encode_batch(first) + encode_batch(second)))
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):  # the peer hung up after two frames
            await node._serve_peer("n2", reader)

    try:
        asyncio.run(scenario())
    finally:
        node.ready_io.close()
    assert [m.term for m in g1.stepped] == [1, 3, 6]
    assert [m.term for m in g2.stepped] == [2, 5]  # g9 is not hosted here: ignored


def test_a_node_steps_only_the_messages_of_its_replicas_incarnation(tmp_path: Path) -> None:
    """A group id names another group once its table is deleted and created again: the
    incarnation tells them apart (``Message.incarnation``). Only a message of the replica's
    own incarnation is stepped; one of a newer incarnation says the replica is a deleted
    table's: the node retires it (``StorageNode._retire``). 0 (not known) matches only 0."""
    node = StorageNode(
        NodeConfig(node_id="n1", listen="127.0.0.1:0", admin="127.0.0.1:0", data_dir=tmp_path)
    )
    known, legacy = SteppedReplica("g1", 5), SteppedReplica("g2", 0)
    node.replicas = {"g1": known, "g2": legacy}  # type: ignore[dict-item]

    def vote(group: str, term: int, incarnation: int) -> RequestVote:
        return RequestVote(group, "n2", "n1", term, 0, 0, pre=True, incarnation=incarnation)

    frame = [vote("g1", 1, 5), vote("g1", 2, 4), vote("g1", 3, 0), vote("g2", 4, 0)]
    frame += [vote("g2", 5, 5), vote("g1", 6, 7), vote("g1", 7, 5)]
    retiring: list[str] = []

    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(encode_batch(frame)))
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await node._serve_peer("n2", reader)
        retiring.extend(node._retirements)
        node.replicas = {}  # (gone before the retirement runs: it has nothing to discard)
        await asyncio.gather(*node._retirements.values())

    try:
        asyncio.run(scenario())
    finally:
        node.ready_io.close()
    assert [m.term for m in known.stepped] == [1, 7]  # older, unknown and newer: dropped
    assert [m.term for m in legacy.stepped] == [4]  # a known incarnation is not ours either
    assert node.foreign_messages == 4
    assert sorted(retiring) == ["g1", "g2"]  # each saw a newer incarnation: 7, 5
    assert node._superseded == {"g1": 7, "g2": 5}
