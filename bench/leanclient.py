"""A lean DynamoDB JSON-protocol client for benches: SigV4-signed HTTP/1.1 on kept-alive sockets.

bench/api.py measures the cluster, and its client runs on the same cores: aiohttp's client costs
a request about as much CPU as the router's whole handling of it, so the API rows measured the
client as much as the cluster (the raw replication row's client is a lean msgpack one). This one
writes the request line and the signed headers itself (workloads/sigv4.py: signatures identical
to botocore's) and reads the status, the headers it needs and the body.

    async with LeanClient("http://127.20.1.100:8000", "gameday", "secret") as ddb:
        status, body = await ddb.call("PutItem", {"TableName": "t", "Item": {...}})

Not a general HTTP client: no redirects, no chunked replies (the router sends Content-Length),
no TLS. A connection idle for IDLE_SECONDS is not reused (the router closes idle ones at 4 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from workloads.sigv4 import SigV4Signer

IDLE_SECONDS = 2.0

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter, float]


class LeanClient:
    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        self.signer = SigV4Signer(endpoint, access_key, secret_key)
        parts = urlsplit(endpoint)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.host_header = f"{self.host}:{self.port}"
        self.idle: list[_Conn] = []

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def call(self, operation: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Send one operation; (HTTP status, decoded body). Transport errors raise."""
        body = json.dumps(params).encode()
        headers = self.signer.headers(operation, body)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"POST / HTTP/1.1\r\nHost: {self.host_header}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        reader, writer = await self._connection()
        try:
            writer.write(request)
            status_line = await reader.readuntil(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            length, keep = 0, True
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
            payload = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status, (json.loads(payload) if payload else {})
