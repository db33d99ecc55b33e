"""The Toxiproxy link mesh: every cluster link runs through its own proxy, so faults are toxics.

One proxy per directed pair of processes that talk to each other (``src>dst``). The backend
writes ``dial[src][dst] = proxy`` into the cluster config, so ``src`` reaches ``dst`` only
through it; a partition, a one-way cut or a slow link is then a set of toxics on named proxies,
and each fault's toxics carry the fault's name so that faults on the same link heal
independently.

    links = plan_links(config, "127.0.0.1", 21000)     # {("sn-a1", "sn-b1"): Link, ...}
    config = with_mesh(config, links)                   # processes dial the proxies
    mesh = LinkMesh("http://127.0.0.1:8474")
    mesh.ensure(links.values())
    added = mesh.cut([links["sn-a1", "sn-b1"]], "upstream", toxic_name="f7")
    probe(links["sn-a1", "sn-b1"]).reachable            # False: the cut landed (chaos/probe.py)
    mesh.remove_toxics(added)                           # or mesh.remove(links.values(), "f7")

Directions follow Toxiproxy: *upstream* is data from the dialing process to the dialed one,
*downstream* the answers. Node-to-node links are one-way (a process sends only on connections
it opened), so cutting "a to b" is exactly the proxy ``a>b``; a partition between two sides
cuts both ``a>b`` and ``b>a``. Healing a cut closes the connections it held open (see
``LinkMesh.cut``).

``LinkMesh`` is a thin layer over toxiproxy-python's HTTP client (``toxiproxy.api.APIConsumer``
and its error mapping). That library keeps the API address in class attributes shared by the
whole process, calls ``requests`` without a timeout, lets 5xx answers pass as success and has
no call to update a toxic; its ``Proxy`` objects talk to that shared address. So each mesh
uses a subclass of the consumer bound to its own address, passes a timeout on every call and
makes the calls the library lacks (update a toxic, list toxics, ``/reset``) through it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import requests
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaos.links import linked_pairs
from cluster.config import ClusterConfig, Role

Direction = Literal["both", "upstream", "downstream"]
Stream = Literal["upstream", "downstream"]

_FAULT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_PARALLEL_CALLS = 16  # concurrent calls to the Toxiproxy API when applying a fault
_STREAMS: dict[Direction, tuple[Stream, ...]] = {
    "both": ("upstream", "downstream"),
    "upstream": ("upstream",),
    "downstream": ("downstream",),
}


class MeshError(Exception):
    """Toxiproxy is unreachable or refused a request."""


class MeshNotFound(MeshError):
    """No such proxy or toxic (HTTP 404)."""


class MeshConflict(MeshError):
    """The proxy or toxic exists already (HTTP 409)."""


# --- plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One directed link ``src -> dst``: a proxy listening at ``listen`` forwarding to ``upstream``.

    ``dst_role`` says which protocol the far end speaks (storage: msgpack frames, else HTTP).
    """

    src: str
    dst: str
    name: str
    listen: str
    upstream: str
    dst_role: Role

    @property
    def protocol(self) -> Literal["frames", "http"]:
        return "frames" if self.dst_role == "storage" else "http"


def link_name(src: str, dst: str) -> str:
    return f"{src}>{dst}"


def plan_links(config: ClusterConfig, host: str, first_port: int) -> dict[tuple[str, str], Link]:
    """A proxy for every directed pair of processes that talk, on ``host`` from ``first_port``.

    Pure and deterministic: pairs are numbered as ``chaos.links.linked_pairs`` orders them, so
    the same config always gets the same ports. ``host`` must be an IP
    literal (Toxiproxy reports listen addresses resolved, and ``ensure`` compares them).
    """
    ipaddress.ip_address(host)  # ValueError for a name
    ids_by_role: dict[str, list[str]] = {}
    for p in config.processes.values():
        ids_by_role.setdefault(p.role, []).append(p.id)
    pairs = linked_pairs(ids_by_role)
    if first_port < 1 or first_port + len(pairs) - 1 > 65535:
        raise ValueError(f"{len(pairs)} proxies do not fit in ports {first_port}..65535")
    links: dict[tuple[str, str], Link] = {}
    for i, (src, dst) in enumerate(pairs):
        target = config.process(dst)
        links[src, dst] = Link(
            src=src,
            dst=dst,
            name=link_name(src, dst),
            listen=_join(host, first_port + i),
            upstream=target.listen,
            dst_role=target.role,
        )
    return links


def with_mesh(config: ClusterConfig, links: Mapping[tuple[str, str], Link]) -> ClusterConfig:
    """``config`` with ``dial[src][dst]`` pointing at each link's proxy (other entries kept)."""
    dial = {src: dict(targets) for src, targets in config.dial.items()}
    for link in links.values():
        config.process(link.src)
        config.process(link.dst)  # both must exist: KeyError otherwise
        dial.setdefault(link.src, {})[link.dst] = link.listen
    return config.model_copy(update={"dial": dial})


def toxic_name_for(fault: str, toxic_type: str, stream: Stream) -> str:
    """The name of one toxic of a fault: ``<fault>:<type>:<stream>``."""
    return f"{fault}:{toxic_type}:{stream}"


# --- what the server holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class ToxicRef:
    """A toxic a fault added: enough to remove exactly it."""

    proxy: str
    name: str
    type: str
    stream: Stream


@dataclass(frozen=True)
class ToxicState:
    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyState:
    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[ToxicState, ...] = ()


@dataclass(frozen=True)
class EnsureResult:
    """What ``ensure`` did, by proxy name."""

    created: tuple[str, ...] = ()
    recreated: tuple[str, ...] = ()
    enabled: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlicerToxic:
    """Toxiproxy's ``slicer``: split data into chunks of about ``average_size`` bytes."""

    average_size: int = 64
    size_variation: int = 32
    delay_us: int = 10  # between chunks, microseconds


# --- the client --------------------------------------------------------------------------------


class LinkMesh:
    """The proxies and toxics of one Toxiproxy server at ``api_url`` (``http://host:port``).

    Every call is one or a few HTTP requests, each bounded by ``timeout`` seconds; failures raise
    ``MeshError``. Links may be given as ``Link`` objects or proxy names.
    """

    def __init__(self, api_url: str, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(api_url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"expected http://host:port for the Toxiproxy API, got {api_url!r}")
        self.api_url = f"http://{parts.hostname}:{parts.port}"
        self.timeout = timeout
        # toxiproxy-python's consumer reads host and port from class attributes: a subclass per
        # mesh keeps two meshes (or a mesh and the library's own classes) from sharing them.
        self._api: Any = type(
            "MeshAPIConsumer", (APIConsumer,), {"host": parts.hostname, "port": parts.port}
        )

    # -- HTTP, through toxiproxy-python's consumer with a timeout --------------------------------

    def _call(self, method: Literal["get", "post", "delete"], path: str, body: Any = None) -> Any:
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if body is not None:
            kwargs["json"] = body
        try:
            response = getattr(self._api, method)(path, **kwargs)
        except requests.RequestException as exc:
            raise MeshError(f"Toxiproxy at {self.api_url} unreachable: {exc}") from exc
        except NotFound as exc:
            raise MeshNotFound(f"{method.upper()} {path}: {_message(exc)}") from exc
        except ProxyExists as exc:  # the library's name for any 409, toxics included
            raise MeshConflict(f"{method.upper()} {path}: {_message(exc)}") from exc
        except InvalidToxic as exc:  # the library's name for any 400
            raise MeshError(f"{method.upper()} {path}: {_message(exc)}") from exc
        if response.status_code >= 300:  # the library lets 5xx (bind failures) pass silently
            raise MeshError(f"{method.upper()} {path}: {_message(response.content)}")
        return response.json() if response.content else None

    def version(self) -> str:
        return str(self._call("get", "/version")["version"])

    def proxies(self) -> dict[str, ProxyState]:
        """Every proxy on the server, with its toxics."""
        raw: dict[str, Any] = self._call("get", "/proxies")
        return {name: _proxy_state(body) for name, body in raw.items()}

    def toxics(self, link: Link | str) -> list[ToxicState]:
        raw: list[Any] = self._call("get", _toxics_path(_name(link)))
        return [_toxic_state(t) for t in raw]

    # -- proxies ----------------------------------------------------------------------------------

    def ensure(self, links: Iterable[Link], prune: bool = False) -> EnsureResult:
        """Make every link's proxy exist, listening where planned and enabled (idempotent).

        A proxy whose listen or upstream differs is recreated (losing its toxics); one that holds
        a listen address another link needs is removed, as is, with ``prune``, every proxy not
        in ``links``. Toxics on unchanged proxies stay: heal with ``reset`` or ``remove``.
        """
        wanted: dict[str, Link] = {}
        listens: dict[str, str] = {}
        for link in links:
            if wanted.setdefault(link.name, link) != link:
                raise ValueError(f"two different links named {link.name!r}")
            if listens.setdefault(link.listen, link.name) != link.name:
                raise ValueError(f"{link.name} and {listens[link.listen]} both on {link.listen}")
        existing = self.proxies()
        removed: list[str] = []
        recreated: list[str] = []
        for name, state in existing.items():  # first free every address that will be needed
            planned = wanted.get(name)
            if planned is None:
                if prune or state.listen in listens:
                    self._delete_proxy(name)
                    removed.append(name)
            elif (state.listen, state.upstream) != (planned.listen, planned.upstream):
                self._delete_proxy(name)
                recreated.append(name)
        created: list[str] = []
        enabled: list[str] = []
        unchanged: list[str] = []
        for name, link in wanted.items():
            current = existing.get(name)
            if current is None or name in recreated:
                body = {"name": name, "listen": link.listen, "upstream": link.upstream}
                self._call("post", "/proxies", {**body, "enabled": True})
                if current is None:
                    created.append(name)
            elif not current.enabled:
                self._set_enabled(name, True)
                enabled.append(name)
            else:
                unchanged.append(name)
        return EnsureResult(
            tuple(created), tuple(recreated), tuple(enabled), tuple(unchanged), tuple(removed)
        )

    def reset(self) -> None:
        """Remove every toxic and enable every proxy (Toxiproxy's ``POST /reset``)."""
        self._call("post", "/reset")

    def disable(self, links: Iterable[Link | str]) -> list[str]:
        """Disable proxies: connections drop and new ones are refused. Returns those changed.

        Unlike toxics, a proxy's enabled flag is one bit per link: two faults that disable the
        same link do not heal independently.
        """
        return self._set_all(links, False)

    def enable(self, links: Iterable[Link | str]) -> list[str]:
        """Enable proxies again. Returns the names of those that were disabled."""
        return self._set_all(links, True)

    def _set_all(self, links: Iterable[Link | str], enabled: bool) -> list[str]:
        names = [_name(link) for link in links]
        states = self.proxies()
        missing = [n for n in names if n not in states]
        if missing:
            raise MeshNotFound(f"no proxies {missing} (call ensure first)")
        changed = [n for n in dict.fromkeys(names) if states[n].enabled != enabled]
        for name in changed:
            self._set_enabled(name, enabled)
        return changed

    def _set_enabled(self, name: str, enabled: bool) -> None:
        self._call("post", _proxy_path(name), {"enabled": enabled})

    def _delete_proxy(self, name: str) -> None:
        with contextlib.suppress(MeshNotFound):
            self._call("delete", _proxy_path(name))

    # -- faults -----------------------------------------------------------------------------------

    def cut(
        self, links: Iterable[Link | str], direction: Direction = "both", *, toxic_name: str
    ) -> list[ToxicRef]:
        """A silent partition: the ``timeout`` toxic with timeout 0 in ``direction``.

        Connections stay open and data is swallowed while the toxic is there. Removing it
        closes the connections that were open across the cut (Toxiproxy's timeout toxic does so
        on removal): healed peers see EOF and redial, and new connections pass at once.
        """
        return self._add(links, toxic_name, direction, [("timeout", {"timeout": 0})])

    def degrade(
        self,
        links: Iterable[Link | str],
        latency_ms: int = 0,
        jitter_ms: int = 0,
        bandwidth_kbps: int | None = None,
        slicer: SlicerToxic | None = None,
        slow_close_ms: int = 0,
        *,
        toxic_name: str,
        direction: Direction = "both",
    ) -> list[ToxicRef]:
        """A slow link; each given aspect is one toxic per stream of ``direction``.

        ``latency_ms`` (+/- ``jitter_ms``) is added in each direction, so a request/response
        round trip over ``"both"`` gains twice as much. ``bandwidth_kbps`` is Toxiproxy's
        ``bandwidth`` rate, which is in kilobytes (not kilobits) per second.
        """
        specs: list[tuple[str, dict[str, int]]] = []
        if latency_ms < 0 or jitter_ms < 0 or slow_close_ms < 0:
            raise ValueError("latency, jitter and slow-close delays cannot be negative")
        if latency_ms or jitter_ms:
            specs.append(("latency", {"latency": latency_ms, "jitter": jitter_ms}))
        if bandwidth_kbps is not None:
            if bandwidth_kbps <= 0:
                raise ValueError("bandwidth must be positive (Toxiproxy ignores a rate of 0)")
            specs.append(("bandwidth", {"rate": bandwidth_kbps}))
        if slicer is not None:
            attrs = {
                "average_size": slicer.average_size,
                "size_variation": slicer.size_variation,
                "delay": slicer.delay_us,
            }
            specs.append(("slicer", attrs))
        if slow_close_ms:
            specs.append(("slow_close", {"delay": slow_close_ms}))
        if not specs:
            raise ValueError("degrade needs latency, jitter, bandwidth, slicer or slow_close")
        return self._add(links, toxic_name, direction, specs)

    def reset_peer(
        self,
        links: Iterable[Link | str],
        timeout_ms: int = 0,
        *,
        toxic_name: str,
        direction: Direction = "both",
    ) -> list[ToxicRef]:
        """Connections are reset (TCP RST) after ``timeout_ms`` (0: at once)."""
        if timeout_ms < 0:
            raise ValueError("timeout cannot be negative")
        return self._add(links, toxic_name, direction, [("reset_peer", {"timeout": timeout_ms})])

    def remove(self, links: Iterable[Link | str], toxic_name: str) -> list[ToxicRef]:
        """Remove fault ``toxic_name``'s toxics from ``links`` (idempotent). Returns what went.

        Toxics of other faults stay; a link or toxic that is already gone is fine.
        """
        _check_fault(toxic_name)

        def remove_from(name: str) -> list[ToxicRef]:
            try:
                toxics = self.toxics(name)
            except MeshNotFound:
                return []
            gone = []
            for toxic in toxics:
                if toxic.name.split(":")[0] == toxic_name and toxic.name.count(":") == 2:
                    ref = ToxicRef(name, toxic.name, toxic.type, toxic.stream)
                    self._delete_toxic(ref)
                    gone.append(ref)
            return gone

        # In parallel, like _add: a heal must end the fault at once, not over seconds of calls.
        names = list(dict.fromkeys(_name(link) for link in links))
        with ThreadPoolExecutor(max_workers=_PARALLEL_CALLS) as pool:
            return [ref for refs in pool.map(remove_from, names) for ref in refs]

    def remove_toxics(self, refs: Iterable[ToxicRef]) -> None:
        """Remove exactly these toxics (as returned by a fault); missing ones are fine."""
        for ref in refs:
            self._delete_toxic(ref)

    def _delete_toxic(self, ref: ToxicRef) -> None:
        with contextlib.suppress(MeshNotFound):
            self._call("delete", f"{_toxics_path(ref.proxy)}/{_quote(ref.name)}")

    def _add(
        self,
        links: Iterable[Link | str],
        fault: str,
        direction: Direction,
        specs: list[tuple[str, dict[str, int]]],
    ) -> list[ToxicRef]:
        """Add (or update) each toxic of ``specs`` on every link; all or nothing."""
        _check_fault(fault)
        streams = _STREAMS[direction]
        todo = [
            (ToxicRef(proxy, toxic_name_for(fault, kind, stream), kind, stream), attrs)
            for proxy in dict.fromkeys(_name(link) for link in links)
            for kind, attrs in specs
            for stream in streams
        ]
        # In parallel: an AZ split is ~100 toxics, and a fault should land at once, not trickle
        # in over seconds of sequential API calls.
        with ThreadPoolExecutor(max_workers=_PARALLEL_CALLS) as pool:
            futures = {pool.submit(self._put_toxic, ref, attrs): ref for ref, attrs in todo}
            wait(futures)
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            with contextlib.suppress(Exception):
                self.remove_toxics(ref for f, ref in futures.items() if f.exception() is None)
            raise errors[0]
        return [ref for ref, _ in todo]

    def _put_toxic(self, ref: ToxicRef, attributes: dict[str, int]) -> None:
        body = {"name": ref.name, "type": ref.type, "stream": ref.stream, "toxicity": 1.0}
        try:
            self._call("post", _toxics_path(ref.proxy), {**body, "attributes": attributes})
        except MeshConflict:  # this fault is applied already: update its attributes
            url = f"{_toxics_path(ref.proxy)}/{_quote(ref.name)}"
            self._call("post", url, {"attributes": attributes, "toxicity": 1.0})
        except MeshNotFound as exc:
            raise MeshNotFound(f"no proxy {ref.proxy!r} (call ensure first)") from exc


def _name(link: Link | str) -> str:
    return link if isinstance(link, str) else link.name


def _check_fault(fault: str) -> None:
    if not _FAULT_NAME.fullmatch(fault):
        raise ValueError(f"toxic name {fault!r}: use letters, digits, '_', '.', '-' (max 100)")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _proxy_path(name: str) -> str:
    return f"/proxies/{_quote(name)}"


def _toxics_path(name: str) -> str:
    return f"{_proxy_path(name)}/toxics"


def _message(content: Any) -> str:
    text = content.args[0] if isinstance(content, Exception) and content.args else content
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text).strip()


def _toxic_state(body: Mapping[str, Any]) -> ToxicState:
    return ToxicState(
        name=str(body["name"]),
        type=str(body["type"]),
        stream="upstream" if body.get("stream") == "upstream" else "downstream",
        toxicity=float(body.get("toxicity", 1.0)),
        attributes=dict(body.get("attributes") or {}),
    )


def _proxy_state(body: Mapping[str, Any]) -> ProxyState:
    return ProxyState(
        name=str(body["name"]),
        listen=str(body["listen"]),
        upstream=str(body["upstream"]),
        enabled=bool(body["enabled"]),
        toxics=tuple(_toxic_state(t) for t in body.get("toxics") or ()),
    )


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the server --------------------------------------------------------------------------------


def wait_ready(
    api_url: str, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> str:
    """Wait until the API at ``api_url`` answers ``/version``; returns the version.

    Raises ``TimeoutError`` after ``timeout`` seconds, or ``MeshError`` at once if ``proc`` (the
    server) has exited.
    """
    deadline = time.monotonic() + timeout
    url = api_url.rstrip("/") + "/version"
    last = "no attempt"
    while True:
        if proc is not None and proc.poll() is not None:
            raise MeshError(f"toxiproxy-server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=min(1.0, timeout)) as response:
                body = response.read().decode(errors="replace")
                match = re.search(r'"version"\s*:\s*"([^"]*)"', body)
                return match.group(1) if match else body.strip()
        except OSError as exc:  # URLError included
            last = str(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Toxiproxy API at {api_url} not ready after {timeout:g}s: {last}")
        time.sleep(0.05)
