"""The cluster's shape: availability zones, racks, storage nodes, routers and MemDS servers.

A topology is a value (frozen, hashable, JSON-ready) from which every process id is derived, so
that the backends, the fault catalog and the placement of partitions all agree on names. Names
are short and stable because they show up in fault targets and logs:

    topo = parse_topology("3x2x1")        # 3 AZs x 2 racks per AZ x 1 storage node per rack
    [n.id for n in topo.storage_nodes()]  # -> ['sn-a1', 'sn-a2', 'sn-b1', 'sn-b2', 'sn-c1', ...]
    topo.rack_of("sn-a2")                 # -> 'az-a/r2'
    [p.id for p in topo.routers()]        # -> ['rt-a', 'rt-b', 'rt-c']
    topo.az_of("md-b")                    # -> 'az-b'

Naming rules: AZs are ``az-a``, ``az-b``, ...; racks ``az-a/r1``, ``az-a/r2``, ...; storage nodes
``sn-<az letter><n>`` numbered within their AZ across its racks (rack 1 first); routers ``rt-a``
and MemDS servers ``md-a`` (``rt-a1``, ``rt-a2``, ... when an AZ has more than one). Routers and
MemDS servers belong to an AZ but to no rack: powering off a rack takes only its storage nodes.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_TOPOLOGY = "3x2x1"
MIN_AZS = 3  # every partition has 3 replicas in 3 different AZs
MAX_AZS = len(string.ascii_lowercase)  # az-a .. az-z

_AZ_NAME = re.compile(r"az-([a-z])")
_SHAPE = re.compile(r"(\d+)x(\d+)x(\d+)", re.IGNORECASE)


class Role(StrEnum):
    STORAGE = "storage"
    ROUTER = "router"
    MEMDS = "memds"


@dataclass(frozen=True, slots=True)
class StorageNodeSpec:
    id: str  # "sn-a1"
    az: str  # "az-a"
    rack: str  # "az-a/r1"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    id: str  # "rt-a", "md-a" or, from Topology.processes(), a storage node id
    role: Role
    az: str


def az_name(index: int) -> str:
    """The name of the AZ at 0-based ``index``: 0 -> ``az-a``, 25 -> ``az-z``."""
    if not 0 <= index < MAX_AZS:
        raise ValueError(f"AZ index must be in [0, {MAX_AZS}), got {index}")
    return f"az-{string.ascii_lowercase[index]}"


@dataclass(frozen=True, slots=True)
class Topology:
    """AZs (named ``az-<letter>``, distinct, at least 3), each with the same racks and nodes.

    Every derived listing is in a stable order: AZs as given, then racks, then nodes.
    """

    azs: tuple[str, ...]
    racks_per_az: int
    nodes_per_rack: int
    routers_per_az: int = 1
    memds_per_az: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.azs, tuple) or not all(isinstance(a, str) for a in self.azs):
            raise ValueError(f"azs must be a tuple of names like 'az-a', got {self.azs!r}")
        bad = [a for a in self.azs if not _AZ_NAME.fullmatch(a)]
        if bad:
            raise ValueError(f"AZ names must look like 'az-a' .. 'az-z', got {bad!r}")
        if len(set(self.azs)) != len(self.azs):
            raise ValueError(f"AZ names must be distinct, got {list(self.azs)!r}")
        check_az_count(len(self.azs))
        for what, value in (
            ("racks per AZ", self.racks_per_az),
            ("nodes per rack", self.nodes_per_rack),
            ("routers per AZ", self.routers_per_az),
            ("MemDS servers per AZ", self.memds_per_az),
        ):
            check_positive(what, value)

    @classmethod
    def from_counts(
        cls,
        azs: int,
        racks_per_az: int,
        nodes_per_rack: int,
        *,
        routers_per_az: int = 1,
        memds_per_az: int = 1,
    ) -> Topology:
        """``Topology.from_counts(3, 2, 1)``: AZs ``az-a`` .. named in order."""
        check_az_count(azs)
        return cls(
            tuple(az_name(i) for i in range(azs)),
            racks_per_az,
            nodes_per_rack,
            routers_per_az=routers_per_az,
            memds_per_az=memds_per_az,
        )

    @property
    def shape(self) -> str:
        """The counts as ``parse_topology`` reads them, e.g. ``"3x2x1"``."""
        return f"{len(self.azs)}x{self.racks_per_az}x{self.nodes_per_rack}"

    # --- derived listings ------------------------------------------------------------------

    def racks(self) -> tuple[str, ...]:
        return tuple(rack_name(az, r) for az in self.azs for r in range(1, self.racks_per_az + 1))

    def storage_nodes(self) -> tuple[StorageNodeSpec, ...]:
        return _derive(self).storage

    def routers(self) -> tuple[ProcessSpec, ...]:
        return _derive(self).routers

    def memds(self) -> tuple[ProcessSpec, ...]:
        return _derive(self).memds

    def processes(self) -> tuple[ProcessSpec, ...]:
        """Every process: routers, then MemDS servers, then storage nodes."""
        return _derive(self).processes

    def by_az(self) -> dict[str, tuple[StorageNodeSpec, ...]]:
        """Storage nodes per AZ, AZs in order."""
        return {az: tuple(n for n in self.storage_nodes() if n.az == az) for az in self.azs}

    def by_rack(self) -> dict[str, tuple[StorageNodeSpec, ...]]:
        """Storage nodes per rack, racks in order."""
        return {
            rack: tuple(n for n in self.storage_nodes() if n.rack == rack) for rack in self.racks()
        }

    # --- lookups ---------------------------------------------------------------------------

    def node(self, node_id: str) -> StorageNodeSpec:
        """The storage node ``node_id``; KeyError when there is none."""
        try:
            return _derive(self).node_index[node_id]
        except KeyError:
            raise KeyError(f"no storage node {node_id!r} in topology {self.shape}") from None

    def rack_of(self, node_id: str) -> str:
        """The rack of storage node ``node_id`` (routers and MemDS servers have none)."""
        return self.node(node_id).rack

    def az_of(self, process_id: str) -> str:
        """The AZ of any process: storage node, router or MemDS server."""
        try:
            return _derive(self).az_index[process_id]
        except KeyError:
            raise KeyError(f"no process {process_id!r} in topology {self.shape}") from None

    # --- serialization ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "azs": list(self.azs),
            "racks_per_az": self.racks_per_az,
            "nodes_per_rack": self.nodes_per_rack,
            "routers_per_az": self.routers_per_az,
            "memds_per_az": self.memds_per_az,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Topology:
        azs = d["azs"]
        if not isinstance(azs, list | tuple):
            raise ValueError(f"azs must be a list of AZ names, got {azs!r}")
        return cls(
            tuple(azs),
            d["racks_per_az"],
            d["nodes_per_rack"],
            routers_per_az=d.get("routers_per_az", 1),
            memds_per_az=d.get("memds_per_az", 1),
        )


def rack_name(az: str, rack: int) -> str:
    """``rack_name("az-a", 2)`` -> ``"az-a/r2"`` (racks count from 1)."""
    return f"{az}/r{rack}"


def parse_topology(text: str = DEFAULT_TOPOLOGY) -> Topology:
    """Read ``AZSxRACKSxNODES`` (AZs x racks per AZ x storage nodes per rack), e.g. ``"3x2x1"``.

    Raises ValueError saying what is wrong and what a good value looks like.
    """
    m = _SHAPE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"topology must look like AZSxRACKSxNODES, e.g. 3x2x1; got {text!r}")
    azs, racks, nodes = (int(g) for g in m.groups())
    try:
        check_az_count(azs)
        check_positive("racks per AZ", racks)
        check_positive("nodes per rack", nodes)
    except ValueError as e:
        raise ValueError(f"topology {text.strip()!r}: {e}") from None
    return Topology.from_counts(azs, racks, nodes)


def check_az_count(n: int) -> None:
    check_positive("the number of AZs", n)
    if n < MIN_AZS:
        raise ValueError(
            f"at least {MIN_AZS} AZs are needed because every partition has 3 replicas in "
            f"3 different AZs; got {n}"
        )
    if n > MAX_AZS:
        raise ValueError(f"at most {MAX_AZS} AZs (az-a .. az-z) are supported; got {n}")


def check_positive(what: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


# --- derivation (cached per topology value) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Derived:
    storage: tuple[StorageNodeSpec, ...]
    routers: tuple[ProcessSpec, ...]
    memds: tuple[ProcessSpec, ...]
    processes: tuple[ProcessSpec, ...]
    node_index: Mapping[str, StorageNodeSpec]
    az_index: Mapping[str, str]


def _per_az_ids(prefix: str, letter: str, count: int) -> list[str]:
    if count == 1:
        return [f"{prefix}-{letter}"]
    return [f"{prefix}-{letter}{i}" for i in range(1, count + 1)]


@functools.lru_cache(maxsize=64)
def _derive(topo: Topology) -> _Derived:
    storage: list[StorageNodeSpec] = []
    routers: list[ProcessSpec] = []
    memds: list[ProcessSpec] = []
    for az in topo.azs:
        letter = az[len("az-") :]
        for r in range(topo.racks_per_az):
            for n in range(topo.nodes_per_rack):
                number = r * topo.nodes_per_rack + n + 1
                storage.append(StorageNodeSpec(f"sn-{letter}{number}", az, rack_name(az, r + 1)))
        routers += [
            ProcessSpec(i, Role.ROUTER, az) for i in _per_az_ids("rt", letter, topo.routers_per_az)
        ]
        memds += [
            ProcessSpec(i, Role.MEMDS, az) for i in _per_az_ids("md", letter, topo.memds_per_az)
        ]
    processes = (
        *routers,
        *memds,
        *(ProcessSpec(n.id, Role.STORAGE, n.az) for n in storage),
    )
    return _Derived(
        storage=tuple(storage),
        routers=tuple(routers),
        memds=tuple(memds),
        processes=processes,
        node_index={n.id: n for n in storage},
        az_index={p.id: p.az for p in processes},
    )
