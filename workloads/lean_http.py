"""A lean HTTP/1.1 client for the load generator: one keep-alive connection, bytes in and out.

Locust's FastHttpSession wraps geventhttpclient in a user agent, a compatibility response and a
catch-response context: about half of a Locust user's CPU per request went there. A DynamoDB
request is one POST with a small body and a small JSON answer, so this client does just that:
one ``send`` of the whole request and as few ``recv`` as the answer needs, parsing the status,
``Content-Length`` or chunked bodies and ``Connection: close``. The socket is non-blocking; a
request waits for its answer on the gevent hub when gevent has patched sockets (Locust: the
other users run meanwhile) and in poll(2) otherwise (``green=`` chooses). Waiting on the hub
directly (one I/O watcher per connection, one timer per wait), rather than through gevent's
socket (a recv that fails with EAGAIN first, then a Timeout object and a Waiter per wait),
cut the Locust process's CPU per request by ~15% when answers come one at a time, as from the
cluster (issue #15; bench/loadgen.py).

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

import _socket
import ipaddress
import select
import socket
import sys
import time
from typing import Protocol
from urllib.parse import urlsplit

from workloads.sigv4 import host_header

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_CLOSED = "connection closed by the server before the answer ended"


class BadResponse(ConnectionError):
    """The peer's answer is not well-formed HTTP/1.1."""


def gevent_patched() -> bool:
    """Whether gevent has monkey-patched sockets in this process (Locust has)."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def _open(address: tuple[str, int], timeout: float) -> socket.socket:
    """``socket.create_connection``, without its getaddrinfo for an IP literal (under gevent
    that is a trip through a thread pool: most of a health probe's CPU)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address[0]).version == 6 else 0
    except ValueError:
        return socket.create_connection(address, timeout=timeout)  # a name: resolve it
    sock = socket.socket(family or socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def get_status(endpoint: str, path: str, timeout: float) -> int:
    """``GET path`` on a fresh connection to ``endpoint`` (http); the answer's status code.

    For health probes: under gevent ~190 us of CPU against urllib's ~400-580 (3 routers probed
    every second: 1-2% of the load generator's CPU). ``timeout`` bounds each connect, send and
    recv, as urllib's does; redirects are not followed; an IP literal is not resolved. Raises
    OSError (BadResponse: not HTTP)."""
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"lean_http needs an http://host:port endpoint, not {endpoint!r}")
    base = parts.path.rstrip("/")
    request = (
        f"GET {base}{path} HTTP/1.1\r\nHost: {host_header(endpoint)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with _open((parts.hostname, parts.port or 80), timeout) as sock:
        sock.sendall(request)
        head = b""
        for _ in range(MAX_HEAD):  # bounded: every pass adds at least one byte or raises
            if b"\r\n" in head or len(head) > MAX_HEAD:
                break
            data = sock.recv(4096)
            if not data:
                raise ConnectionResetError("connection closed before the status line")
            head += data
    return _status_line(head.partition(b"\r\n")[0])[1]


def _status_line(line: bytes) -> tuple[bytes, int]:
    """(HTTP version, status code) of a response's status line; BadResponse if it is none."""
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise BadResponse(f"not an HTTP/1.x status line: {line[:80]!r}")
    return version, int(code)


def _field(fields: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lowercase, as ``b"\\r\\nname:"``) in ``fields`` (the head's
    header lines, lowercased, each after its line break), stripped; the last one if repeated,
    None if absent."""
    at = fields.rfind(name)
    if at < 0:
        return None
    start = at + len(name)
    end = fields.find(b"\r\n", start)
    return fields[start : end if end >= 0 else len(fields)].strip()


def _head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """A response head (without its blank line) -> (status, Content-Length or None, whether
    the body is chunked, whether the connection stays open). BadResponse if it is not HTTP."""
    line_end = head.find(b"\r\n")
    version, status = _status_line(head if line_end < 0 else head[:line_end])
    # the header lines, lowercased, each after its "\r\n": a name is found only where a line
    # starts (one lower() and three searches instead of a loop over every line)
    fields = head[line_end:].lower() if line_end >= 0 else b""
    length: int | None = None
    value = _field(fields, b"\r\ncontent-length:")
    if value is not None:
        try:
            length = int(value)
        except ValueError:
            raise BadResponse(f"bad Content-Length: {value[:40]!r}") from None
        if not 0 <= length <= MAX_BODY:
            raise BadResponse(f"Content-Length out of range: {length}")
    value = _field(fields, b"\r\ntransfer-encoding:")
    chunked = value is not None and b"chunked" in value
    keep = version == b"HTTP/1.1"
    value = _field(fields, b"\r\nconnection:")
    if value is not None:
        keep = value != b"close" and (keep or value == b"keep-alive")
    return status, length, chunked, keep


class Readiness(Protocol):
    def wait(self, write: bool, deadline: float) -> None:
        """Return once the socket is readable (``write``: writable), or raise TimeoutError
        at ``deadline`` (``time.monotonic()``)."""

    def close(self) -> None: ...


class PollReadiness:
    """Blocks the thread in poll(2): for plain threaded callers."""

    def __init__(self, sock: _socket.socket) -> None:
        self.fd = sock.fileno()
        self.poll = select.poll()

    def wait(self, write: bool, deadline: float) -> None:
        self.poll.register(self.fd, select.POLLOUT if write else select.POLLIN)
        for _ in range(1_000_000):  # bounded: each pass sleeps until ready or the deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            if self.poll.poll(max(remaining * 1000.0, 1.0)):
                return  # readable, writable, closed or failed: the next recv/send says which
        raise TimeoutError("timed out")

    def close(self) -> None:
        pass


class GreenReadiness:
    """Parks the greenlet on the gevent hub: one libev I/O watcher per connection and direction,
    kept for the connection's life, and one timer per wait, both of which switch straight back
    to the waiting greenlet (with True: ready, False: the timer).

    Leaner per request than gevent's socket (its recv tries first, fails with EAGAIN, then
    builds a Timeout object and a Waiter for every wait), which matters when answers arrive
    one at a time and every request is its own wake-up (issue #15). No Waiter either: both
    callbacks are stopped before the greenlet goes on, so neither can switch into it later."""

    def __init__(self, sock: _socket.socket) -> None:
        from gevent import get_hub, getcurrent

        self.hub = get_hub()
        self.current = getcurrent
        fd = sock.fileno()
        self.watchers = (self.hub.loop.io(fd, 1), self.hub.loop.io(fd, 2))  # read, write

    def wait(self, write: bool, deadline: float) -> None:
        watcher = self.watchers[write]
        for _ in range(1_000_000):  # bounded: a timer that fired early waits for the rest
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            switch = self.current().switch
            timer = self.hub.loop.timer(remaining)
            watcher.start(switch, True)
            timer.start(switch, False)
            try:
                if self.hub.switch():
                    return
            finally:
                watcher.stop()
                timer.close()
        raise TimeoutError("timed out")

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.close()


class Connection:
    """One keep-alive HTTP/1.1 connection to ``endpoint`` (scheme http only)."""

    def __init__(
        self,
        endpoint: str,
        timeout: float = 2.0,
        connect_timeout: float = 1.0,
        idle_limit: float = 2.0,
        green: bool | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"lean_http needs an http://host:port endpoint, not {endpoint!r}")
        self.address = (parts.hostname, parts.port or 80)
        self.path = (parts.path.rstrip("/") or "") + "/"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.idle_limit = idle_limit
        self.green = gevent_patched() if green is None else green
        self._prefix = f"POST {self.path} HTTP/1.1\r\nHost: {host_header(endpoint)}\r\n".encode()
        self._sock: _socket.socket | None = None
        self._ready: Readiness | None = None
        self._buffer = bytearray()
        self._last_used = 0.0

    def close(self) -> None:
        if self._sock is not None:
            try:
                try:
                    if self._ready is not None:
                        self._ready.close()
                finally:
                    self._sock.close()
            finally:
                self._sock = None
                self._ready = None
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

    def _connect(self) -> tuple[_socket.socket, Readiness]:
        # connect (and resolve) through the socket module: cooperative under gevent
        with _open(self.address, self.connect_timeout) as made:
            made.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            family, kind, proto = made.family, made.type, made.proto
            sock = _socket.socket(family, kind, proto, fileno=made.detach())
        try:
            sock.setblocking(False)
            ready = (GreenReadiness if self.green else PollReadiness)(sock)
        except BaseException:
            sock.close()
            raise
        self._sock, self._ready = sock, ready
        return self._sock, self._ready

    def _exchange(self, headers: dict[str, str], body: bytes, deadline: float) -> tuple[int, bytes]:
        now = time.monotonic()
        if self._sock is not None and now - self._last_used > self.idle_limit:
            self.close()
        if self._sock is None or self._ready is None:
            sock, ready = self._connect()
        else:
            sock, ready = self._sock, self._ready
        fields = "\r\n".join(map(": ".join, headers.items()))
        length = f"Content-Length: {len(body)}\r\n\r\n"
        request = b"".join(
            (self._prefix, (f"{fields}\r\n{length}" if fields else length).encode(), body)
        )
        self._send(sock, ready, request, deadline)
        # The answer cannot be there yet: wait for it before the first recv (one syscall and
        # one BlockingIOError fewer per request than try-recv-then-wait).
        ready.wait(False, deadline)
        status, answer, keep = self._read_response(sock, deadline)
        if keep:
            self._last_used = time.monotonic()
        else:
            self.close()
        return status, answer

    def _send(self, sock: _socket.socket, ready: Readiness, data: bytes, deadline: float) -> None:
        try:  # the usual case: all of it at once
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        ready.wait(True, deadline)
        for _ in range(len(data) + 1):  # bounded: every pass sends a byte or waits (or raises)
            try:
                sent = sock.send(view)
            except BlockingIOError:
                sent = 0
            if sent == len(view):
                return
            view = view[sent:]
            ready.wait(True, deadline)
        raise TimeoutError("timed out")

    def _fill(self, sock: _socket.socket, deadline: float) -> None:
        ready = self._ready
        assert ready is not None
        for _ in range(1_000_000):  # bounded: each pass reads or waits until the deadline
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                ready.wait(False, deadline)
                continue
            if not data:
                raise ConnectionResetError(_CLOSED)
            self._buffer += data
            return
        raise TimeoutError("timed out")

    def _read_response(self, sock: _socket.socket, deadline: float) -> tuple[int, bytes, bool]:
        buf = self._buffer
        if not buf:
            # The usual case: nothing left over, and the whole answer in one recv, taken from
            # the bytes received (no copies through the buffer); anything else goes below.
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = None  # not readable after all: the loop below waits
            if data is not None:
                if not data:
                    raise ConnectionResetError(_CLOSED)
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    status, length, chunked, keep = _head(data[:end])
                    if (
                        length == len(data) - end - 4
                        and not chunked
                        and status >= 200
                        and status not in (204, 304)
                    ):
                        return status, data[end + 4 :], keep
                buf += data
        for _ in range(MAX_HEAD):  # bounded: every pass adds at least one byte or raises
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise BadResponse("response head over 64 KiB")
            self._fill(sock, deadline)
        status, length, chunked, keep = _head(bytes(buf[:end]))
        del buf[: end + 4]
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

    def _read_chunked(self, sock: _socket.socket, deadline: float) -> bytes:
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
