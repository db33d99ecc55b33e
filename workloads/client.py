"""A small, fast DynamoDB JSON-protocol client: pooled HTTP connections, SigV4 signing.

boto3 is the reference client (the tests use it); this one exists for load, where boto3's
per-call overhead would measure the client instead of the cluster. It signs with
workloads/sigv4.py, whose signatures are byte-identical to botocore's, so what the router
verifies is exactly what AWS clients send.

    async with DynamoClient("http://127.20.1.100:8000", "gameday", "secret") as ddb:
        status, body = await ddb.call("PutItem", {"TableName": "t", "Item": {...}})
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import aiohttp

from workloads.sigv4 import SigV4Signer

__all__ = ["DynamoClient", "SigV4Signer", "error_code"]


class DynamoClient:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        region: str = "us-east-1",
        timeout: float = 10.0,
        connections: int = 64,
    ) -> None:
        self.signer = SigV4Signer(endpoint, access_key, secret_key, region)
        self.endpoint = self.signer.endpoint  # with one trailing slash
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.connections = connections
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DynamoClient:
        self.session = aiohttp.ClientSession(
            # Pooled connections are dropped here before the router's 4 s idle timeout closes
            # them, so a request never races the router's close (an unknown outcome).
            connector=aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=2.0),
            timeout=self.timeout,
        )
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.session is not None:
            await self.session.close()

    def sign(self, operation: str, body: bytes) -> dict[str, str]:
        return self.signer.headers(operation, body)

    async def call(
        self, operation: str, params: dict[str, Any], timeout: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send one operation; returns (HTTP status, decoded body). Raises on transport errors
        (aiohttp.ClientError, TimeoutError): the caller decides what an unknown outcome means.
        ``timeout``: this request's, instead of the client's."""
        assert self.session is not None, "use 'async with DynamoClient(...)'"
        body = json.dumps(params).encode()
        async with self.session.post(
            self.endpoint,
            data=body,
            headers=self.sign(operation, body),
            timeout=aiohttp.ClientTimeout(total=timeout) if timeout else self.timeout,
        ) as resp:
            payload = await resp.read()
            return resp.status, (json.loads(payload) if payload else {})


def error_code(body: dict[str, Any]) -> str | None:
    """``ConditionalCheckFailedException`` from ``com.amazonaws...#ConditionalCheckFailed...``."""
    kind = body.get("__type")
    return None if kind is None else str(kind).rsplit("#", 1)[-1]
