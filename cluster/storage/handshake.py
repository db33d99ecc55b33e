"""The opening of every connection to a storage node's port (Raft peers and clients alike).

The node speaks first: a fresh random challenge, and the Raft wire protocol it speaks
(wire.PROTOCOL; nodes up to protocol 1 sent none). The dialer answers with its ``hello``, which
proves the cluster's internal key over that challenge (cluster/auth.py), so a hello recorded
on the network is worthless on any other connection. The node closes a connection whose hello
proves nothing. A peer link sends its Raft messages in the protocol the node announced
(wire.py "Evolving it": what a rolling upgrade needs); older dialers ignore the announcement.

    protocol = await send_hello(reader, writer, "peer", node="sn-a1")   # the dialer
    hello, proven = await receive_hello(reader, writer)                 # the node
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster import auth

from .wire import PROTOCOL, FrameError, encode_frame, read_frame

HANDSHAKE_SECONDS = 5.0  # a dialer that has not said hello by then is dropped


async def send_hello(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    kind: str,
    timeout: float = HANDSHAKE_SECONDS,
    **fields: Any,
) -> int:
    """The dialer's side: wait for the node's challenge, answer with a hello. Returns the
    Raft wire protocol the node announced (1: none, a node of session 10 or before)."""
    async with asyncio.timeout(timeout):  # (not wait_for: it may drop a cancel, transport.py)
        frame = await read_frame(reader)
    challenge = frame.get("challenge")
    if not isinstance(challenge, str):
        raise FrameError("the node did not open with a challenge")
    protocol = frame.get("protocol", 1)
    if type(protocol) is not int or protocol < 1:
        raise FrameError(f"the node announced no protocol version: {protocol!r}")
    writer.write(encode_frame(auth.hello(kind, challenge, **fields)))
    return protocol


async def receive_hello(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float = HANDSHAKE_SECONDS
) -> tuple[dict[str, Any], bool]:
    """The node's side: send a challenge, read the hello; whether it proves the key (always
    True when this process has no key installed: a node run without a cluster config)."""
    challenge = auth.challenge()
    writer.write(encode_frame({"challenge": challenge, "protocol": PROTOCOL}))
    async with asyncio.timeout(timeout):
        hello = await read_frame(reader)
    return hello, auth.check_hello(hello, challenge) or not auth.installed()
