"""The cluster as processes on this machine, each on its own loopback address.

Every process gets an address of its own in 127.X.0.0/16 (X derived from the data dir, so two
clusters do not collide): AZ i is 127.X.i.0/24. Storage nodes keep their data in
``<data_dir>/nodes/<id>``; ``ProcessTable`` (processes.py) spawns them detached and signals them,
so a cluster outlives the command that started it. With the mesh, a ``toxiproxy-server`` on
127.X.0.254 carries every link.

    cluster = LocalCluster.create(Path(".gameday/cluster"), "3x2x1")
    cluster.up()                       # starts every process, waits until healthy
    cluster.kill("sn-a1")              # SIGKILL (power off); cluster.start("sn-a1") again
    cluster.down(wipe=True)
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from chaos.mesh import Link, plan_links, with_mesh
from cluster.config import ClusterConfig, UnsafeMode

from .base import (
    FIRST_PROXY_PORT,
    TOXIPROXY_API_PORT,
    Backend,
    check_reopened,
    new_config,
    plan_processes,
)
from .powerlayer import PowerLayer
from .processes import ProcessTable
from .subnets import claim_subnet, hold_subnet, release_subnet, subnet_of_config


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
    """Every link's proxy on the local mesh host."""
    return plan_links(config, mesh_host(config), FIRST_PROXY_PORT)


#: Where each role lives in AZ i's 127.X.i.0/24 (the n-th of its role: + n).
LOCAL_HOSTS: dict[str, int] = {"storage": 1, "router": 100, "memds": 150, "gac": 200}


def build_config(topology: str, data_dir: Path, partitions: int = 4) -> ClusterConfig:
    """Addresses for every process: AZ i gets 127.X.i.0/24, one address per process."""
    x = subnet_for(data_dir)
    processes = plan_processes(
        topology, lambda role, az, n: f"127.{x}.{az}.{LOCAL_HOSTS[role] + n}"
    )
    return new_config(topology, processes, partitions)


class LocalCluster(Backend):
    """The whole cluster as local processes: storage nodes, MemDS, GAC and routers.

    ``data_dir`` holds everything: ``cluster.json`` (the config every process reads), one data
    directory per storage node, ``run/*.pid`` and ``logs/*.log``. Commands in separate
    invocations (``up``, ``status``, ``down``, faults) find the cluster through it.
    """

    name: ClassVar[str] = "local"

    def __init__(self, data_dir: Path, config: ClusterConfig) -> None:
        super().__init__(data_dir, config)
        self.procs = ProcessTable(data_dir / "run", data_dir / "logs")
        self.layer = PowerLayer(data_dir, self.procs)

    @classmethod
    def create(
        cls,
        data_dir: Path,
        topology: str = "3x2x1",
        partitions: int = 4,
        mesh: bool = True,
        unsafe: tuple[UnsafeMode, ...] = (),
        power_layer: bool = False,
    ) -> LocalCluster:
        """Open the cluster in ``data_dir``, writing its config on first use.

        With ``mesh`` every link between cluster processes runs through a Toxiproxy proxy
        (one per directed pair), so that network faults can be injected on any of them. With
        ``power_layer`` each storage node's data directory is a mount of the power-loss layer
        (chaos/backends/lazyfs.py), which ``power_loss_*`` faults need.
        """
        path = data_dir / "cluster.json"
        if path.exists():
            config = ClusterConfig.load(path)
            check_reopened(data_dir, config.topology, topology)
            if power_layer and not PowerLayer(data_dir, ProcessTable(data_dir, data_dir)).enabled:
                raise ValueError(
                    f"{data_dir} holds a cluster without the power-loss layer, which power_loss "
                    "faults need; remove it with 'gameday cluster down --wipe' first"
                )
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            if power_layer:
                PowerLayer.enable(data_dir)
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

    def argv(self, process_id: str) -> list[str]:
        info = self.config.process(process_id)
        common = ["--config", str(self.config_path)]
        if info.role == "storage":
            return [
                sys.executable,
                "-m",
                "cluster.storage",
                "--node-id",
                process_id,
                "--data-dir",
                str(self.node_data_dir(process_id)),
                "--log-level",
                "WARNING",
                *common,
            ]
        module = {"router": "cluster.router", "memds": "cluster.memds", "gac": "cluster.admission"}
        return [sys.executable, "-m", module[info.role], "--id", process_id, *common]

    # --- where things are ----------------------------------------------------------------------

    def node_data_dir(self, node_id: str) -> Path:
        return self.data_dir / "nodes" / node_id

    def proxy_host(self) -> str:
        return mesh_host(self.config)

    def start_toxiproxy(self) -> None:
        if not self.procs.alive(TOXIPROXY):
            argv = [str(toxiproxy_binary()), "-host", self.proxy_host()]
            argv += ["-port", str(TOXIPROXY_API_PORT)]
            # Info, not Toxiproxy's default debug (an access-log line per API call: ~6 MB/min);
            # info still logs every accepted connection, so the log is rotated as it grows.
            self.procs.spawn(
                TOXIPROXY, argv, env={"LOG_LEVEL": "info"}, rotate_bytes=TOXIPROXY_LOG_BYTES
            )

    def logs_hint(self, process_id: str) -> str:
        return f"see {self.procs.log_file(process_id)}"

    # --- processes -----------------------------------------------------------------------------

    def start(self, process_id: str) -> None:
        if not self.procs.alive(process_id):
            if self.layer.enabled and self.config.process(process_id).role == "storage":
                self.layer.mount(process_id)  # power on: the disk first, holding what was synced
            self.procs.spawn(process_id, self.argv(process_id))

    @property
    def supports_power_loss(self) -> bool:
        return self.layer.enabled

    def lose_unsynced(self, node_id: str, *, torn: bool, seed: int) -> dict[str, Any]:
        if not self.layer.enabled:
            return super().lose_unsynced(node_id, torn=torn, seed=seed)
        self.kill(node_id)
        return self.layer.lose(node_id, torn=torn, seed=seed)

    def kill(self, process_id: str) -> None:
        self.procs.signal(process_id, signal.SIGKILL)

    def pause(self, process_id: str) -> None:
        self.procs.signal(process_id, signal.SIGSTOP)

    def resume(self, process_id: str) -> None:
        self.procs.signal(process_id, signal.SIGCONT)

    def alive(self, process_id: str) -> bool:
        return self.procs.alive(process_id)

    def die_with_this_process(self) -> None:
        self.procs.die_with = signal.SIGKILL  # a power cut: nothing to save, it is torn down

    # --- lifecycle -----------------------------------------------------------------------------

    def up(
        self, timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
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
        self.layer.unmount_all()  # after the nodes: nothing mounted stays behind
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
