"""The cluster as fault planning sees it: topology, processes by role, groups, a seeded rng.

Planning is pure: it looks only at a ``ClusterView``. A view is either *assumed* (what a fresh
deployment of a topology would look like, for validating scenarios before anything runs) or
taken *from the config* of a deployed cluster plus its nodes' group status.

    view = ClusterView.assumed(parse_topology("3x2x1"))
    view.in_az("az-b")            # -> frozenset({'sn-b1', 'sn-b2', 'rt-b', 'md-b'})
    ("sn-a1", "sn-b1") in view.links()                  # -> True
    live = ClusterView.from_config(config, groups_from_status(statuses))
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.links import LinkPair, linked_pairs
from cluster.config import ClusterConfig
from cluster.metadata.partitionmap import META_GROUP, meta_replicas, place_partitions
from cluster.topology import Topology, parse_topology

ROLES = ("storage", "router", "memds", "gac")
DEFAULT_TABLE = "gameday-register"  # the register workload's table (workloads/catalog.py)


@dataclass(frozen=True, slots=True)
class ReplicaGroup:
    """A replication group's members and its current leader (None while there is none)."""

    group: str
    members: tuple[str, ...]
    leader: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ClusterView:
    """What planning may look at: topology, process ids by role, groups, a seeded rng."""

    topology: Topology
    roles: Mapping[str, tuple[str, ...]]  # "storage" | "router" | "memds" | "gac" -> ids
    process_azs: Mapping[str, str]  # process id -> AZ
    groups: Mapping[str, ReplicaGroup] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    @classmethod
    def assumed(
        cls,
        topology: Topology,
        *,
        partitions: int = 4,
        table: str = DEFAULT_TABLE,
        rng: random.Random | None = None,
    ) -> ClusterView:
        """The view a fresh cluster would give: gac in the first AZ, ``table`` placed the way
        the metadata store places it, every group led by its first replica."""
        groups = {META_GROUP: meta_replicas(topology)}
        groups |= {p.id: p.replicas for p in place_partitions(topology, table, partitions)}
        return cls(
            topology,
            {
                "storage": tuple(n.id for n in topology.storage_nodes()),
                "router": tuple(p.id for p in topology.routers()),
                "memds": tuple(p.id for p in topology.memds()),
                "gac": ("gac",),
            },
            {**{p.id: p.az for p in topology.processes()}, "gac": topology.azs[0]},
            {g: ReplicaGroup(g, m, m[0]) for g, m in groups.items()},
            rng or random.Random(0),
        )

    @classmethod
    def from_config(
        cls,
        config: ClusterConfig,
        groups: Mapping[str, ReplicaGroup] | None = None,
        rng: random.Random | None = None,
    ) -> ClusterView:
        """The view of a deployed cluster: its config plus group status from its nodes."""
        roles = {
            r: tuple(sorted(p.id for p in config.processes.values() if p.role == r)) for r in ROLES
        }
        return cls(
            parse_topology(config.topology),
            roles,
            {p.id: p.az for p in config.processes.values()},
            dict(groups or {}),
            rng or random.Random(0),
        )

    def with_rng(self, rng: random.Random) -> ClusterView:
        return dataclasses.replace(self, rng=rng)

    def with_groups(self, groups: Mapping[str, ReplicaGroup]) -> ClusterView:
        return dataclasses.replace(self, groups=dict(groups))

    @property
    def storage(self) -> tuple[str, ...]:
        return self.roles.get("storage", ())

    def processes(self) -> tuple[str, ...]:
        """Every process: storage nodes, routers, MemDS servers, gac."""
        return tuple(p for role in ROLES for p in self.roles.get(role, ()))

    def links(self) -> frozenset[LinkPair]:
        """Every directed link that carries traffic (chaos/links.py, as the mesh has them)."""
        return frozenset(linked_pairs(self.roles))

    def in_az(self, az: str) -> frozenset[str]:
        return frozenset(p for p in self.processes() if self.process_azs.get(p) == az)


def groups_from_status(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, ReplicaGroup]:
    """Groups and leaders from storage nodes' ``/replicas`` bodies (None for a node that is down).

    Each group's members and leader come from the replica reporting the highest term; a replica
    that says it is the leader wins ties.
    """
    best: dict[str, tuple[tuple[int, int], ReplicaGroup]] = {}
    for node, body in sorted(statuses.items()):
        for r in (body or {}).get("replicas", []):
            leader = r.get("leader") or (node if r.get("role") == "leader" else None)
            rank = (int(r.get("term", 0)), 1 if r.get("role") == "leader" else 0)
            view = ReplicaGroup(str(r["group"]), tuple(sorted(r.get("members", ()))), leader)
            if r["group"] not in best or rank > best[r["group"]][0]:
                best[r["group"]] = (rank, view)
    return {g: v for g, (_, v) in sorted(best.items())}
