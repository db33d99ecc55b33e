"""workloads/lean_http.py against a scripted HTTP server on loopback: keep-alive, chunked and
close-delimited answers, and every transport failure named as the retry rules expect. Every test
runs twice: waiting in poll(2) (plain threads) and on a gevent hub (how Locust runs it)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from workloads.lean_http import BadResponse, Connection, get_status
from workloads.retry import moves_on

Reply = Callable[[bytes], bytes | None]  # request -> bytes to send, or None: close silently


class ScriptedServer:
    """Answers the n-th request with ``replies[n]`` (the last one repeats)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buf = b""
        with conn:
            while not self.stopped.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
                answer = reply(self.requests[-1])
                if answer is None:
                    return
                conn.sendall(answer)
                if answer.startswith(b"HTTP/1.0") or b"connection: close" in answer.lower():
                    return  # the answer ends with the connection

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture(params=[False, True], ids=["poll", "gevent"])
def green(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def serve() -> Iterator[Callable[[list[Reply]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(replies: list[Reply]) -> ScriptedServer:
        servers.append(ScriptedServer(replies))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b'{"Item":{}}', extra: bytes = b"") -> Reply:
    return lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_keep_alive_sends_exactly_the_signed_request(
    serve: Callable[..., ScriptedServer], green: bool
) -> None:
    server = serve([ok()])
    conn = Connection(server.endpoint, green=green)
    for i in range(3):
        body = b'{"n":%d}' % i
        assert conn.post({"X-Amz-Target": "DynamoDB_20120810.GetItem"}, body) == (
            200,
            b'{"Item":{}}',
        )
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port)
    assert b"X-Amz-Target: DynamoDB_20120810.GetItem\r\nContent-Length: 7\r\n\r\n" in first
    assert first.endswith(b'\r\n\r\n{"n":0}')
    conn.close()


def test_chunked_answer_with_trailers(serve: Callable[..., ScriptedServer], green: bool) -> None:
    chunked = (
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n3;ext=1\r\n12}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    server = serve([lambda _: chunked, ok(b"{}")])
    conn = Connection(server.endpoint, green=green)
    assert conn.post({}, b"x") == (400, b'{"a":12}')
    assert conn.post({}, b"y") == (200, b"{}")  # the same connection, left clean
    assert server.connections == 1


def test_header_names_in_any_case_and_only_at_line_starts(
    serve: Callable[..., ScriptedServer], green: bool
) -> None:
    odd = b"HTTP/1.1 200 OK\r\nX-Note: content-length: 99\r\nCONTENT-length: 2\r\n\r\n{}"
    server = serve([lambda _: odd, ok(b"{}", b"connection: CLOSE\r\n"), ok(b"{}")])
    conn = Connection(server.endpoint, green=green)
    assert conn.post({}, b"") == (200, b"{}")
    assert conn.post({}, b"") == (200, b"{}")  # the same connection, which it then closes
    assert conn.post({}, b"") == (200, b"{}")
    assert server.connections == 2


def test_connection_close_and_close_delimited_bodies(
    serve: Callable[..., ScriptedServer], green: bool
) -> None:
    server = serve(
        [
            ok(b"{}", b"Connection: close\r\n"),
            lambda _: b'HTTP/1.0 503 Service Unavailable\r\n\r\n{"late":1}',
            ok(b"{}"),
        ]
    )
    conn = Connection(server.endpoint, green=green)
    assert conn.post({}, b"") == (200, b"{}")
    assert conn.post({}, b"") == (503, b'{"late":1}')  # HTTP/1.0 without length: read to close
    assert conn.post({}, b"") == (200, b"{}")
    assert server.connections == 3


def test_a_silent_close_is_a_reset_and_the_next_request_reconnects(
    serve: Callable[..., ScriptedServer], green: bool
) -> None:
    server = serve([lambda _: None, ok()])
    conn = Connection(server.endpoint, green=green)
    with pytest.raises(ConnectionResetError) as info:
        conn.post({}, b"")
    assert moves_on(type(info.value).__name__)
    assert conn.post({}, b"")[0] == 200
    assert server.connections == 2


def test_no_answer_times_out_within_the_timeout(
    serve: Callable[..., ScriptedServer], green: bool
) -> None:
    released = threading.Event()

    def hang(_: bytes) -> bytes:
        released.wait(30)  # far longer than the timeout: the client must not wait for it
        return b""

    server = serve([hang])
    conn = Connection(server.endpoint, timeout=0.3, green=green)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError) as info:
            conn.post({}, b"")
        assert time.monotonic() - started < 15  # timed out, did not wait for the server
    finally:
        released.set()
    assert moves_on(f"{type(info.value).__name__}: {info.value}")


def test_refused_and_garbage_are_named(green: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(ConnectionRefusedError):
            Connection(f"http://127.0.0.1:{port}", green=green).post({}, b"")


def test_garbage_is_a_bad_response(serve: Callable[..., ScriptedServer], green: bool) -> None:
    server = serve([lambda _: b"SSH-2.0-OpenSSH\r\n\r\n", ok()])
    conn = Connection(server.endpoint, green=green)
    with pytest.raises(BadResponse):
        conn.post({}, b"")
    assert conn.post({}, b"")[0] == 200


def test_an_idle_connection_is_replaced_before_use(
    serve: Callable[..., ScriptedServer], green: bool
) -> None:
    server = serve([ok()])
    conn = Connection(server.endpoint, idle_limit=0.2, green=green)
    conn.post({}, b"")
    time.sleep(0.3)
    conn.post({}, b"")
    assert server.connections == 2


def test_only_http_endpoints() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        Connection("https://127.0.0.1:8000")


def test_a_killed_greenlet_closes_its_connection(serve: Callable[..., ScriptedServer]) -> None:
    gevent = pytest.importorskip("gevent")
    released = threading.Event()

    def hang(_: bytes) -> bytes | None:
        released.wait(30)
        return None

    server = serve([hang, ok()])
    conn = Connection(server.endpoint, green=True)
    try:
        waiting = gevent.spawn(conn.post, {}, b"")
        gevent.sleep(0.2)  # it sent and waits for the answer
        assert conn._sock is not None
        waiting.kill()  # Locust stopping a user mid-request
        assert conn._sock is None  # its state unknown: closed, the next request reconnects
    finally:
        released.set()
    assert conn.post({}, b"")[0] == 200
    assert server.connections == 2


def test_the_default_follows_gevent_patching() -> None:
    assert Connection("http://127.0.0.1:1").green is False  # pytest: plain threads


def test_health_status_on_a_fresh_connection(serve: Callable[..., ScriptedServer]) -> None:
    unavailable = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    server = serve([ok(b'{"status":"ok"}'), lambda _: unavailable, lambda _: b"SSH-2.0\r\n\r\n"])
    assert get_status(server.endpoint, "/health", 1.0) == 200
    assert server.requests[0].startswith(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:")
    assert get_status(server.endpoint + "/", "/health", 1.0) == 503
    with pytest.raises(BadResponse):
        get_status(server.endpoint, "/health", 1.0)
    assert server.connections == 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(ConnectionRefusedError):
            get_status(f"http://127.0.0.1:{s.getsockname()[1]}", "/health", 1.0)
