"""The nodes of the local Kubernetes: one per rack of the topology, plus the ``infra`` node.

Pure naming and addressing, shared by the control plane (localkube.py) and the objects and
config files it writes (manifests.py):

    parse_shape("3x2")      # [KubeNode("az-a-r1", "az-a", 1), ..., KubeNode("az-c-r2", "az-c", 6)]
    node.ip, node.pod_cidr  # "10.244.1.1", "10.244.1.0/24"
"""

from __future__ import annotations

from dataclasses import dataclass

CGROUP_PARENT = "gameday-k8s"
ZONE_LABEL, RACK_LABEL = "topology.kubernetes.io/zone", "gameday.dev/rack"
POOL_LABEL, INFRA_NODE = "gameday.dev/pool", "infra"


class LocalKubeError(RuntimeError):
    """The local Kubernetes cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class KubeNode:
    """One Kubernetes node: a rack of the topology, or the ``infra`` node (in no AZ)."""

    name: str  # "az-a-r1" or "infra"
    zone: str  # "az-a"; "" for the infra node
    index: int  # 1-based: its bridge, node IP and pod subnet

    @property
    def ip(self) -> str:
        return f"10.244.{self.index}.1"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def bridge(self) -> str:
        return f"gdk-{self.name}"[:15]

    @property
    def cgroup(self) -> str:
        return f"{CGROUP_PARENT}/{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        if not self.zone:
            return {POOL_LABEL: INFRA_NODE}
        return {ZONE_LABEL: self.zone, RACK_LABEL: self.name}

    @property
    def taints(self) -> list[dict[str, str]]:
        if self.zone:
            return []
        return [{"key": POOL_LABEL, "value": INFRA_NODE, "effect": "NoSchedule"}]


def parse_shape(shape: str, infra: bool = False) -> list[KubeNode]:
    """``"3x2"`` (AZs x racks per AZ) or a scenario topology ``"3x2x1"``: one node per rack;
    with ``infra`` one more node, ``infra``, in no AZ (tainted: only pods that tolerate it)."""
    parts = shape.lower().split("x")
    try:
        azs, racks = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise LocalKubeError(
            f"shape {shape!r}: expected AZS x RACKS like '3x2' (or a topology like '3x2x1')"
        ) from None
    if not 1 <= azs <= 26 or not 1 <= racks <= 9 or azs * racks > 60:
        raise LocalKubeError(f"shape {shape!r}: 1-26 AZs, 1-9 racks per AZ, at most 60 nodes")
    nodes: list[KubeNode] = []
    for a in range(azs):
        zone = f"az-{chr(ord('a') + a)}"
        for r in range(1, racks + 1):
            nodes.append(KubeNode(f"{zone}-r{r}", zone, len(nodes) + 1))
    if infra:
        nodes.append(KubeNode(INFRA_NODE, "", len(nodes) + 1))
    return nodes
