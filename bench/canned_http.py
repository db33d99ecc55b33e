"""A trivial HTTP/1.1 keep-alive responder for the load benches (bench/loadgen.py,
bench/load_processes.py): every complete request gets the same canned answer, so what the
benches measure is the load generator, not a server.

    server = await loop.create_server(lambda: CannedResponder(canned(b"{}")), "127.0.0.1", port)
"""

from __future__ import annotations

import asyncio


def canned(body: bytes) -> bytes:
    """A whole DynamoDB-style 200 response carrying ``body``."""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class CannedResponder(asyncio.Protocol):
    """Answers each request (its headers and Content-Length bytes of body) with ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = 0
        for _ in range(10_000):  # bounded: at most the requests in this buffer
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = self.buffer[:head_end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                break
            self.buffer = self.buffer[end:]
            replies += 1
        if replies:
            self.transport.write(self.answer * replies)
