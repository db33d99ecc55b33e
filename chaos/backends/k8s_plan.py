"""What the k8s backend decides without a cluster: names, chart values, which nodes lose power.

Pure functions and values (chaos/backends/k8s.py applies them through the Kubernetes API):

    state = K8sState(topology="3x2x1")          # the release: name, namespace, kubeconfig
    chart_values(state)                          # the values helm installs charts/gameday with
    plan_power({"sn-a1", "rt-a"}, on_node, set(), True)   # (["az-a-r1"], []): dark nodes, pod kills
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chaos.backends.base import DEFAULT_ACCESS_KEY, FIRST_PROXY_PORT
from cluster.config import ClusterConfig, ProcessInfo
from cluster.topology import parse_topology

STATE_FILE = "k8s.json"
POWER_FILE = "power.json"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
PROCESS = "gameday.io/process"
ENDPOINT_OF = "gameday.io/endpoint-of"  # on each router's own ClusterIP Service
ZONE_LABEL = "topology.kubernetes.io/zone"
LOCAL_RACK_LABEL = "gameday.dev/rack"  # what the local Kubernetes labels its nodes with
LOCAL_STORAGE_CLASS = "gameday-local"
POOL_LABEL, INFRA_POOL = "gameday.dev/pool", "infra"  # the local Kubernetes' node outside the AZs
INFRA_TOLERATION = {
    "key": POOL_LABEL,
    "operator": "Equal",
    "value": INFRA_POOL,
    "effect": "NoSchedule",
}
POD_CACHE_SECONDS = 0.25
CANNOT_START = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "RunContainerError",
    }
)
KILL_GATHER_SECONDS = 0.05  # kills of one fault arrive back to back: power off nodes as a whole
#: The mesh pod's kernel settings on the local Kubernetes, whose kubelets allow them
#: (chaos/k8s/manifests.py). Toxiproxy dials a link's upstream in its accept loop without a
#: timeout, and a pod on a powered-off node keeps its IP in DNS until it comes back elsewhere:
#: a dial to it hung until the kernel gave up the SYN (measured: 3 s to 39 s; up to ~2 min by
#: default), and the link took no connection meanwhile, even after the node was back (the az-b
#: split of az-outages lost links a->c that way: 33% available). One SYN retry: 3 s at most.
MESH_SYSCTLS = {"net.ipv4.tcp_syn_retries": "1"}


class K8sError(RuntimeError):
    """Kubernetes (or the local one) cannot do what was asked; the message says why."""


class K8sState(BaseModel):
    """Where the release lives, saved as ``k8s.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release: str = "gameday"
    namespace: str = "gameday"
    kubeconfig: str | None = None  # None: the project's local Kubernetes (gameday k8s up)
    topology: str = "3x2x1"
    partitions: int = 4
    owns_namespace: bool = False  # created by ``up``: ``down --wipe`` deletes it

    @property
    def local(self) -> bool:
        return self.kubeconfig is None

    @property
    def fullname(self) -> str:
        """The chart's name prefix (templates/_helpers.tpl: gameday.fullname)."""
        name = self.release if "gameday" in self.release else f"{self.release}-gameday"
        return name[:40].rstrip("-")


class PowerState(BaseModel):
    """What this backend holds down, saved as ``power.json``."""

    nodes_off: dict[str, list[str]] = Field(default_factory=dict)  # node -> its processes
    scaled_down: list[str] = Field(default_factory=list)  # processes whose workload is at 0
    cordoned: list[str] = Field(default_factory=list)  # nodes this backend cordoned


def default_namespace(data_dir: Path) -> str:
    """``gameday-<hash>``: stable for a data dir, distinct between data dirs."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"gameday-{digest}"


def is_k8s_cluster(data_dir: Path) -> bool:
    return (data_dir / STATE_FILE).exists()


def chart_values(state: K8sState) -> dict[str, Any]:
    """The chart values for this release (the rest are the chart's defaults)."""
    topo = parse_topology(state.topology)
    values: dict[str, Any] = {
        "topology": {
            "azs": len(topo.azs),
            "racksPerAz": topo.racks_per_az,
            "nodesPerRack": topo.nodes_per_rack,
            "partitions": state.partitions,
        },
        "credentials": {"accessKeyId": DEFAULT_ACCESS_KEY},
        "mesh": {"enabled": True, "firstProxyPort": FIRST_PROXY_PORT},
    }
    if state.local:
        values["image"] = {"pullPolicy": "Never"}  # imported into every node, no registry
        values["placement"] = {"rackLabel": LOCAL_RACK_LABEL}
        values["storage"] = {"storageClassName": LOCAL_STORAGE_CLASS}
        # One pod carries every link: it runs on the infra node, outside every AZ, so that no
        # AZ or rack power-off takes the whole mesh down (as the Toxiproxy container on Docker).
        infra = {"nodeSelector": {POOL_LABEL: INFRA_POOL}, "tolerations": [INFRA_TOLERATION]}
        values["mesh"].update(infra)
        values["mesh"]["sysctls"] = [{"name": k, "value": v} for k, v in MESH_SYSCTLS.items()]
        values["test"] = infra
    return values


def unschedulable(pod: Any) -> bool:
    """The scheduler found no node for it (its nodes are cordoned, drained or full)."""
    if pod.spec.node_name:
        return False
    return any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in pod.status.conditions or []
    )


def plan_power(
    kills: set[str], on_node: dict[str, set[str]], nodes_off: set[str], can_power: bool
) -> tuple[list[str], list[str]]:
    """Which Kubernetes nodes to power off and which processes to kill one pod at a time.

    A node goes dark only when every release pod on it is to be killed (a power cut takes
    everything on the machine; taking a process the fault spared would widen its blast
    radius) and when its power is ours to cut (``can_power``). Processes on nodes that are
    already dark are down already.

    >>> plan_power({"sn-a1", "rt-a"}, {"n1": {"sn-a1", "rt-a"}, "n2": {"sn-a2"}}, set(), True)
    (['n1'], [])
    >>> plan_power({"sn-a1"}, {"n1": {"sn-a1", "rt-a"}}, set(), True)
    ([], ['sn-a1'])
    """
    dark = sorted(
        node
        for node, there in on_node.items()
        if can_power and there and there <= kills and node not in nodes_off
    )
    covered = {p for node in (*dark, *nodes_off) for p in on_node.get(node, ())}
    return dark, sorted(kills - covered)


def placeholder_config(state: K8sState) -> ClusterConfig:
    """The config before the release exists: process ids from the topology, no addresses."""
    topo = parse_topology(state.topology)
    processes: dict[str, ProcessInfo] = {}
    for node in topo.storage_nodes():
        processes[node.id] = ProcessInfo(
            id=node.id, role="storage", az=node.az, rack=node.rack,
            listen="0.0.0.0:7100", admin="0.0.0.0:7180",
        )  # fmt: skip
    for spec in topo.memds():
        processes[spec.id] = ProcessInfo(
            id=spec.id, role="memds", az=spec.az, listen="0.0.0.0:7300", admin="0.0.0.0:7300"
        )
    for spec in topo.routers():
        processes[spec.id] = ProcessInfo(
            id=spec.id, role="router", az=spec.az, listen="0.0.0.0:8000", admin="0.0.0.0:8000"
        )
    processes["gac"] = ProcessInfo(
        id="gac", role="gac", az=topo.azs[0], listen="0.0.0.0:7400", admin="0.0.0.0:7400"
    )
    return ClusterConfig(
        topology=state.topology,
        processes=processes,
        credentials={},
        default_partitions=state.partitions,
    )


def at_pod_addresses(
    processes: dict[str, ProcessInfo], pods: dict[str, Any]
) -> dict[str, ProcessInfo]:
    """``processes`` with each listen and admin address on its pod's IP (same ports); a
    process without a pod, or whose pod has no IP yet, keeps its address."""
    moved: dict[str, ProcessInfo] = {}
    for process_id, info in processes.items():
        pod = pods.get(process_id)
        ip = None if pod is None else pod.status.pod_ip
        if ip is None:
            moved[process_id] = info
            continue
        listen = f"{ip}:{info.listen.rsplit(':', 1)[1]}"
        admin = f"{ip}:{info.admin.rsplit(':', 1)[1]}"
        moved[process_id] = info.model_copy(update={"listen": listen, "admin": admin})
    return moved


def signal_pod(pod_uid: str, sig: signal.Signals) -> int:
    """Send ``sig`` to every process of the pod on this host (found by its cgroup). Returns how
    many got it. The pod's processes run on this host only on the local Kubernetes."""
    marks = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    hit = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if any(mark in cgroups for mark in marks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), sig)
                hit += 1
    return hit
