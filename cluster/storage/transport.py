"""Node-to-node links: one outbound connection per peer, carrying Raft messages one way.

A node sends to a peer only on a connection it opened itself, to the address configured for
that peer (which may be a Toxiproxy listener), and never answers on a connection it accepted.
So the link "n1 -> n2" is exactly one TCP stream, and cutting it cuts only that direction.

    links = PeerLinks("n1", {"n2": "127.0.0.1:21002"})
    links.send(msg)          # queued; dropped if the link is down and the queue is full
    links.stats()            # {"n2": {"connected": True, "sent": 10, "dropped": 0, ...}}

Raft tolerates loss, so a full queue drops its oldest message rather than blocking the node.

Every message waiting for a peer when its link's task runs leaves in ONE frame (wire.py
``encode_batch``): with many groups on a node, one I/O trip's Readies (readyio.py) send about one
message per group to each peer, and the receiver reads, decodes and steps them as one batch
instead of framing, writing and reading each on its own.

A link notices at once when the peer (or a proxy in between) closes it, and reconnects within
RECONNECT_MAX seconds once the peer listens again: a link with nothing to send (a follower's
to another follower) used to learn that its peer had restarted only when a write failed, so the
first message after a restart (a pre-vote, when the leader has just died) was lost, and links
to a peer that was down for a second waited up to a second more to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cluster.consensus.messages import AnyMessage

from .handshake import send_hello
from .wire import FrameError, encode_batch

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)  # a link lost or back: one line per change, even at WARNING

RECONNECT_MAX = 0.2  # the longest wait between connection attempts to a peer, seconds
QUEUE_LIMIT = 4096  # messages waiting for one peer; beyond it the oldest is dropped


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)


@dataclass
class _Link:
    peer: str
    address: str
    waiting: deque[AnyMessage] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set: waiting or closed
    connected: bool = False
    sent: int = 0
    dropped: int = 0
    connects: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = None
    closed_by_peer: bool = False  # set by _watch_for_close; the pump reconnects
    # The Raft wire protocol the peer announced on the current connection (wire.py "Evolving
    # it"); None while not connected. Its messages are encoded for it.
    protocol: int | None = None
    writer: asyncio.StreamWriter | None = None  # the current connection's, while connected


class PeerLinks:
    def __init__(self, node_id: str, peers: dict[str, str], connect_timeout: float = 1.0) -> None:
        self.node_id = node_id
        self.connect_timeout = connect_timeout
        self.links = {peer: _Link(peer, addr) for peer, addr in peers.items() if peer != node_id}
        # When we last received anything from each peer (set by the node's inbound side).
        self.last_heard: dict[str, float] = {}
        self._corked = False  # see cork()

    def start(self) -> None:
        for link in self.links.values():
            link.task = asyncio.create_task(self._pump(link), name=f"link-{link.peer}")

    async def stop(self) -> None:
        for link in self.links.values():
            if link.task is not None:
                link.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await link.task

    def send(self, msg: AnyMessage) -> None:
        link = self.links.get(msg.dst)
        if link is None:
            return  # not a peer we know of (e.g. removed from the group)
        if len(link.waiting) >= QUEUE_LIMIT:
            link.waiting.popleft()
            link.dropped += 1
        link.waiting.append(msg)
        if not self._corked:
            link.wake.set()

    def cork(self) -> None:
        """Hold what is sent from now on until ``uncork`` (event loop; nothing awaited between)."""
        self._corked = True

    def uncork(self) -> None:
        """Write what waits for each peer now, in one frame batch per peer, if its connection
        can take it without waiting (open, send buffer empty); else leave it to the link's
        task, as ``send`` does. A storage node's I/O trip sends its replies and votes so
        (readyio.py): they leave right after the fsync that covers them, before the trip's
        applies and without a wake-up of each link's task. The order per peer is kept: what
        waits was never handed to the connection (the link's task writes each batch it takes
        before it awaits anything)."""
        self._corked = False
        for link in self.links.values():
            if not link.waiting:
                continue
            try:
                written = self._write_now(link)
            except Exception:  # one peer's failure must not hold back the others' replies
                log.exception("writing to %s failed; its link's task sends what waits", link.peer)
                written = False
            if not written:
                link.wake.set()

    def _write_now(self, link: _Link) -> bool:
        writer = link.writer
        if writer is None or not link.connected or link.closed_by_peer or writer.is_closing():
            return False
        if writer.transport.get_write_buffer_size():  # the link's task drains it first
            return False
        batch = list(link.waiting)
        frames = self._frames(link, batch)
        writer.write(b"".join(frames))
        link.waiting.clear()  # only once written: a write that raised leaves them to the task
        link.sent += len(batch)
        return True

    def heard_from(self, peer: str) -> None:
        self.last_heard[peer] = time.monotonic()

    def stats(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {
            link.peer: {
                "address": link.address,
                "connected": link.connected,
                "sent": link.sent,
                "dropped": link.dropped,
                "connects": link.connects,
                "protocol": link.protocol,
                "last_error": link.last_error,
                "heard_seconds_ago": (
                    round(now - self.last_heard[link.peer], 3)
                    if link.peer in self.last_heard
                    else None
                ),
            }
            for link in self.links.values()
        }

    async def _pump(self, link: _Link) -> None:
        backoff = 0.05
        host, port = split_address(link.address)
        watcher: asyncio.Task[None] | None = None
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 a wait_for whose connection
                # completes in the same loop pass as a cancel (the node's stop) returns it and
                # drops the cancel; the pump went on, and stop() awaited it for ever.
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(host, port)
                assert writer is not None
                # cluster/auth.py; the peer's protocol decides what it is sent (wire.py)
                link.protocol = await send_hello(reader, writer, "peer", node=self.node_id)
                link.connected, link.connects, backoff = True, link.connects + 1, 0.05
                link.writer = writer
                if link.connects > 1:
                    log.info("link to %s up again (connect %d)", link.peer, link.connects)
                link.closed_by_peer = False
                watcher = asyncio.create_task(self._watch_for_close(link, reader))
                while True:
                    await link.wake.wait()
                    link.wake.clear()
                    batch = list(link.waiting)
                    link.waiting.clear()
                    if link.closed_by_peer:
                        link.dropped += len(batch)
                        raise ConnectionResetError("closed by the peer")
                    if not batch:
                        continue
                    frames = self._frames(link, batch)
                    writer.write(b"".join(frames))
                    await writer.drain()
                    link.sent += len(batch)
            except (OSError, TimeoutError, FrameError, asyncio.IncompleteReadError) as exc:
                link.last_error = f"{type(exc).__name__}: {exc}"
                if link.connected:
                    log.info("link to %s lost: %s", link.peer, link.last_error)
            except Exception as exc:  # a dead pump would silence the peer for good
                # One link carries every group's traffic to this peer: whatever went wrong, the
                # pump logs it and reconnects rather than ending (Raft resends what was lost).
                error = f"{type(exc).__name__}: {exc}"
                if error != link.last_error:  # the traceback once, not every reconnect
                    log.exception("link to %s failed unexpectedly; reconnecting", link.peer)
                link.last_error = error
            finally:
                link.connected, link.protocol, link.writer = False, None, None
                if watcher is not None:
                    watcher.cancel()
                    watcher = None
                if writer is not None:
                    writer.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX)

    @staticmethod
    def _frames(link: _Link, batch: list[AnyMessage]) -> list[bytes]:
        """``batch`` framed for the peer's protocol; a message that cannot be framed (too large
        for any frame, or not encodable at all: a bug, logged) is dropped (removed from
        ``batch``), the others still leave: one bad message must not hold back every group's
        traffic to the peer."""
        try:
            return encode_batch(batch, link.protocol or 1)
        except Exception:  # find the culprit one message at a time
            frames: list[bytes] = []
            for msg in list(batch):
                try:
                    frames += encode_batch([msg], link.protocol or 1)
                except Exception as exc:
                    batch.remove(msg)
                    link.dropped += 1
                    log.error("dropped a message to %s: %s: %s", link.peer, type(exc).__name__, exc)
            return frames

    @staticmethod
    async def _watch_for_close(link: _Link, reader: asyncio.StreamReader) -> None:
        """The peer never writes on a link: a read returns only when it is closed (the peer's
        process died, or the peer or a proxy closed it). Wake the pump to reconnect."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while await reader.read(4096):
                pass
        link.closed_by_peer = True
        link.wake.set()  # wakes the pump, which reconnects
