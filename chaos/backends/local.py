"""Real storage-node processes on per-node loopback addresses, for integration tests.

with LocalNodes(tmp_path, groups={"p0": ("n1", "n2", "n3")}) as cluster:
    leader = cluster.wait_leader("p0")
    cluster.kill("n1")          # SIGKILL
    cluster.start("n1")         # same data dir
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from chaos.mesh import Link, LinkMesh, plan_links, wait_ready, with_mesh
from cluster.config import ClusterConfig, ProcessInfo, UnsafeMode
from cluster.topology import Topology, parse_topology

from .processes import ProcessTable
from .subnets import claim_subnet, hold_subnet, release_subnet, subnet_of_config

_fixture_subnet: int | None = None


def fixture_subnet() -> int:
    """This process's own 127.X.0.0/16 for LocalNodes, claimed until the process ends."""
    global _fixture_subnet
    if _fixture_subnet is None:
        _fixture_subnet = claim_subnet(f"pid:{os.getpid()}")
    return _fixture_subnet


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NodeProcess:
    def __init__(self, node_id: str, host: str, data_dir: Path, log_path: Path) -> None:
        self.node_id = node_id
        self.host = host
        self.port = free_port(host)
        self.admin_port = free_port(host)
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def start(self, peers: dict[str, str], groups: dict[str, tuple[str, ...]], *extra: str) -> None:
        args = [
            sys.executable,
            "-m",
            "cluster.storage",
            "--node-id",
            self.node_id,
            "--listen",
            self.address,
            "--admin",
            f"{self.host}:{self.admin_port}",
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "WARNING",
            *extra,
        ]
        for peer, addr in peers.items():
            args += ["--peer", f"{peer}={addr}"]
        for group, members in groups.items():
            args += ["--group", f"{group}={','.join(members)}"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:  # a stop that hangs becomes a power-off
                    self.proc.kill()
                    self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin + path, timeout=2) as resp:
            return json.loads(resp.read())


class LocalNodes:
    def __init__(
        self,
        tmp: Path,
        groups: dict[str, tuple[str, ...]],
        nodes: tuple[str, ...] = ("n1", "n2", "n3"),
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.groups = groups
        self.extra = extra_args
        subnet = fixture_subnet()
        self.nodes = {
            n: NodeProcess(n, f"127.{subnet}.0.{i + 1}", tmp / n, tmp / f"{n}.log")
            for i, n in enumerate(nodes)
        }

    def __enter__(self) -> LocalNodes:
        try:  # nodes that never got healthy are stopped too: nothing outlives the test
            for node in self.nodes:
                self.start(node)
            self.wait_healthy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for node in self.nodes.values():
            node.kill(signal.SIGTERM)

    def peers(self) -> dict[str, str]:
        return {n: p.address for n, p in self.nodes.items()}

    def start(self, node: str) -> None:
        self.nodes[node].start(self.peers(), self.groups, *self.extra)

    def kill(self, node: str) -> None:
        self.nodes[node].kill(signal.SIGKILL)

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Wait while the nodes are alive (a busy machine is slow, not broken); a node that
        exited fails at once, and ``timeout`` only bounds a node that hangs."""
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            while True:
                try:
                    if node.get_json("/health")["status"] == "ok":
                        break
                except OSError:
                    pass
                if not node.alive():
                    raise RuntimeError(f"{node.node_id} exited; see {node.log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node.node_id} not healthy; see {node.log_path}")
                time.sleep(0.05)

    def status(self, node: str) -> dict[str, Any]:
        return dict(self.nodes[node].get_json("/replicas"))

    def addresses(self) -> dict[str, str]:
        return {n: p.address for n, p in self.nodes.items()}

    def leader(self, group: str) -> str | None:
        """The node that leads ``group`` with a valid lease, if exactly one claims it."""
        leaders = []
        for node_id, node in self.nodes.items():
            if not node.alive():
                continue
            try:
                replicas = node.get_json("/replicas")["replicas"]
            except OSError:
                continue
            for r in replicas:
                if r["group"] == group and r["role"] == "leader" and r["lease"]:
                    leaders.append(node_id)
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self, group: str, timeout: float = 15.0, not_: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(group)
            if leader is not None and leader != not_:
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"no leader for {group} within {timeout}s")


# --- the whole cluster ---------------------------------------------------------------------------

TOXIPROXY_API_PORT, FIRST_PROXY_PORT = 8474, 21000
STORAGE_PORT, STORAGE_ADMIN_PORT = 7100, 7180
ROUTER_PORT, MEMDS_PORT, GAC_PORT = 8000, 7300, 7400
DEFAULT_ACCESS_KEY = "gameday"
DEFAULT_SECRET_KEY = "gameday-local-secret"


def subnet_for(data_dir: Path) -> int:
    """The second octet of 127.X.0.0/16 for the cluster in ``data_dir``, claimed machine-wide
    (chaos/backends/subnets.py), so concurrent clusters never share addresses."""
    return claim_subnet(f"dir:{data_dir.resolve()}")


TOXIPROXY = "toxiproxy"
TOXIPROXY_LOG_BYTES = 8 * 1024 * 1024  # toxiproxy.log stays under 8 MB (plus .1 and .2)


def toxiproxy_binary() -> Path:
    """The toxiproxy-server next to this Python (the venv's bin), or on PATH."""
    beside = Path(sys.executable).parent / "toxiproxy-server"
    if beside.exists():
        return beside
    found = shutil.which("toxiproxy-server")
    if found is None:
        raise FileNotFoundError(
            "toxiproxy-server not found next to this Python or on PATH: run 'make toxiproxy' "
            "(it builds the real Toxiproxy server with Go), or start the cluster without the "
            "mesh (--no-mesh), which leaves network faults unavailable"
        )
    return Path(found)


def mesh_host(config: ClusterConfig) -> str:
    """The loopback address the Toxiproxy API and every proxy listen on."""
    any_storage = config.processes_with_role("storage")[0].listen
    second = any_storage.split(".")[1]
    return f"127.{second}.0.254"


def mesh_links(config: ClusterConfig) -> dict[tuple[str, str], Link]:
    return plan_links(config, mesh_host(config), FIRST_PROXY_PORT)


def build_config(topology: str, data_dir: Path, partitions: int = 4) -> ClusterConfig:
    """Addresses for every process: AZ i gets 127.X.i.0/24, one address per process."""
    topo = parse_topology(topology)
    x = subnet_for(data_dir)
    processes: dict[str, ProcessInfo] = {}
    for i, az in enumerate(topo.azs, start=1):
        nodes = [n for n in topo.storage_nodes() if n.az == az]
        for j, node in enumerate(nodes, start=1):
            host = f"127.{x}.{i}.{j}"
            processes[node.id] = ProcessInfo(
                id=node.id,
                role="storage",
                az=az,
                rack=node.rack,
                listen=f"{host}:{STORAGE_PORT}",
                admin=f"{host}:{STORAGE_ADMIN_PORT}",
            )
        for k, spec in enumerate(p for p in topo.routers() if p.az == az):
            host = f"127.{x}.{i}.{100 + k}"
            addr = f"{host}:{ROUTER_PORT}"
            processes[spec.id] = ProcessInfo(
                id=spec.id, role="router", az=az, listen=addr, admin=addr
            )
        for k, spec in enumerate(p for p in topo.memds() if p.az == az):
            host = f"127.{x}.{i}.{150 + k}"
            addr = f"{host}:{MEMDS_PORT}"
            processes[spec.id] = ProcessInfo(
                id=spec.id, role="memds", az=az, listen=addr, admin=addr
            )
    gac = f"127.{x}.1.200:{GAC_PORT}"
    processes["gac"] = ProcessInfo(id="gac", role="gac", az=topo.azs[0], listen=gac, admin=gac)
    return ClusterConfig(
        topology=topology,
        processes=processes,
        credentials={DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY},
        default_partitions=partitions,
    )


class LocalCluster:
    """The whole cluster as local processes: storage nodes, MemDS, GAC and routers.

    ``data_dir`` holds everything: ``cluster.json`` (the config every process reads), one data
    directory per storage node, ``run/*.pid`` and ``logs/*.log``. Commands in separate
    invocations (``up``, ``status``, ``down``, faults) find the cluster through it.

        cluster = LocalCluster.create(Path(".gameday/cluster"), "3x2x1")
        cluster.up()                       # starts every process, waits until healthy
        cluster.kill("sn-a1")              # SIGKILL (power off); cluster.start("sn-a1") again
        cluster.down(wipe=True)
    """

    name = "local"

    def __init__(self, data_dir: Path, config: ClusterConfig) -> None:
        self.data_dir = data_dir
        self.config = config
        self.state_dir = data_dir
        self.procs = ProcessTable(data_dir / "run", data_dir / "logs")
        self._mesh: LinkMesh | None = None

    @classmethod
    def create(
        cls,
        data_dir: Path,
        topology: str = "3x2x1",
        partitions: int = 4,
        mesh: bool = True,
        unsafe: tuple[UnsafeMode, ...] = (),
    ) -> LocalCluster:
        """Open the cluster in ``data_dir``, writing its config on first use.

        With ``mesh`` every link between cluster processes runs through a Toxiproxy proxy
        (one per directed pair), so that network faults can be injected on any of them.
        """
        path = data_dir / "cluster.json"
        if path.exists():
            config = ClusterConfig.load(path)
            if config.topology != topology:
                raise ValueError(
                    f"{data_dir} holds a {config.topology} cluster; use it as is, or remove it "
                    f"with 'gameday cluster down --wipe' to start a {topology} one"
                )
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            config = build_config(topology, data_dir, partitions)
            config = config.model_copy(update={"unsafe": unsafe})  # test-only broken modes
            if mesh:
                toxiproxy_binary()  # fail now, clearly, rather than at 'up'
                config = with_mesh(config, mesh_links(config))
            config.save(path)
        return cls(data_dir, config)

    @classmethod
    def open(cls, data_dir: Path) -> LocalCluster:
        path = data_dir / "cluster.json"
        if not path.exists():
            raise FileNotFoundError(
                f"no cluster in {data_dir} (start one with 'gameday cluster up')"
            )
        return cls(data_dir, ClusterConfig.load(path))

    @property
    def config_path(self) -> Path:
        return self.data_dir / "cluster.json"

    def argv(self, process_id: str) -> list[str]:
        info = self.config.process(process_id)
        common = ["--config", str(self.config_path)]
        if info.role == "storage":
            node_dir = self.data_dir / "nodes" / process_id
            return [
                sys.executable,
                "-m",
                "cluster.storage",
                "--node-id",
                process_id,
                "--data-dir",
                str(node_dir),
                "--log-level",
                "WARNING",
                *common,
            ]
        module = {"router": "cluster.router", "memds": "cluster.memds", "gac": "cluster.admission"}
        return [sys.executable, "-m", module[info.role], "--id", process_id, *common]

    # --- the Toxiproxy mesh --------------------------------------------------------------------

    @property
    def has_mesh(self) -> bool:
        return bool(self.config.dial)

    def toxiproxy_api(self) -> str:
        return f"http://{mesh_host(self.config)}:{TOXIPROXY_API_PORT}"

    def mesh(self) -> LinkMesh | None:
        if not self.has_mesh:
            return None
        if self._mesh is None:
            self._mesh = LinkMesh(self.toxiproxy_api())
        return self._mesh

    def links(self) -> dict[tuple[str, str], Link]:
        return mesh_links(self.config) if self.has_mesh else {}

    def start_mesh(self) -> None:
        """Start toxiproxy-server (if not running) and create every proxy (idempotent)."""
        if not self.has_mesh:
            return
        if not self.procs.alive(TOXIPROXY):
            argv = [
                str(toxiproxy_binary()),
                "-host",
                mesh_host(self.config),
                "-port",
                str(TOXIPROXY_API_PORT),
            ]
            # Info, not Toxiproxy's default debug (an access-log line per API call: ~6 MB/min);
            # info still logs every accepted connection, so the log is rotated as it grows.
            self.procs.spawn(
                TOXIPROXY, argv, env={"LOG_LEVEL": "info"}, rotate_bytes=TOXIPROXY_LOG_BYTES
            )
        wait_ready(self.toxiproxy_api(), 10.0)
        mesh = self.mesh()
        assert mesh is not None
        mesh.ensure(list(self.links().values()))

    # --- processes ---------------------------------------------------------------------------

    def process_ids(self, role: str | None = None) -> list[str]:
        order = {"storage": 0, "gac": 1, "memds": 2, "router": 3}
        ids = [p.id for p in self.config.processes.values() if role in (None, p.role)]
        return sorted(ids, key=lambda i: (order[self.config.processes[i].role], i))

    def start(self, process_id: str) -> None:
        if not self.procs.alive(process_id):
            self.procs.spawn(process_id, self.argv(process_id))

    def kill(self, process_id: str) -> None:
        self.procs.signal(process_id, signal.SIGKILL)

    def pause(self, process_id: str) -> None:
        self.procs.signal(process_id, signal.SIGSTOP)

    def resume(self, process_id: str) -> None:
        self.procs.signal(process_id, signal.SIGCONT)

    def alive(self, process_id: str) -> bool:
        return self.procs.alive(process_id)

    def topology(self) -> Topology:
        return parse_topology(self.config.topology)

    def replica_dir(self, node_id: str, group: str) -> Path:
        return self.data_dir / "nodes" / node_id / "groups" / group

    def up(self, timeout: float = 60.0, progress: Callable[[str], None] | None = None) -> None:
        """Start the mesh and every process that is not running; wait until all are healthy."""
        subnet = subnet_of_config(self.config_path)
        if subnet is not None:
            hold_subnet(subnet, self.subnet_owner)
        self.start_mesh()
        for process_id in self.process_ids():
            self.start(process_id)
        self.wait_healthy(timeout, progress)

    def down(self, wipe: bool = False) -> None:
        for process_id in reversed(self.process_ids()):
            self.procs.stop(process_id)
        self.procs.stop(TOXIPROXY)
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.release_subnet()

    @property
    def subnet_owner(self) -> str:
        return f"dir:{self.data_dir.resolve()}"

    def release_subnet(self) -> None:
        """Give the cluster's 127.X.0.0/16 back (it is down; its config is only kept as record)."""
        host = self.config.process(self.process_ids("storage")[0]).listen
        release_subnet(int(host.split(".")[1]), self.subnet_owner)

    def health_url(self, process_id: str) -> str:
        info = self.config.process(process_id)
        return f"http://{info.admin}/health"

    def health(self, process_id: str) -> dict[str, Any] | None:
        """The process's /health body, or None if it is down or not answering."""
        if not self.procs.alive(process_id):
            return None
        try:
            with urllib.request.urlopen(self.health_url(process_id), timeout=1.0) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except (OSError, ValueError):
            return None

    def wait_healthy(
        self, timeout: float = 60.0, progress: Callable[[str], None] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        for process_id in self.process_ids():
            while self.health(process_id) is None:
                if not self.procs.alive(process_id):
                    raise RuntimeError(
                        f"{process_id} exited; see {self.procs.log_file(process_id)}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{process_id} not healthy after {timeout:.0f}s; "
                        f"see {self.procs.log_file(process_id)}"
                    )
                time.sleep(0.05)
            if progress is not None:
                progress(process_id)

    def endpoints(self) -> dict[str, str]:
        return {p: f"http://{self.config.process(p).listen}" for p in self.process_ids("router")}

    def storage_status(self, node_id: str) -> dict[str, Any] | None:
        info = self.config.process(node_id)
        try:
            with urllib.request.urlopen(f"http://{info.admin}/replicas", timeout=1.0) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except (OSError, ValueError):
            return None
