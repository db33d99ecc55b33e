"""One request to a storage node on a connection of its own: what probes and scrubs use.

Nothing is left behind when the node is dead or the call times out (no shared connection to
repair, no pending future), which suits a call made every half second to every peer.

    reply = await ask("127.20.1.1:7100", {"op": "status"}, timeout=1.0)
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.storage.transport import split_address
from cluster.storage.wire import FrameError, encode_frame, read_frame

PROBE_FAILURES = (
    OSError,
    asyncio.IncompleteReadError,
    TimeoutError,
    FrameError,
    KeyError,
    TypeError,
)


async def ask(address: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request on a connection of its own (probes: nothing is left behind on failure)."""
    host, port = split_address(address)

    async def exchange() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(encode_frame({"hello": "client"}) + encode_frame({"id": 1, **request}))
            await writer.drain()
            return await read_frame(reader)
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)
