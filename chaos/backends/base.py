"""The backend base: everything about a deployed cluster that follows from its config, once.

A backend is where the cluster runs (local processes, Docker containers, Kubernetes pods). The
chaos orchestrator sees every backend through this class: the processes and their health, the
replicas' files, and the Toxiproxy mesh that carries every link, through which network faults
are applied. Faults are planned as data elsewhere (chaos/faults/) and applied by the nemesis
(chaos/nemesis.py) through these methods only.

Writing a new backend: subclass ``Backend``, set ``name`` and call ``super().__init__(data_dir,
config)`` with the ``ClusterConfig`` (cluster/config.py) whose process addresses your
deployment serves. Then implement exactly these:

- process control: ``alive``, ``start`` (power on, same data), ``kill`` (power off, SIGKILL or
  as close as the platform gets), ``pause`` and ``resume`` (freeze / thaw, like SIGSTOP/SIGCONT);
- lifecycle: ``up`` (create whatever is missing, start the mesh with ``start_mesh``, start every
  process, then ``wait_healthy``) and ``down`` (stop everything; ``wipe`` also deletes the data),
  plus whatever ``create`` / ``open`` classmethods your CLI needs;
- where things are: ``node_data_dir`` (a storage node's data directory as this host sees it),
  ``proxy_host`` (the IP Toxiproxy's API and proxies listen on) and ``start_toxiproxy``;
- ``logs_hint`` (where to look when a process fails); optionally ``down_reason``,
  ``may_answer`` (when ``alive`` is costly), ``endpoints`` (if clients reach routers
  elsewhere than at their configured address) and ``die_with_this_process`` (if the cluster's
  processes are children of the caller).

Everything else (process ids, topology, health, ``wait_healthy``, storage status, replica
paths, links, every network fault) is implemented here from the config and must not be
re-implemented.

    backend.kill("sn-b1"); backend.start("sn-b1")
    backend.pause("sn-a2"); backend.resume("sn-a2")
    backend.cut_links([("sn-a1", "sn-b1")], fault_id="f3")
    backend.remove_link_faults([("sn-a1", "sn-b1")], fault_id="f3")
"""

from __future__ import annotations

import json
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from chaos.links import LinkPair
from chaos.mesh import Link, LinkMesh, SlicerToxic, plan_links, wait_ready
from chaos.probe import ProbeResult, probe
from cluster import auth
from cluster.config import ClusterConfig, ProcessInfo, Role, new_secret
from cluster.storage import layout
from cluster.topology import Topology, parse_topology

TOXIPROXY_API_PORT, FIRST_PROXY_PORT = 8474, 21000
STORAGE_PORT, STORAGE_ADMIN_PORT = 7100, 7180
ROUTER_PORT, MEMDS_PORT, GAC_PORT = 8000, 7300, 7400
DEFAULT_ACCESS_KEY = "gameday"

#: The order processes start in (and stop in reverse): storage first, routers last.
START_ORDER = {"storage": 0, "gac": 1, "memds": 2, "router": 3}
#: Each role's (service, admin) port; a process whose role serves both on one port repeats it.
PORTS: dict[Role, tuple[int, int]] = {
    "storage": (STORAGE_PORT, STORAGE_ADMIN_PORT),
    "router": (ROUTER_PORT, ROUTER_PORT),
    "memds": (MEMDS_PORT, MEMDS_PORT),
    "gac": (GAC_PORT, GAC_PORT),
}

#: Where a backend puts a process: ``(role, az number from 1, its number among the AZ's
#: processes of that role, from 0) -> host``. The GAC is asked for as ``("gac", 1, 0)``.
HostPlan = Callable[[Role, int, int], str]


def plan_processes(topology: str, host: HostPlan) -> dict[str, ProcessInfo]:
    """Every process of ``topology`` (per AZ: storage nodes, MemDS, routers; then the GAC, in
    the first AZ) at the host ``host`` gives it and its role's standard ports."""
    topo = parse_topology(topology)
    processes: dict[str, ProcessInfo] = {}

    def add(process_id: str, role: Role, az: str, rack: str | None, at: tuple[int, int]) -> None:
        ip = host(role, *at)
        service, admin = PORTS[role]
        listen, admin_addr = f"{ip}:{service}", f"{ip}:{admin}"
        processes[process_id] = ProcessInfo(
            id=process_id, role=role, az=az, rack=rack, listen=listen, admin=admin_addr
        )

    for i, az in enumerate(topo.azs, start=1):
        for k, node in enumerate(n for n in topo.storage_nodes() if n.az == az):
            add(node.id, "storage", az, node.rack, (i, k))
        for k, spec in enumerate(p for p in topo.memds() if p.az == az):
            add(spec.id, "memds", az, None, (i, k))
        for k, spec in enumerate(p for p in topo.routers() if p.az == az):
            add(spec.id, "router", az, None, (i, k))
    add("gac", "gac", topo.azs[0], None, (1, 0))
    return processes


def new_config(topology: str, processes: dict[str, ProcessInfo], partitions: int) -> ClusterConfig:
    """A new cluster's config: its processes and fresh secrets (an API key, the internal key)."""
    return ClusterConfig(
        topology=topology,
        processes=processes,
        credentials={DEFAULT_ACCESS_KEY: new_secret()},
        internal_key=new_secret(),
        default_partitions=partitions,
    )


def saved_state(data_dir: Path, file: str, backend: str) -> str:
    """The backend's own state file in ``data_dir`` (``docker.json``, ``k8s.json``), read;
    FileNotFoundError saying how to start such a cluster when there is none."""
    path = data_dir / file
    if not path.exists():
        raise FileNotFoundError(
            f"no {backend} cluster in {data_dir} (start one with "
            f"'gameday cluster up --backend {backend}')"
        )
    return path.read_text()


def check_reopened(data_dir: Path, holds: str, wanted: str) -> None:
    """A cluster planned in ``data_dir`` before is used as it is: refuse another topology."""
    if holds != wanted:
        raise ValueError(
            f"{data_dir} holds a {holds} cluster; use it as is, or remove it with "
            f"'gameday cluster down --wipe' to start a {wanted} one"
        )


def refuse_foreign(data_dir: Path, backend: str) -> None:
    """``data_dir`` holds no cluster of ``backend``: refuse it if it holds another's."""
    if (data_dir / "cluster.json").exists():
        raise ValueError(
            f"{data_dir} holds a cluster of another backend than {backend}: stop and remove "
            "it ('gameday cluster down --wipe') or choose another --data-dir"
        )


class Backend(ABC):
    """A deployed cluster: its config, its processes, its replicas' files and its link mesh."""

    name: ClassVar[str] = ""
    #: how long ``up`` and ``wait_healthy`` wait for every process by default, in seconds
    startup_timeout: ClassVar[float] = 60.0
    #: how often ``wait_healthy`` asks a process again
    poll_interval: ClassVar[float] = 0.05
    #: how long ``start_mesh`` waits for the Toxiproxy API
    mesh_timeout: ClassVar[float] = 10.0

    def __init__(self, data_dir: Path, config: ClusterConfig) -> None:
        self.data_dir = data_dir
        self.config = config
        auth.install(config.internal_secret())  # this process may drop, dump and scrub
        self.state_dir = data_dir  # where active faults and the dead-man's lease live
        self._mesh: LinkMesh | None = None

    # --- what a backend implements -------------------------------------------------------------

    @abstractmethod
    def alive(self, process_id: str) -> bool:
        """Running (a paused process is alive)."""

    @abstractmethod
    def start(self, process_id: str) -> None:
        """Power on: start the process again on its own data (no-op when running)."""

    @abstractmethod
    def kill(self, process_id: str) -> None:
        """Power off: SIGKILL, or the platform's nearest equivalent (no-op when down)."""

    @abstractmethod
    def pause(self, process_id: str) -> None:
        """Freeze the process (SIGSTOP, the cgroup freezer, ...)."""

    @abstractmethod
    def resume(self, process_id: str) -> None:
        """Thaw a paused process (no-op when it is not paused)."""

    @abstractmethod
    def up(
        self, timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """Start the mesh and every process that is not running; wait until all are healthy."""

    @abstractmethod
    def down(self, wipe: bool = False) -> None:
        """Stop every process and the mesh; ``wipe`` also deletes the data."""

    @abstractmethod
    def node_data_dir(self, node_id: str) -> Path:
        """The storage node's data directory, as a path on this host."""

    @abstractmethod
    def proxy_host(self) -> str:
        """The IP address Toxiproxy's API and every proxy listen on."""

    @abstractmethod
    def start_toxiproxy(self) -> None:
        """Start the Toxiproxy server if it is not running (``start_mesh`` waits for it)."""

    @abstractmethod
    def logs_hint(self, process_id: str) -> str:
        """Where to read a process's output, for error messages: ``see <file>``."""

    def may_answer(self, process_id: str) -> bool:
        """A cheap look before asking a process over HTTP: False when it surely cannot answer.

        The default asks ``alive``; a backend whose ``alive`` is costly may answer True.
        """
        return self.alive(process_id)

    @property
    def supports_power_loss(self) -> bool:
        """Whether ``lose_unsynced`` works here (storage nodes on a power-loss layer)."""
        return False

    def lose_unsynced(self, node_id: str, *, torn: bool, seed: int) -> dict[str, Any]:
        """Power loss on a storage node: kill it (if running) and lose every byte its data
        directory did not fsync (with ``torn``, a prefix of the last unsynced write survives);
        ``start`` then powers it on with what was synced. Returns what was lost (files, bytes).

        Backends without a power-loss layer raise ``PowerLossUnsupported``.
        """
        raise PowerLossUnsupported(
            f"power loss needs the storage nodes on the power-loss layer: the {self.name} "
            "backend has none for this cluster (local and docker clusters get it when their "
            "scenario has power_loss faults, or with 'gameday cluster up --power-loss-layer')"
        )

    def down_reason(self, process_id: str) -> str:
        """Why a process that should be up is not, for error messages."""
        return "exited"

    def favour_load(self, pid: int) -> None:
        """Called by a run once it started its load generator (process ``pid``, the leader of
        a session of its own). A backend whose cluster shares this machine's cores as if they
        were its own may give it the CPU priority a machine of its own would have. The
        default does nothing."""
        return None

    def die_with_this_process(self) -> None:
        """Processes this backend starts from now on die with the calling process, even when it
        is SIGKILLed (a run that tears down the cluster it started). The default does nothing:
        containers and pods are no children of ours, and the watchdog removes them."""
        return None

    def endpoints(self) -> dict[str, str]:
        """Router id -> the DynamoDB endpoint clients use."""
        return {p: f"http://{self.config.process(p).listen}" for p in self.process_ids("router")}

    # --- derived from the config ---------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / "cluster.json"

    def topology(self) -> Topology:
        return parse_topology(self.config.topology)

    def process_ids(self, role: str | None = None) -> list[str]:
        """Process ids (of ``role``, or all) in start order: storage, gac, MemDS, routers."""
        ids = [p.id for p in self.config.processes.values() if role in (None, p.role)]
        return sorted(ids, key=lambda i: (START_ORDER[self.config.processes[i].role], i))

    def replica_dir(self, node_id: str, group: str) -> Path:
        """The files of ``group``'s replica on ``node_id`` (cluster/storage/layout.py)."""
        return layout.replica_dir(self.node_data_dir(node_id), group)

    def health_url(self, process_id: str) -> str:
        return f"http://{self.config.process(process_id).admin}/health"

    def health(self, process_id: str) -> dict[str, Any] | None:
        """The process's /health body, or None if it is down, paused or not answering."""
        if not self.may_answer(process_id):
            return None
        return get_json(self.health_url(process_id), 1.0)

    def storage_status(self, node_id: str) -> dict[str, Any] | None:
        """The storage node's ``/replicas`` body, or None if it is not answering."""
        return get_json(f"http://{self.config.process(node_id).admin}/replicas", 1.0)

    def wait_healthy(
        self, timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """Wait until every process answers /health, in start order; ``progress(id)`` per one.

        Raises RuntimeError at once when a process is down, TimeoutError once ``timeout``
        seconds pass without progress (no further process became healthy): a busy machine
        makes this slow, not fail, while a process that never comes up is still reported.
        """
        timeout = self.startup_timeout if timeout is None else timeout
        since = time.monotonic()  # the last progress
        for process_id in self.process_ids():
            while self.health(process_id) is None:
                if not self.alive(process_id):
                    reason = self.down_reason(process_id)
                    raise RuntimeError(f"{process_id} {reason}; {self.logs_hint(process_id)}")
                if time.monotonic() - since > timeout:
                    raise TimeoutError(
                        f"{process_id} not healthy after {timeout:.0f}s without progress; "
                        f"{self.logs_hint(process_id)}"
                    )
                time.sleep(self.poll_interval)
            since = time.monotonic()
            if progress is not None:
                progress(process_id)

    # --- the Toxiproxy mesh --------------------------------------------------------------------

    @property
    def has_mesh(self) -> bool:
        """Whether processes dial each other through Toxiproxy (network faults need it)."""
        return bool(self.config.dial)

    def toxiproxy_api(self) -> str:
        return f"http://{self.proxy_host()}:{TOXIPROXY_API_PORT}"

    def mesh(self) -> LinkMesh | None:
        if not self.has_mesh:
            return None
        if self._mesh is None:
            self._mesh = LinkMesh(self.toxiproxy_api())
        return self._mesh

    def links(self) -> dict[LinkPair, Link]:
        """Every directed link's proxy, by ``(src, dst)``; empty without the mesh."""
        if not self.has_mesh:
            return {}
        return plan_links(self.config, self.proxy_host(), FIRST_PROXY_PORT)

    def start_mesh(self) -> None:
        """Start Toxiproxy (if not running) and create every proxy (idempotent)."""
        if not self.has_mesh:
            return
        self.start_toxiproxy()
        wait_ready(self.toxiproxy_api(), self.mesh_timeout)
        self._require_mesh().ensure(list(self.links().values()))

    # --- network faults: every one goes through these ------------------------------------------

    def cut_links(self, pairs: Iterable[LinkPair], *, fault_id: str) -> None:
        """A silent partition of ``pairs``: data is swallowed until the fault is removed."""
        self._require_mesh().cut(self._links_of(pairs), toxic_name=fault_id)

    def degrade_links(
        self,
        pairs: Iterable[LinkPair],
        *,
        fault_id: str,
        latency_ms: int = 0,
        jitter_ms: int = 0,
        bandwidth_kbytes: int | None = None,
        slicer: bool = False,
        slow_close_ms: int = 0,
    ) -> None:
        """Slow links: latency (+/- jitter), a bandwidth cap in kilobytes/s, a slicer, a slow
        close; each aspect given is one toxic."""
        self._require_mesh().degrade(
            self._links_of(pairs),
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            bandwidth_kbps=bandwidth_kbytes,
            slicer=SlicerToxic() if slicer else None,
            slow_close_ms=slow_close_ms,
            toxic_name=fault_id,
        )

    def reset_links(self, pairs: Iterable[LinkPair], *, fault_id: str) -> None:
        """Reset (TCP RST) every connection on ``pairs`` while the fault lasts."""
        self._require_mesh().reset_peer(self._links_of(pairs), timeout_ms=0, toxic_name=fault_id)

    def disable_links(self, pairs: Iterable[LinkPair]) -> None:
        """Refuse connections on ``pairs`` (one bit per link: faults sharing one do not stack)."""
        self._require_mesh().disable(self._links_of(pairs))

    def enable_links(self, pairs: Iterable[LinkPair]) -> None:
        self._require_mesh().enable(self._links_of(pairs))

    def remove_link_faults(self, pairs: Iterable[LinkPair], *, fault_id: str) -> None:
        """Remove fault ``fault_id``'s toxics from ``pairs``; other faults' toxics stay."""
        self._require_mesh().remove(self._links_of(pairs), toxic_name=fault_id)

    def heal_network(self) -> None:
        """Every toxic removed and every proxy enabled (no-op without the mesh)."""
        mesh = self.mesh()
        if mesh is not None:
            mesh.reset()

    def probe_link(self, pair: LinkPair, timeout: float = 1.0) -> ProbeResult:
        """One tiny exchange through the link that needs its far end to answer."""
        return probe(self.links()[pair], timeout=timeout)

    def _links_of(self, pairs: Iterable[LinkPair]) -> list[Link]:
        links = self.links()
        return [links[pair] for pair in sorted(pairs) if pair in links]

    def _require_mesh(self) -> LinkMesh:
        mesh = self.mesh()
        if mesh is None:
            raise NoMesh("network faults need the Toxiproxy mesh (cluster up with it)")
        return mesh


class PowerLossUnsupported(RuntimeError):
    """The cluster's storage nodes are not on a power-loss layer, so power cannot be lost."""


class NoMesh(RuntimeError):
    """The cluster runs without the Toxiproxy mesh, so links cannot be faulted."""


def get_json(url: str, timeout: float) -> dict[str, Any] | None:
    """The JSON body at ``url``, or None when nothing answers in time (or not with JSON)."""
    request = urllib.request.Request(url, headers=auth.url_headers("GET", url))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (OSError, ValueError):
        return None
