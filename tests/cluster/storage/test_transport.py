"""Peer links on loopback: a link notices at once that its peer closed it, and reconnects; the
messages waiting for a peer leave in one frame.

The scripted peer speaks the real wire protocol (a challenge, the dialer's ``peer`` hello, then
Raft frames one way) and can drop every connection it holds, as a killed node does.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
import pytest

from cluster.consensus.messages import (
    AnyMessage,
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    Membership,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    VoteResponse,
)
from cluster.storage import wire
from cluster.storage.transport import PeerLinks
from cluster.storage.wire import decode_frame_messages, encode_frame, read_frame


class ScriptedPeer:
    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.connections: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def drop_connections(self) -> None:
        """Close every connection, as the peer's process dying would; keep listening."""
        for writer in self.connections:
            writer.close()
        self.connections.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        writer.write(encode_frame({"challenge": "c"}))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_frame(reader)  # the hello (no cluster key installed in tests)
            while True:
                self.frames.append(await read_frame(reader))


def vote(n: int) -> RequestVote:
    return RequestVote("g", "n1", "n2", n, 0, 0, pre=True)


async def wait_for(condition: object, seconds: float = 30.0) -> None:
    """Until ``condition()``; the bound only keeps a broken link from hanging the test."""
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


def test_a_link_closed_by_its_peer_reconnects_before_the_next_message() -> None:
    """A follower's link to another follower carries nothing for a long time; when that peer
    restarts, the next message (a pre-vote after the leader died) must not be written into the
    dead connection and lost."""

    async def scenario() -> None:
        peer = ScriptedPeer()
        await peer.start()
        links = PeerLinks("n1", {"n2": peer.address})
        links.start()
        try:
            links.send(vote(1))
            await wait_for(lambda: len(peer.frames) == 1)
            peer.drop_connections()  # the peer "restarts"; nothing is sent meanwhile
            await wait_for(lambda: links.stats()["n2"]["connects"] == 2)  # nothing sent: on its own
            links.send(vote(2))
            await wait_for(lambda: len(peer.frames) == 2)
            assert links.stats()["n2"]["dropped"] == 0
        finally:
            await links.stop()
            assert peer.server is not None
            peer.server.close()

    asyncio.run(scenario())


def test_the_messages_waiting_for_a_peer_leave_in_one_frame_and_decode_as_sent() -> None:
    """One I/O trip's Readies send about one message per group to each peer: they go out as one
    frame (read, decoded and stepped as a batch), each message as it was."""
    entry = Entry(7, 2, EntryKind.NORMAL, b"cmd")
    meta = SnapshotMeta(5, 2, Membership(frozenset({"n1", "n2"}), frozenset({"n2"})))
    batch: list[AnyMessage] = [
        vote(1),
        VoteResponse("g", "n1", "n2", 3, True, pre=True),
        AppendEntries("g1", "n1", "n2", 2, 6, 2, (entry,), 6, seq=9),
        AppendResponse("g2", "n1", "n2", 2, False, 4, seq=3),
        InstallSnapshot("g3", "n1", "n2", 2, Snapshot(meta, b"data"), seq=1),
        TimeoutNow("g4", "n1", "n2", 2),
    ]

    async def scenario() -> None:
        peer = ScriptedPeer()
        await peer.start()
        links = PeerLinks("n1", {"n2": peer.address})
        links.start()
        try:
            await wait_for(lambda: links.stats()["n2"]["connected"])
            for msg in batch:  # in one step of the event loop, as a Ready's messages are
                links.send(msg)
            await wait_for(lambda: links.stats()["n2"]["sent"] == len(batch))
            await wait_for(lambda: len(peer.frames) == 1)
            assert decode_frame_messages(peer.frames[0]) == batch
        finally:
            await links.stop()
            assert peer.server is not None
            peer.server.close()

    asyncio.run(scenario())


def test_a_batch_too_large_for_one_frame_is_split_and_a_single_frame_message_still_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "MAX_FRAME", 200)
    big = [
        AppendEntries("g", "n1", "n2", 1, i, 1, (Entry(i + 1, 1, data=b"x" * 60),), i)
        for i in range(6)
    ]
    frames = wire.encode_batch(big)
    assert len(frames) > 1
    decoded = []
    for frame in frames:
        decoded += decode_frame_messages(msgpack.unpackb(frame[4:]))
    assert decoded == big
    assert decode_frame_messages({"raft": wire.encode_message(big[0])}) == big[:1]
    with pytest.raises(wire.FrameError):
        wire.encode_batch(
            [AppendEntries("g", "n1", "n2", 1, 0, 0, (Entry(1, 1, data=b"x" * 300),), 0)]
        )


def test_a_message_that_cannot_be_encoded_is_dropped_and_the_link_keeps_carrying_the_rest() -> None:
    """One link carries every group's traffic to a peer: a message the encoder chokes on (a
    bug, not a frame too large) must cost that message only, not end the link's task."""

    async def scenario() -> None:
        peer = ScriptedPeer()
        await peer.start()
        links = PeerLinks("n1", {"n2": peer.address})
        links.start()
        try:
            await wait_for(lambda: links.stats()["n2"]["connected"])
            unencodable = AppendEntries(
                "g", "n1", "n2", 1, 0, 0, (Entry(1, 1, EntryKind.NORMAL, object()),), 0, seq=1
            )
            links.send(unencodable)
            links.send(vote(2))  # same batch as the bad one
            await wait_for(lambda: peer.frames)
            links.send(vote(3))  # a later batch: the link is still alive
            await wait_for(lambda: len(peer.frames) >= 2)
            terms = [m.term for f in peer.frames for m in decode_frame_messages(f)]
            assert terms == [2, 3]
            assert links.stats()["n2"]["dropped"] == 1
        finally:
            await links.stop()
            assert peer.server is not None
            peer.server.close()

    asyncio.run(scenario())


def test_a_stop_as_the_connection_completes_ends_the_pump(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node's stop cancels each link's pump in the loop pass where its connection
    completes: the pump ends. (Python 3.11's wait_for returned the connection and dropped the
    cancel: the pump went on, and the stop waited for it for ever: a test's node stop hung.)"""
    real = asyncio.open_connection

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        links = PeerLinks("a", {"b": f"127.0.0.1:{port}"})
        stopping: list[asyncio.Task[None]] = []

        async def connect(host: str, port: int) -> object:
            connection = await real(host, port)
            stopping.append(asyncio.ensure_future(links.stop()))  # as the connection is made
            return connection

        monkeypatch.setattr(asyncio, "open_connection", connect)
        links.start()
        await wait_for(lambda: stopping)
        try:
            await asyncio.wait_for(asyncio.shield(stopping[0]), 3.0)
        except TimeoutError:
            raise AssertionError("the stop never ended: the pump took no cancel") from None
        finally:
            server.close()

    asyncio.run(main())


def test_corked_messages_are_written_at_once_by_uncork_in_one_frame() -> None:
    """What is sent while the links are corked (a storage node's I/O trip's replies and votes)
    waits; ``uncork`` writes it to the peer's connection at once, in one frame, without waiting
    for the link's task; a link not connected yet leaves it to its task, which sends it."""

    async def scenario() -> None:
        peer = ScriptedPeer()
        await peer.start()
        links = PeerLinks("n1", {"n2": peer.address})
        links.cork()
        links.send(vote(0))  # not connected yet: uncork leaves it to the link's task
        links.uncork()
        links.start()
        try:
            await wait_for(lambda: len(peer.frames) == 1)
            links.cork()
            for n in (1, 2, 3):
                links.send(vote(n))
            assert links.stats()["n2"]["sent"] == 1  # held
            links.uncork()
            assert links.stats()["n2"]["sent"] == 4  # written by uncork itself
            await wait_for(lambda: len(peer.frames) == 2)
            assert decode_frame_messages(peer.frames[1]) == [vote(1), vote(2), vote(3)]
            links.send(vote(4))  # not corked: the link's task sends it, as before
            await wait_for(lambda: len(peer.frames) == 3)
            assert links.stats()["n2"]["dropped"] == 0
        finally:
            await links.stop()
            assert peer.server is not None
            peer.server.close()

    asyncio.run(scenario())


def test_a_write_that_raises_in_uncork_leaves_the_messages_to_the_links_task() -> None:
    """uncork's write to a connection raises (logged): the messages still wait for the peer and
    its link's task is woken to send them (or reconnect first), none is lost on the way."""

    class Transport:
        def get_write_buffer_size(self) -> int:
            return 0

    class BrokenWriter:
        transport = Transport()

        def is_closing(self) -> bool:
            return False

        def write(self, data: bytes) -> None:
            raise OSError(32, "EPIPE")

    async def scenario() -> None:
        links = PeerLinks("n1", {"n2": "127.0.0.1:1"})  # never started: no task takes them
        link = links.links["n2"]
        link.connected, link.writer = True, BrokenWriter()  # type: ignore[assignment]
        links.cork()
        links.send(vote(1))
        links.send(vote(2))
        links.uncork()  # logged, not raised
        assert list(link.waiting) == [vote(1), vote(2)]
        assert link.wake.is_set() and link.sent == 0

    asyncio.run(scenario())
