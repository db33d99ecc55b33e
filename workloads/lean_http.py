"""A lean HTTP/1.1 client for the load generator: one keep-alive connection, bytes in and out.

Locust's FastHttpSession wraps geventhttpclient in a user agent, a compatibility response and a
catch-response context: about half of a Locust user's CPU per request went there. A DynamoDB
request is one POST with a small body and a small JSON answer, so this client does just that:
one ``sendall`` of the whole request and as few ``recv`` as the answer needs, parsing the status,
``Content-Length`` or chunked bodies and ``Connection: close``. It uses the blocking socket API,
so under Locust (gevent's monkey-patched sockets) a request yields to the other users.

    conn = Connection("http://127.20.1.100:8000", timeout=2.0, connect_timeout=1.0)
    status, body = conn.post(signed_headers, body)

Errors are the standard ones, so an outcome names what happened: ``ConnectionRefusedError``,
``TimeoutError`` ("timed out": no complete answer within ``timeout``),
``ConnectionResetError`` (the server closed the connection before the answer ended) and
:class:`BadResponse` (not HTTP). After any error the connection is closed; the next request
opens a new one. A connection idle for ``idle_limit`` s is replaced before it is used, so a
request never races the server's own idle close (the router closes after 4 s).
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from workloads.sigv4 import host_header

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class BadResponse(ConnectionError):
    """The peer's answer is not well-formed HTTP/1.1."""


class Connection:
    """One keep-alive HTTP/1.1 connection to ``endpoint`` (scheme http only)."""

    def __init__(
        self,
        endpoint: str,
        timeout: float = 2.0,
        connect_timeout: float = 1.0,
        idle_limit: float = 2.0,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"lean_http needs an http://host:port endpoint, not {endpoint!r}")
        self.address = (parts.hostname, parts.port or 80)
        self.path = (parts.path.rstrip("/") or "") + "/"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.idle_limit = idle_limit
        self._prefix = f"POST {self.path} HTTP/1.1\r\nHost: {host_header(endpoint)}\r\n".encode()
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._last_used = 0.0

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buffer.clear()

    def post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """Send one POST with ``headers`` (plus Host and Content-Length) and ``body``; return
        (status, body of the answer). Raises OSError subclasses on transport errors."""
        deadline = time.monotonic() + self.timeout
        try:
            return self._exchange(headers, body, deadline)
        except BaseException:
            self.close()  # mid-request: its state is unknown; GreenletExit lands here too
            raise

    def _exchange(self, headers: dict[str, str], body: bytes, deadline: float) -> tuple[int, bytes]:
        now = time.monotonic()
        if self._sock is not None and now - self._last_used > self.idle_limit:
            self.close()
        if self._sock is None:
            self._sock = socket.create_connection(self.address, timeout=self.connect_timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self._sock
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"".join(
            (self._prefix, f"{lines}Content-Length: {len(body)}\r\n\r\n".encode(), body)
        )
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(request)
        status, answer, keep = self._read_response(sock, deadline)
        if keep:
            self._last_used = time.monotonic()
        else:
            self.close()
        return status, answer

    def _fill(self, sock: socket.socket, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("connection closed by the server before the answer ended")
        self._buffer += data

    def _read_response(self, sock: socket.socket, deadline: float) -> tuple[int, bytes, bool]:
        buf = self._buffer
        for _ in range(MAX_HEAD):  # bounded: every pass adds at least one byte or raises
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise BadResponse("response head over 64 KiB")
            self._fill(sock, deadline)
        head = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        version, _, rest = head[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise BadResponse(f"not an HTTP/1.x status line: {head[0][:80]!r}")
        status = int(code)
        length: int | None = None
        chunked = False
        keep = version == b"HTTP/1.1"
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise BadResponse(f"bad Content-Length: {value[:40]!r}") from None
                if not 0 <= length <= MAX_BODY:
                    raise BadResponse(f"Content-Length out of range: {length}")
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.strip().lower()
                keep = token != b"close" and (keep or token == b"keep-alive")
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        if chunked:
            return status, self._read_chunked(sock, deadline), keep
        if length is None:  # the body runs to the end of the connection
            for _ in range(MAX_BODY):
                try:
                    self._fill(sock, deadline)
                except ConnectionResetError:
                    break
            answer = bytes(buf)
            buf.clear()
            return status, answer, False
        for _ in range(MAX_BODY):  # bounded: every pass adds at least one byte or raises
            if len(buf) >= length:
                break
            self._fill(sock, deadline)
        answer = bytes(buf[:length])
        del buf[:length]
        return status, answer, keep

    def _read_chunked(self, sock: socket.socket, deadline: float) -> bytes:
        buf = self._buffer
        out = bytearray()
        for _ in range(MAX_BODY):  # bounded: each pass consumes a chunk or reads a byte
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                self._fill(sock, deadline)
                continue
            size_text = bytes(buf[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size: {size_text[:40]!r}") from None
            if size == 0:  # last chunk, then trailers up to an empty line
                for _ in range(MAX_HEAD):
                    end = buf.find(b"\r\n\r\n", line_end)
                    if end >= 0:
                        del buf[: end + 4]
                        return bytes(out)
                    self._fill(sock, deadline)
                raise BadResponse("chunked body without its end")
            if len(out) + size > MAX_BODY:
                raise BadResponse("chunked body over 64 MiB")
            need = line_end + 2 + size + 2
            for _ in range(MAX_BODY):
                if len(buf) >= need:
                    break
                self._fill(sock, deadline)
            out += buf[line_end + 2 : line_end + 2 + size]
            del buf[:need]
        raise BadResponse("chunked body too long")
