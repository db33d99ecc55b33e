"""The Toxiproxy link mesh: planning (pure) and faults on a real toxiproxy-server.

The server tests start the real binary from .venv/bin on 127.0.0.1 and tiny asyncio upstreams
on other 127.x addresses (echo, storage-style frames, HTTP, one that pushes on connect, one that
only listens), then check each fault through real connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import queue
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.backends.local import build_config
from chaos.links import LINKED_ROLES
from chaos.mesh import (
    Link,
    LinkMesh,
    MeshError,
    MeshNotFound,
    SlicerToxic,
    plan_links,
    wait_ready,
    with_mesh,
)
from chaos.probe import probe
from cluster.config import Role
from cluster.storage.wire import encode_frame, read_frame
from tests.local_nodes import free_port

BINARY = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "toxiproxy-server"
API_HOST = "127.0.0.1"
UPSTREAM_HOST = "127.0.0.2"
CUT_PROBE = 0.5  # seconds a probe waits for an answer through a cut link
# Bounds for what should arrive through a working link: a reply comes at once on a quiet machine,
# and later beside CPU hogs; a wait returns when it arrives, so these only bound a hang.
REACH = 30.0
HANG = 5.0  # a cut link's probe returns after CUT_PROBE; this much later means it hung


def start_toxiproxy(
    binary: Path, host: str, port: int, log: Path, seed: int | None = None
) -> subprocess.Popen[bytes]:
    """Start ``toxiproxy-server`` with its API on ``host:port`` (a loopback IP) only.

    It runs in its own session, so a Ctrl-C meant for the orchestrator does not take the links
    down before the orchestrator has healed them. ``seed`` fixes the randomness of jitter and
    toxicity. Output goes to ``log``; wait for it with ``wait_ready``.
    """
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the Toxiproxy API must listen on a loopback address, not {host}")
    if not binary.is_file():
        raise FileNotFoundError(f"no Toxiproxy server at {binary} (install it: make toxiproxy)")
    argv = [str(binary), "-host", host, "-port", str(port)]
    if seed is not None:
        argv += ["-seed", str(seed)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# --- planning (pure) ---------------------------------------------------------------------------


def test_plan_links_covers_exactly_the_pairs_that_talk(tmp_path: Path) -> None:
    config = build_config("3x2x1", tmp_path)
    links = plan_links(config, "127.0.0.1", 21000)

    ids = {role: {p.id for p in config.processes_with_role(role)} for role in config_roles()}
    expected = {(s, d) for src, dst in LINKED_ROLES for s in ids[src] for d in ids[dst] if s != d}
    assert set(links) == expected
    by_kind: dict[tuple[str, str], int] = {}
    for link in links.values():
        kind = (config.process(link.src).role, config.process(link.dst).role)
        by_kind[kind] = by_kind.get(kind, 0) + 1
    assert by_kind == {
        ("storage", "storage"): 6 * 5,
        ("router", "storage"): 3 * 6,
        ("router", "memds"): 3 * 3,
        ("router", "gac"): 3 * 1,
        ("memds", "storage"): 3 * 6,
        ("storage", "memds"): 6 * 3,
    }
    assert len(links) == 96


def config_roles() -> tuple[Role, ...]:
    return ("storage", "router", "memds", "gac")


def test_plan_links_names_addresses_and_ports(tmp_path: Path) -> None:
    config = build_config("3x2x1", tmp_path)
    links = plan_links(config, "127.0.0.1", 21000)

    link = links["sn-a1", "sn-b1"]
    assert link.name == "sn-a1>sn-b1"
    assert link.upstream == config.process("sn-b1").listen
    assert link.dst_role == "storage" and link.protocol == "frames"
    assert links["rt-a", "gac"].protocol == "http"
    ports = sorted(int(x.listen.rsplit(":", 1)[1]) for x in links.values())
    assert ports == list(range(21000, 21096))
    assert all(x.listen.startswith("127.0.0.1:") for x in links.values())
    assert plan_links(config, "127.0.0.1", 21000) == links  # deterministic


def test_plan_links_rejects_bad_hosts_and_ports(tmp_path: Path) -> None:
    config = build_config("3x2x1", tmp_path)
    with pytest.raises(ValueError):
        plan_links(config, "localhost", 21000)
    with pytest.raises(ValueError):
        plan_links(config, "127.0.0.1", 65500)


def test_with_mesh_rewrites_dial_addresses(tmp_path: Path) -> None:
    config = build_config("3x2x1", tmp_path)
    links = plan_links(config, "127.0.0.1", 21000)

    meshed = with_mesh(config, links)

    assert config.dial == {}  # the original is untouched
    for (src, dst), link in links.items():
        assert meshed.dial_address(src, dst) == link.listen
    assert meshed.dial_map("rt-a", "storage") == {
        n: links["rt-a", n].listen for n in ("sn-a1", "sn-a2", "sn-b1", "sn-b2", "sn-c1", "sn-c2")
    }
    assert meshed.dial_address("md-a", "gac") == config.process("gac").listen  # no such link


def test_start_toxiproxy_refuses_a_non_loopback_api(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_toxiproxy(BINARY, "0.0.0.0", 8474, tmp_path / "tp.log")


def test_bad_arguments_and_a_dead_api_fail_clearly() -> None:
    mesh = LinkMesh("http://127.0.0.1:1", timeout=0.2)
    with pytest.raises(ValueError):
        mesh.cut(["a>b"], toxic_name="has:colon")
    with pytest.raises(ValueError):
        mesh.degrade(["a>b"], toxic_name="f1")  # nothing to degrade
    with pytest.raises(ValueError):
        LinkMesh("127.0.0.1:8474")
    with pytest.raises(MeshError, match="unreachable"):
        mesh.proxies()  # nothing listens on port 1


# --- upstream servers --------------------------------------------------------------------------


class Upstreams:
    """Tiny asyncio servers on UPSTREAM_HOST, run by a loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.received: queue.Queue[bytes] = queue.Queue()  # what the sink got
        self.servers: list[asyncio.Server] = []
        self.echo = self._serve(self._echo)
        self.frames = self._serve(self._frames)
        self.http = self._serve(self._http)
        self.pusher = self._serve(self._push)
        self.sink = self._serve(self._sink)

    def _serve(self, handler: Callable[..., object]) -> str:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(handler, UPSTREAM_HOST, 0)  # type: ignore[arg-type]

        server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)
        self.servers.append(server)
        return f"{UPSTREAM_HOST}:{server.sockets[0].getsockname()[1]}"

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await read_frame(reader) != {"hello": "client"}:
                return  # a storage node drops such a connection: the probe must fail
            while await read_frame(reader) == {"id": 1, "op": "status"}:
                writer.write(encode_frame({"id": 1, "node": "fake", "replicas": []}))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /health "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def _push(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"pushed")
        await writer.drain()
        await reader.read()  # hold the connection until the client leaves
        writer.close()

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            self.received.put(data)
        writer.close()

    def close(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    servers = Upstreams()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not BINARY.is_file():
        pytest.skip(f"toxiproxy-server not installed at {BINARY} (run: make toxiproxy)")
    port = free_port(API_HOST)
    log = tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log"
    proc = start_toxiproxy(BINARY, API_HOST, port, log, seed=1)
    url = f"http://{API_HOST}:{port}"
    try:
        wait_ready(url, timeout=10, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except Exception:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def mesh(api_url: str) -> Iterator[LinkMesh]:
    mesh = LinkMesh(api_url, timeout=5)
    try:
        yield mesh
    finally:
        mesh.ensure([], prune=True)  # every proxy gone: the next test starts clean


def link_to(upstream: str, dst_role: Role = "storage", name: str = "a>b") -> Link:
    src, dst = name.split(">")
    listen = f"{API_HOST}:{free_port(API_HOST)}"
    return Link(src=src, dst=dst, name=name, listen=listen, upstream=upstream, dst_role=dst_role)


def connect(link: Link) -> socket.socket:
    host, port = link.listen.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=REACH)


def recv_some(sock: socket.socket, timeout: float) -> bytes:
    """Whatever arrives within ``timeout`` (b"" if nothing does)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return b""


def sink_got(upstreams: Upstreams, marker: bytes, timeout: float) -> bool:
    """True once the sink has received ``marker`` (within ``timeout``)."""
    deadline = time.monotonic() + timeout
    seen = b""
    for _ in range(1000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            seen += upstreams.received.get(timeout=left)
        except queue.Empty:
            break
        if marker in seen:
            return True
    return False


def echo_round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    got = b""
    for _ in range(100):
        if len(got) >= len(payload):
            break
        chunk = sock.recv(4096)
        assert chunk, "echo connection closed"
        got += chunk
    assert got == payload
    return time.monotonic() - started


def best_round_trip(sock: socket.socket, tries: int = 5) -> float:
    """The fastest of a few echo round trips: what the link adds, without the moments a busy
    machine did not schedule the test, Toxiproxy or the echo server (that only adds time)."""
    return min(echo_round_trip(sock) for _ in range(tries))


# --- on a real toxiproxy-server ----------------------------------------------------------------

slow = pytest.mark.slow


@slow
def test_api_listens_on_the_loopback_host_only(api_url: str, mesh: LinkMesh) -> None:
    port = int(api_url.rsplit(":", 1)[1])
    assert mesh.version()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.3", port), timeout=1).close()


@slow
def test_ensure_is_idempotent_and_repairs(mesh: LinkMesh, upstreams: Upstreams) -> None:
    a, b = link_to(upstreams.frames, name="n1>n2"), link_to(upstreams.echo, name="n2>n1")

    first = mesh.ensure([a, b])
    second = mesh.ensure([a, b])

    assert sorted(first.created) == ["n1>n2", "n2>n1"]
    assert sorted(second.unchanged) == ["n1>n2", "n2>n1"] and not second.created
    proxies = mesh.proxies()
    assert (proxies["n1>n2"].listen, proxies["n1>n2"].upstream) == (a.listen, a.upstream)
    assert probe(a, timeout=REACH).reachable

    moved = Link(a.src, a.dst, a.name, a.listen, upstreams.echo, "storage")
    mesh.disable([b])
    third = mesh.ensure([moved, b])
    assert third.recreated == ("n1>n2",) and third.enabled == ("n2>n1",)
    assert mesh.proxies()["n1>n2"].upstream == upstreams.echo

    stray = link_to(upstreams.echo, name="x>y")
    mesh.ensure([stray])
    assert "x>y" in mesh.proxies()
    assert mesh.ensure([moved, b], prune=True).removed == ("x>y",)
    assert set(mesh.proxies()) == {"n1>n2", "n2>n1"}


@slow
def test_ensure_creates_the_whole_planned_mesh(
    mesh: LinkMesh, tmp_path: Path, api_url: str
) -> None:
    links = plan_links(build_config("3x2x1", tmp_path), API_HOST, free_block(API_HOST, 96))

    assert len(mesh.ensure(links.values()).created) == 96
    assert len(mesh.ensure(links.values()).unchanged) == 96
    assert {p.listen for p in mesh.proxies().values()} == {x.listen for x in links.values()}


def free_block(host: str, size: int) -> int:
    """A first port with ``size`` free ports after it, below the ephemeral range (bounded)."""
    rng = random.Random()
    for _ in range(50):
        start = rng.randrange(20000, 32000 - size)
        socks: list[socket.socket] = []
        try:
            for port in range(start, start + size):
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Toxiproxy binds
                s.bind((host, port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip(f"no block of {size} free ports on {host}")


@slow
def test_cut_makes_probe_unreachable_and_removing_it_restores(
    mesh: LinkMesh, upstreams: Upstreams
) -> None:
    node = link_to(upstreams.frames, "storage", "sn-a1>sn-b1")
    router = link_to(upstreams.http, "router", "md-a>rt-a")
    mesh.ensure([node, router])
    assert probe(node, timeout=REACH).reachable, probe(node).detail
    assert probe(router, timeout=REACH).detail == "HTTP 200"

    added = mesh.cut([node, router], toxic_name="f1")

    assert {(r.proxy, r.type, r.stream) for r in added} == {
        (x, "timeout", s) for x in (node.name, router.name) for s in ("upstream", "downstream")
    }
    for link in (node, router):
        result = probe(link, timeout=CUT_PROBE)
        assert not result.reachable and "no reply" in result.detail
        assert result.elapsed < CUT_PROBE + HANG
    mesh.remove_toxics(added)
    assert probe(node, timeout=REACH).reachable and probe(router, timeout=REACH).reachable
    assert mesh.toxics(node) == [] and mesh.toxics(router) == []


@slow
def test_a_cut_keeps_connections_open_until_it_heals(mesh: LinkMesh, upstreams: Upstreams) -> None:
    link = link_to(upstreams.echo)
    mesh.ensure([link])
    with connect(link) as sock:
        echo_round_trip(sock)
        mesh.cut([link], toxic_name="f1")
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # swallowed, yet neither reset nor closed
        mesh.remove([link], "f1")
        sock.settimeout(REACH)
        assert sock.recv(4096) == b""  # Toxiproxy closes connections when a timeout toxic goes
    with connect(link) as sock:
        assert best_round_trip(sock) < 0.5  # new connections work again


@slow
def test_one_way_cut_stops_only_that_direction(mesh: LinkMesh, upstreams: Upstreams) -> None:
    push = link_to(upstreams.pusher, name="p>q")  # data flows downstream on connect
    sink = link_to(upstreams.sink, name="q>p")  # data flows upstream only
    mesh.ensure([push, sink])

    up = mesh.cut([push, sink], "upstream", toxic_name="up")
    assert {r.stream for r in up} == {"upstream"}
    with connect(push) as sock:
        assert recv_some(sock, REACH) == b"pushed"  # downstream still flows
    with connect(sink) as sock:
        sock.sendall(b"marker-1")
        assert not sink_got(upstreams, b"marker-1", 0.5)  # upstream swallowed
    mesh.remove_toxics(up)

    mesh.cut([push, sink], "downstream", toxic_name="down")
    with connect(push) as sock:
        assert recv_some(sock, 0.5) == b""  # downstream swallowed
    with connect(sink) as sock:
        sock.sendall(b"marker-2")
        assert sink_got(upstreams, b"marker-2", REACH)  # upstream flows
    mesh.remove([push, sink], "down")


@slow
def test_two_faults_on_one_link_heal_independently(mesh: LinkMesh, upstreams: Upstreams) -> None:
    link = link_to(upstreams.frames)
    mesh.ensure([link])

    mesh.cut([link], toxic_name="f1")
    mesh.cut([link], "downstream", toxic_name="f2")
    mesh.cut([link], toxic_name="f2")  # applying a fault again is fine
    assert len(mesh.toxics(link)) == 4

    removed = mesh.remove([link], "f1")
    assert {r.name for r in removed} == {"f1:timeout:upstream", "f1:timeout:downstream"}
    assert not probe(link, timeout=CUT_PROBE).reachable  # f2 still cuts
    assert mesh.remove([link], "f1") == []  # idempotent
    assert mesh.remove(["no>such"], "f1") == []  # a missing proxy too

    mesh.degrade([link], latency_ms=100, toxic_name="f3", direction="downstream")
    mesh.remove([link], "f2")
    result = probe(link, timeout=REACH)
    assert result.reachable and result.elapsed >= 0.08  # f3 still slows it down
    assert [t.name for t in mesh.toxics(link)] == ["f3:latency:downstream"]


@slow
def test_degrade_adds_latency_and_other_toxics(mesh: LinkMesh, upstreams: Upstreams) -> None:
    link = link_to(upstreams.echo)
    mesh.ensure([link])
    with connect(link) as sock:
        assert best_round_trip(sock) < 0.15

        added = mesh.degrade([link], latency_ms=200, toxic_name="slow", direction="upstream")
        assert [(r.type, r.stream) for r in added] == [("latency", "upstream")]
        assert echo_round_trip(sock) >= 0.15

        mesh.remove_toxics(added)
        assert best_round_trip(sock) < 0.15

    added = mesh.degrade(
        [link],
        latency_ms=5,
        jitter_ms=2,
        bandwidth_kbps=100,
        slicer=SlicerToxic(average_size=8, size_variation=4, delay_us=50),
        slow_close_ms=10,
        toxic_name="all",
    )
    toxics = {t.name: t for t in mesh.toxics(link)}
    assert len(added) == len(toxics) == 8  # four toxics, both directions
    assert toxics["all:latency:upstream"].attributes == {"latency": 5, "jitter": 2}
    assert toxics["all:bandwidth:downstream"].attributes == {"rate": 100}
    assert toxics["all:slicer:upstream"].attributes["average_size"] == 8
    assert toxics["all:slow_close:downstream"].attributes == {"delay": 10}
    with connect(link) as sock:
        assert echo_round_trip(sock, b"x" * 64) < REACH  # slow but working


@slow
def test_reset_peer_resets_connections(mesh: LinkMesh, upstreams: Upstreams) -> None:
    link = link_to(upstreams.frames)
    mesh.ensure([link])

    mesh.reset_peer([link], toxic_name="rst")

    result = probe(link, timeout=CUT_PROBE)
    assert not result.reachable
    assert "reset" in result.detail or "closed" in result.detail, result.detail
    mesh.remove([link], "rst")
    assert probe(link, timeout=REACH).reachable


@slow
def test_disable_and_enable(mesh: LinkMesh, upstreams: Upstreams) -> None:
    link = link_to(upstreams.http, "gac")
    mesh.ensure([link])

    assert mesh.disable([link]) == [link.name]
    assert mesh.disable([link.name]) == []  # already disabled
    result = probe(link)
    assert not result.reachable and "refused" in result.detail
    assert mesh.enable([link]) == [link.name]
    assert probe(link, timeout=REACH).reachable
    with pytest.raises(MeshNotFound):
        mesh.cut(["no>such"], toxic_name="f1")


@slow
def test_reset_clears_everything(mesh: LinkMesh, upstreams: Upstreams) -> None:
    links = [link_to(upstreams.frames, name=f"s{i}>t{i}") for i in range(3)]
    mesh.ensure(links)
    mesh.cut(links[:1], toxic_name="f1")
    mesh.degrade(links[1:2], latency_ms=300, toxic_name="f2")
    mesh.reset_peer(links[1:2], toxic_name="f3")
    mesh.disable(links[2:])

    mesh.reset()

    proxies = mesh.proxies()
    assert all(p.enabled and not p.toxics for p in proxies.values())
    assert all(probe(link, timeout=REACH).reachable for link in links)
