"""The cluster as Docker containers: one per process on a network of its own, links via Toxiproxy.

The same cluster as the local backend, in containers of the ``gameday-cluster`` image
(chaos/images.py): one per storage node, router, MemDS server and the GAC, each labelled with
its AZ, rack and role and holding its data on a named volume, plus one Toxiproxy container
through which every link between them runs (``dial`` in the cluster config, as on loopback).
Everything sits on a user-defined bridge network with a fixed subnet, so each container keeps
its address across power cycles; processes listen on their container's address, and the host
reaches admin endpoints and the Toxiproxy API there directly. Router ports are also published
on 127.0.0.1 only: those are the DynamoDB endpoints clients use.

Faults map onto Docker: power off is ``docker kill`` (SIGKILL), power on starts the same
container again (same volume, same address), pause is ``docker pause`` (the cgroup freezer).

Power loss (``power_layer``): a storage node's data directory is then no named volume but a
mount of the power-loss layer on this host (chaos/backends/powerlayer.py, the same FUSE layer
as the local backend's), bind-mounted into its container. Power loss is ``docker kill``, then
the layer puts back every file as of its last fsync and remounts; starting the container again
binds the fresh mount. The layer sits on the host rather than in the container because a FUSE
mount inside one needs /dev/fuse and CAP_SYS_ADMIN there (and libfuse in the image), which a
non-root container of this project must not have; the bind mount costs nothing of the kind, and
the node's own process still runs unprivileged (the mount is served to the image's user only).

    cluster = DockerCluster.create(Path(".gameday/cluster"), "3x2x1")
    cluster.up()                       # network, volumes, Toxiproxy, 13 containers; healthy
    cluster.kill("sn-a1"); cluster.start("sn-a1")
    cluster.down(wipe=True)            # containers, network, volumes and the data dir gone

Names, addresses, labels and commands are planned in chaos/backends/docker_plan.py.
``data_dir`` keeps ``cluster.json`` (copied into every container at creation), ``docker.json``
(the names, subnet and host ports Docker objects were given), ``faults.json`` and the
dead-man's lease, and ``logs/`` (each container's output, saved when it is removed).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import shutil
import signal
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from chaos.backends.base import (
    FIRST_PROXY_PORT,
    ROUTER_PORT,
    TOXIPROXY_API_PORT,
    Backend,
    check_reopened,
    refuse_foreign,
    saved_state,
)
from chaos.backends.docker_plan import (
    DATA_IN_CONTAINER,
    LABEL,
    STATE_FILE,
    TOXIPROXY,
    DockerState,
    _free_port,
    build_docker_config,
    cluster_name,
    command_for,
    free_subnet,
    is_docker_cluster,
    labels_for,
    toxiproxy_ip,
)
from chaos.backends.powerlayer import PowerLayer
from chaos.backends.processes import ProcessTable
from chaos.images import DockerClient, engine, image_exists
from chaos.mesh import plan_links, with_mesh
from cluster.config import ClusterConfig, UnsafeMode

if TYPE_CHECKING:
    from docker.models.containers import Container

log = logging.getLogger(__name__)

# --- the backend -----------------------------------------------------------------------------


class DockerCluster(Backend):
    """The whole cluster as containers (see the module docstring)."""

    name: ClassVar[str] = "docker"
    startup_timeout: ClassVar[float] = 90.0
    poll_interval: ClassVar[float] = 0.1
    mesh_timeout: ClassVar[float] = 20.0

    def __init__(self, data_dir: Path, config: ClusterConfig, state: DockerState) -> None:
        super().__init__(data_dir, config)
        self.state = state
        self._client: DockerClient | None = None
        # Power on and off run in the background, so that a whole rack or AZ goes down (and
        # comes back) at once rather than one container after another. Anything that looks at
        # or acts on a process first waits for its pending operation (``_settle``).
        self._ops = ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker-power")
        self._pending: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        # The power-loss layer's daemons run on this host, as the local backend's processes do.
        self.procs = ProcessTable(data_dir / "run", data_dir / "logs")
        self.layer = PowerLayer(data_dir, self.procs, owner=(CLUSTER_UID, CLUSTER_UID))

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        data_dir: Path,
        topology: str = "3x2x1",
        partitions: int = 4,
        mesh: bool = True,
        power_layer: bool = False,
        unsafe: tuple[UnsafeMode, ...] = (),
    ) -> DockerCluster:
        """Open the cluster in ``data_dir``, planning it (subnet, addresses) on first use.

        With ``power_layer`` each storage node's data directory is a mount of the power-loss
        layer bind-mounted into its container (see the module docstring), which ``power_loss_*``
        faults need. ``unsafe`` are the test-only broken modes (cluster/config.py).
        """
        if is_docker_cluster(data_dir):
            cluster = cls.open(data_dir)
            check_reopened(data_dir, cluster.config.topology, topology)
            if power_layer and not cluster.layer.enabled:
                raise ValueError(
                    f"{data_dir} holds a cluster without the power-loss layer, which power_loss "
                    "faults need; remove it with 'gameday cluster down --wipe' first"
                )
            return cluster
        refuse_foreign(data_dir, cls.name)
        client = engine()
        name = cluster_name(data_dir)
        subnet = free_subnet(client, name)
        data_dir.mkdir(parents=True, exist_ok=True)
        if power_layer:
            PowerLayer.enable(data_dir)
        config = build_docker_config(topology, subnet, partitions)
        config = config.model_copy(update={"unsafe": unsafe})  # test-only broken modes
        routers = {p.id: _free_port() for p in config.processes_with_role("router")}
        state = DockerState(
            name=name,
            subnet=subnet,
            toxiproxy_ip=toxiproxy_ip(subnet),
            router_ports=routers,
            mesh=mesh,
        )
        if mesh:
            config = with_mesh(config, plan_links(config, state.toxiproxy_ip, FIRST_PROXY_PORT))
        cluster = cls(data_dir, config, state)
        cluster._save()
        cluster._client = client
        return cluster

    @classmethod
    def open(cls, data_dir: Path) -> DockerCluster:
        state = DockerState.model_validate_json(saved_state(data_dir, STATE_FILE, cls.name))
        return cls(data_dir, ClusterConfig.load(data_dir / "cluster.json"), state)

    def _save(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(self.data_dir / "cluster.json")
        tmp = self.data_dir / f"{STATE_FILE}.tmp"
        tmp.write_text(self.state.model_dump_json(indent=2))
        tmp.replace(self.data_dir / STATE_FILE)

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = engine()
        return self._client

    # -- where things are ------------------------------------------------------------------------

    def proxy_host(self) -> str:
        return self.state.toxiproxy_ip

    def start_toxiproxy(self) -> None:
        self._start_container(TOXIPROXY)

    def node_data_dir(self, node_id: str) -> Path:
        """The node's named volume, as mounted on the host (or its power-loss layer's mount)."""
        if self.layer.enabled:
            return self.layer.mountpoint(node_id)
        volume = self.client.volumes.get(self.state.volume(node_id))
        return Path(volume.attrs["Mountpoint"])

    def logs_hint(self, process_id: str) -> str:
        return f"see 'docker logs {self.state.container(process_id)}'"

    def may_answer(self, process_id: str) -> bool:
        """After the process's pending power operation; the engine is not asked (it is slow)."""
        self._settle(process_id)
        return True

    def down_reason(self, process_id: str) -> str:
        return f"is {self.container_status(process_id)}"

    # -- Docker objects -------------------------------------------------------------------------

    def _container(self, process_id: str) -> Container | None:
        from docker.errors import NotFound

        try:
            return self.client.containers.get(self.state.container(process_id))
        except NotFound:
            return None

    def _ensure_network(self) -> None:
        from docker.errors import NotFound
        from docker.types import IPAMConfig, IPAMPool

        try:
            self.client.networks.get(self.state.network)
            return
        except NotFound:
            pass
        from docker.errors import APIError

        # Containers left attached to a network that no longer exists could never start again:
        # they are recreated below, on the same volumes.
        for container in self._all_containers():
            container.remove(force=True)

        for attempt in range(3):
            net = ipaddress.ip_network(self.state.subnet)
            try:
                self.client.networks.create(
                    self.state.network,
                    driver="bridge",
                    ipam=IPAMConfig(
                        pool_configs=[
                            IPAMPool(subnet=str(net), gateway=str(net.network_address + 1))
                        ]
                    ),
                    labels={f"{LABEL}.cluster": self.state.name},
                    check_duplicate=True,
                )
                return
            except APIError as exc:
                if "overlap" not in str(exc).lower() or attempt == 2:
                    raise
            # Another network took the subnet while this cluster was down: move to a free one.
            self._replan(free_subnet(self.client, self.state.name))

    def _replan(self, subnet: str) -> None:
        """New addresses on ``subnet`` (the network is gone, so are the containers' addresses).

        Volumes (the data) stay; there are no containers left to hold the old addresses.
        """
        fresh = build_docker_config(self.config.topology, subnet, self.config.default_partitions)
        config = self.config.model_copy(update={"processes": fresh.processes, "dial": {}})
        self.state = self.state.model_copy(
            update={"subnet": subnet, "toxiproxy_ip": toxiproxy_ip(subnet)}
        )
        if self.state.mesh:
            config = with_mesh(
                config, plan_links(config, self.state.toxiproxy_ip, FIRST_PROXY_PORT)
            )
        self.config = config
        self._mesh = None
        self._save()

    def _create_container(self, process_id: str) -> Container:
        """Create (not start) the container of ``process_id``, its volume, and its config."""
        api = self.client.api
        state = self.state
        name = state.container(process_id)
        if process_id == TOXIPROXY:
            info = None
            ip = state.toxiproxy_ip
            command = ["toxiproxy-server", "-host", "0.0.0.0", "-port", str(TOXIPROXY_API_PORT)]
            env = {
                "GAMEDAY_HEALTH_URL": f"http://127.0.0.1:{TOXIPROXY_API_PORT}/version",
                # Toxiproxy logs every connection's setup at debug/trace level by default: in a
                # container each line also costs the engine's log copier CPU.
                "LOG_LEVEL": "info",
            }
            binds: dict[str, dict[str, str]] = {}
            ports: dict[int, tuple[str, int]] = {}
        else:
            info = self.config.process(process_id)
            ip = info.listen.rsplit(":", 1)[0]
            command = command_for(info)
            env = {
                "GAMEDAY_PROCESS_ID": process_id,
                "GAMEDAY_HEALTH_URL": self.health_url(process_id),
            }
            if self.layer.enabled and info.role == "storage":
                # The node's disk is the layer's mount on this host (mounted before any start).
                source = str(self.layer.mountpoint(process_id).resolve())
            else:
                source = state.volume(process_id)
                self.client.volumes.create(source, labels=labels_for(state, info))
            binds = {source: {"bind": DATA_IN_CONTAINER, "mode": "rw"}}
            ports = {}
            if info.role == "router":
                ports = {ROUTER_PORT: ("127.0.0.1", state.router_ports[process_id])}
        host_config = api.create_host_config(
            binds=binds,
            port_bindings=ports,
            restart_policy={"Name": "no"},
            log_config={"Type": "json-file", "Config": {"max-size": "20m", "max-file": "2"}},
        )
        networking = api.create_networking_config(
            {state.network: api.create_endpoint_config(ipv4_address=ip)}
        )
        api.create_container(
            state.image,
            command=command,
            name=name,
            hostname=process_id,
            environment=env,
            labels=labels_for(state, info),
            ports=list(ports),
            host_config=host_config,
            networking_config=networking,
            stop_signal="SIGTERM",
        )
        container = self.client.containers.get(name)
        if info is not None:
            container.put_archive("/etc/gameday", _tar_of("cluster.json", self.config_path))
        return container

    def _start_container(self, process_id: str) -> None:
        if self.layer.enabled and process_id in self.process_ids("storage"):
            self.layer.mount(process_id)  # power on: the disk first, holding what was synced
        container = self._container(process_id)
        if container is None:
            container = self._create_container(process_id)
        status = container.status
        if status == "paused":
            container.unpause()
        elif status != "running":
            container.start()

    # -- processes ------------------------------------------------------------------------------

    def _submit(self, process_id: str, op: Callable[[str], None]) -> None:
        """Run ``op(process_id)`` in the background, after the process's pending operation."""
        self._settle(process_id)

        def run() -> None:
            try:
                op(process_id)
            except Exception:  # seen by whoever looks next: the container's state tells
                log.exception("%s of %s failed", op.__name__.strip("_"), process_id)

        with self._lock:
            self._pending[process_id] = self._ops.submit(run)

    def _settle(self, process_id: str | None = None) -> None:
        """Wait for the pending power operation of ``process_id`` (None: of every process)."""
        with self._lock:
            if process_id is None:
                futures = list(self._pending.values())
                self._pending.clear()
            else:
                future = self._pending.pop(process_id, None)
                futures = [] if future is None else [future]
        for future in futures:
            future.result()

    def container_status(self, process_id: str) -> str:
        """Docker's status of the process's container: running, paused, exited, ... or absent."""
        self._settle(process_id)
        container = self._container(process_id)
        return "absent" if container is None else str(container.status)

    def alive(self, process_id: str) -> bool:
        """Running (a paused container is alive, as a SIGSTOPped process is)."""
        return self.container_status(process_id) in ("running", "paused")

    def start(self, process_id: str) -> None:
        """Power on: start the same container again (same volume, same address).

        Returns at once; the container is started in the background (``alive`` waits for it).
        """
        self._submit(process_id, self._start_container)

    def kill(self, process_id: str) -> None:
        """Power off: ``docker kill`` (SIGKILL) of the container.

        Returns at once; ``alive`` and every other call on the process wait until it stopped.
        """
        self._submit(process_id, self._kill_container)

    def _kill_container(self, process_id: str) -> None:
        container = self._container(process_id)
        if container is None or container.status not in ("running", "paused"):
            return
        from docker.errors import APIError

        with contextlib.suppress(APIError):  # it may have died on its own meanwhile
            container.kill(signal="SIGKILL")
        with contextlib.suppress(Exception):  # the engine's own wait: returns once it stopped
            self.client.api.wait(container.id, timeout=10, condition="not-running")

    @property
    def supports_power_loss(self) -> bool:
        return self.layer.enabled

    def lose_unsynced(self, node_id: str, *, torn: bool, seed: int) -> dict[str, Any]:
        """Power loss: ``docker kill``, wait until the container is down (its bind of the mount
        goes with it), then the layer forgets every unsynced byte and mounts what was synced."""
        if not self.layer.enabled:
            return super().lose_unsynced(node_id, torn=torn, seed=seed)
        self.kill(node_id)
        self._settle(node_id)
        return self.layer.lose(node_id, torn=torn, seed=seed)

    def die_with_this_process(self) -> None:
        self.procs.die_with = signal.SIGKILL  # the layer's daemons; containers are no children

    def pause(self, process_id: str) -> None:
        self._settle(process_id)
        container = self._container(process_id)
        if container is not None and container.status == "running":
            container.pause()

    def resume(self, process_id: str) -> None:
        self._settle(process_id)
        container = self._container(process_id)
        if container is not None and container.status == "paused":
            container.unpause()

    # -- the whole cluster ----------------------------------------------------------------------

    def up(
        self, timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """Network, Toxiproxy and every container that is not running; wait until healthy."""
        if not image_exists(self.client, self.state.image):
            raise RuntimeError(
                f"image {self.state.image} is missing: build it with 'gameday images build'"
            )
        self._settle()
        self._ensure_network()
        # Toxiproxy first, then every process's container while the proxies are being created:
        # processes that dial a proxy not there yet retry, as they do after any lost link.
        self._start_container(TOXIPROXY)
        with ThreadPoolExecutor(max_workers=4) as pool:
            started = pool.map(self._start_container, self.process_ids())
            self.start_mesh()
            list(started)
        self.wait_healthy(timeout, progress)

    def down(self, wipe: bool = False) -> None:
        """Stop and remove every container and the network, saving their logs in ``logs/``.

        The volumes stay (``up`` again recovers every table) unless ``wipe``, which also
        removes them and the data dir.
        """
        self._settle()
        containers = self._all_containers()
        by_process = {c.labels.get(f"{LABEL}.process", c.name): c for c in containers}
        order = [p for p in reversed(self.process_ids()) if p in by_process]
        order += [p for p in by_process if p not in order]  # Toxiproxy, strays
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)

        def stop(process_id: str) -> None:
            container = by_process[process_id]
            with contextlib.suppress(Exception):
                container.reload()
                if container.status == "paused":
                    container.unpause()
                if container.status in ("running", "restarting"):
                    container.stop(timeout=5)
            with contextlib.suppress(Exception):
                log = container.logs(stdout=True, stderr=True)
                (self.data_dir / "logs" / f"{process_id}.log").write_bytes(log)
            container.remove(force=True)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(stop, order))
        self.layer.unmount_all()  # after the containers: nothing mounted stays behind
        self._remove_network()
        if wipe:
            self.remove_volumes()
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def remove_volumes(self) -> None:
        """Remove the cluster's volumes (its data); the containers must be gone already."""
        for volume in self.client.volumes.list(
            filters={"label": f"{LABEL}.cluster={self.state.name}"}
        ):
            volume.remove(force=True)

    def _remove_network(self) -> None:
        from docker.errors import NotFound

        for network in self.client.networks.list(names=[self.state.network]):
            if network.name == self.state.network:  # the filter matches substrings
                with contextlib.suppress(NotFound):
                    network.remove()

    def _all_containers(self) -> list[Container]:
        flt = {"label": f"{LABEL}.cluster={self.state.name}"}
        return list(self.client.containers.list(all=True, filters=flt, ignore_removed=True))

    # -- clients ---------------------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        """Router id -> its DynamoDB endpoint, published on 127.0.0.1."""
        return {
            p: f"http://127.0.0.1:{self.state.router_ports[p]}" for p in self.process_ids("router")
        }


# --- helpers ---------------------------------------------------------------------------------

CLUSTER_UID = 10001  # the image's cluster user and group (docker/Dockerfile)


def _tar_of(name: str, path: Path) -> bytes:
    data = path.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entry = tarfile.TarInfo(name)
        entry.size = len(data)
        # It holds the cluster's secrets: 0600 and owned by the image's unprivileged cluster
        # user (docker/Dockerfile), who alone reads it; the engine keeps the archive's owner.
        entry.mode = 0o600
        entry.uid = entry.gid = CLUSTER_UID
        entry.uname = entry.gname = "gameday"
        entry.mtime = int(time.time())
        tar.addfile(entry, io.BytesIO(data))
    return buf.getvalue()
