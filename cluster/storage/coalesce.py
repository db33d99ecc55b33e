"""Frames written in one event-loop pass leave in one send (client connections only).

A router sends each request frame, and a storage node each reply frame, as its coroutine gets
to it; asyncio's transport hands every ``write`` to the kernel at once, so 8 replies completed
by one applied batch cost 8 ``send`` calls, each running the loopback receive path and waking
the other side. ``Coalescer`` keeps the frames written during one pass of the loop and writes
them together at the start of the next (``call_soon``): one send, one wake-up of the reader.
A frame is written whole or not at all, in the order given; nothing waits longer than the loop
takes to get round once.

    out = Coalescer(writer)
    out.write(encode_frame(reply))
    await out.drain()          # back-pressure, as StreamWriter's (frames still pending count
                               # from the next pass, when they reach the transport)
"""

from __future__ import annotations

import asyncio


class Coalescer:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []

    def write(self, frame: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(frame)

    def flush(self) -> None:
        """Hand the frames written so far to the transport (dropped if it closed meanwhile:
        the connection's reader fails whatever waited on them)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.writer.is_closing():
            self.writer.write(data)

    def can_write_now(self) -> bool:
        """Whether a frame written now needs no drain: the connection is open and its send
        buffer empty, so the transport is not pausing its writers (it pauses only above its
        high-water mark); a caller may then skip ``drain``."""
        return not self.writer.is_closing() and not self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        await self.writer.drain()
