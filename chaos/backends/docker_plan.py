"""What the Docker backend decides before and apart from the engine: names, addresses, labels.

A cluster in ``data_dir`` is named ``gameday-<hash of data_dir>``: every container, volume and
the network carry that name, and labels say which cluster, process, role, AZ and rack each one
is. Addresses come from a subnet the engine hands out (``free_subnet``), one per process from
.10 on, Toxiproxy at .2; each process listens on its role's standard ports in its own container.
chaos/backends/docker.py applies the plan through the Docker SDK.

    state = DockerState(name=cluster_name(data_dir), subnet="172.30.0.0/24",
                        toxiproxy_ip=toxiproxy_ip("172.30.0.0/24"), router_ports={})
    config = build_docker_config("3x2x1", state.subnet)   # sn-a1 at 172.30.0.10:7100, ...
    labels_for(state, config.process("sn-a1"))             # io.gameday.cluster, .process, ...
    command_for(config.process("sn-a1"))                   # python -m cluster.storage ...
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from chaos.backends.base import new_config, plan_processes
from chaos.images import CLUSTER_IMAGE, EngineUnavailable
from cluster.config import ClusterConfig, ProcessInfo, Role

DockerClient = Any  # the SDK has no type hints (chaos/images.py)

STATE_FILE = "docker.json"
CONFIG_IN_CONTAINER = "/etc/gameday/cluster.json"
DATA_IN_CONTAINER = "/data"
TOXIPROXY = "toxiproxy"
LABEL = "io.gameday"  # label prefix: io.gameday.cluster, .process, .role, .az, .rack
MODULES = {
    "storage": "cluster.storage",
    "router": "cluster.router",
    "memds": "cluster.memds",
    "gac": "cluster.admission",
}
FIRST_HOST = 10  # processes get subnet addresses from .10 on; Toxiproxy has .2


class DockerState(BaseModel):
    """What the backend named and chose in Docker, saved as ``docker.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # cluster name: prefix of every container, volume and the network
    image: str = CLUSTER_IMAGE
    subnet: str
    toxiproxy_ip: str
    router_ports: dict[str, int]  # router id -> port on 127.0.0.1
    mesh: bool = True

    @property
    def network(self) -> str:
        return f"{self.name}-net"

    def container(self, process_id: str) -> str:
        return f"{self.name}-{process_id}"

    def volume(self, process_id: str) -> str:
        return f"{self.name}-{process_id}"


def cluster_name(data_dir: Path) -> str:
    """``gameday-<hash>``: stable for a data dir, distinct between data dirs."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"gameday-{digest}"


def is_docker_cluster(data_dir: Path) -> bool:
    return (data_dir / STATE_FILE).exists()


def build_docker_config(topology: str, subnet: str, partitions: int = 4) -> ClusterConfig:
    """Addresses on ``subnet``: one per process from .10 on, in a fixed order.

    Each process has a container of its own, so all use the standard ports.
    """
    hosts = iter(ipaddress.ip_network(subnet).hosts())
    for _ in range(FIRST_HOST - 1):
        next(hosts)

    def host(role: Role, az: int, n: int) -> str:
        try:
            return str(next(hosts))
        except StopIteration:
            raise ValueError(f"subnet {subnet} is too small for {topology}") from None

    return new_config(topology, plan_processes(topology, host), partitions)


def toxiproxy_ip(subnet: str) -> str:
    return str(ipaddress.ip_network(subnet).network_address + 2)


def labels_for(state: DockerState, info: ProcessInfo | None) -> dict[str, str]:
    """Labels of one container (``info`` None: the Toxiproxy container)."""
    labels = {f"{LABEL}.cluster": state.name}
    if info is None:
        return {**labels, f"{LABEL}.process": TOXIPROXY, f"{LABEL}.role": "toxiproxy"}
    labels.update({f"{LABEL}.process": info.id, f"{LABEL}.role": info.role, f"{LABEL}.az": info.az})
    if info.rack is not None:
        labels[f"{LABEL}.rack"] = info.rack
    return labels


def command_for(info: ProcessInfo) -> list[str]:
    """The container's command: the role's module, its id and the config inside the image."""
    config = ["--config", CONFIG_IN_CONTAINER]
    if info.role == "storage":
        return [
            "python",
            "-m",
            MODULES["storage"],
            "--node-id",
            info.id,
            "--data-dir",
            DATA_IN_CONTAINER,
            "--log-level",
            "WARNING",
            *config,
        ]
    return ["python", "-m", MODULES[info.role], "--id", info.id, *config]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_subnet(client: DockerClient, name: str) -> str:
    """A subnet no network uses: the one the engine's own pool hands out to a probe network.

    Containers need fixed addresses, which Docker grants only on a network whose subnet was
    given explicitly; asking the engine first keeps clear of its other networks and of the
    host's routes.
    """
    probe = client.networks.create(f"{name}-probe", driver="bridge", check_duplicate=True)
    try:
        probe.reload()
        configs = probe.attrs.get("IPAM", {}).get("Config") or []
        subnet = next((c["Subnet"] for c in configs if "." in c.get("Subnet", "")), None)
    finally:
        probe.remove()
    if subnet is None:
        raise EngineUnavailable("the Docker engine gave the probe network no IPv4 subnet")
    return str(subnet)
