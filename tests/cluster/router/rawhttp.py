"""Raw HTTP to a live router over plain sockets, signed with botocore's own SigV4 signer.

For requests no HTTP library would send: a Content-Length that lies, headers that trickle in,
bodies with lone surrogates. Every socket has a timeout, so a router that hangs fails the test
instead of holding it.

    raw = RawRouter.of(cluster)
    reply = raw.call("PutItem", b'{"TableName": "t", "Item": ...}')   # Reply(status, type, ...)
    with raw.connect() as sock: sock.sendall(raw.head("ListTables", b"{}", length=100))
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster

REGION = "us-east-1"
TARGET_PREFIX = "DynamoDB_20120810."


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def type(self) -> str:
        return str(self.json.get("__type", "")).rsplit("#", 1)[-1]


@dataclass(frozen=True)
class RawRouter:
    host: str
    port: int
    key: str
    secret: str

    @classmethod
    def of(cls, cluster: LocalCluster, router: str = "rt-a") -> RawRouter:
        host, port = cluster.config.process(router).listen.rsplit(":", 1)
        return cls(
            host, int(port), DEFAULT_ACCESS_KEY, cluster.config.credentials[DEFAULT_ACCESS_KEY]
        )

    def connect(self, timeout: float = 15.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def signed(
        self,
        operation: str,
        body: bytes,
        *,
        key: str | None = None,
        secret: str | None = None,
        region: str = REGION,
        service: str = "dynamodb",
    ) -> dict[str, str]:
        """The headers boto3 would send for ``body``, signed by botocore."""
        url = f"http://{self.host}:{self.port}/"
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": TARGET_PREFIX + operation,
        }
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        credentials = Credentials(key or self.key, secret or self.secret)
        signer = SigV4Auth(credentials, service, region)
        signer.add_auth(request)
        prepared = request.prepare()
        return {name: str(value) for name, value in prepared.headers.items()}

    def head(
        self,
        operation: str,
        body: bytes,
        *,
        length: int | None = None,
        override: dict[str, str] | None = None,
        **sign: Any,
    ) -> bytes:
        """The request line and headers for ``body`` (signed), announcing ``length`` bytes;
        ``override`` replaces headers after signing (a stale X-Amz-Date, say)."""
        headers = {"Host": f"{self.host}:{self.port}", **self.signed(operation, body, **sign)}
        headers["Content-Length"] = str(len(body) if length is None else length)
        headers.update(override or {})
        lines = ["POST / HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")

    def call(self, operation: str, body: bytes, timeout: float = 15.0, **sign: Any) -> Reply:
        """One signed request on a fresh connection, and its reply."""
        with self.connect(timeout) as sock:
            started = time.monotonic()
            sock.sendall(self.head(operation, body, **sign) + body)
            return read_reply(sock, started)


def read_reply(sock: socket.socket, started: float | None = None) -> Reply:
    """Parse one HTTP response from ``sock`` (raises on a timeout or a closed connection)."""
    started = time.monotonic() if started is None else started
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return Reply(response.status, dict(response.getheaders()), body, time.monotonic() - started)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer has closed ``sock`` (EOF or reset) within the socket's timeout."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def amz_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)
