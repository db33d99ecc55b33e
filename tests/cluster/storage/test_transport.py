"""Peer links on loopback: a link notices at once that its peer closed it, and reconnects.

The scripted peer speaks the real wire protocol (a challenge, the dialer's ``peer`` hello, then
Raft frames one way) and can drop every connection it holds, as a killed node does.
"""

from __future__ import annotations

import asyncio
import contextlib

from cluster.consensus.messages import RequestVote
from cluster.storage.transport import PeerLinks
from cluster.storage.wire import encode_frame, read_frame


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
