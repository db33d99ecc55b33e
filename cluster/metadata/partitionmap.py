"""The partition map: which hash range of which table lives in which replication group, where.

A table is split by the MD5 of its encoded partition-key value into ``n`` contiguous, equal hash
ranges; each range is a partition and a replication group of 3 replicas in 3 different AZs. This
module is pure: it computes ranges and placements and (de)serializes the map; the metadata store
keeps it and MemDS serves it.

    topo = parse_topology("3x2x1")
    spec = TableSpec("orders", KeySchema("id", "S"), partitions=4)
    layout = build_layout(topo, spec)
    layout.partitions[3].id                                  # -> 'orders.p3'
    layout.partitions[3].replicas                            # -> ('sn-a2', 'sn-b1', 'sn-c2')
    layout.partition_for(encode_key_value({"S": "o#17"}))    # -> the Partition owning that key
    pmap = PartitionMap(1, {"orders": layout})
    pmap.groups_on("sn-a1")                                  # -> ('orders.p0', 'orders.p2')

Hash ranges are inclusive on both ends (``hash_lo <= h <= hash_hi``) so that both bounds fit in
128 bits; in JSON they are 32 hex digits, because a JSON number that large is not portable.
The metadata store's own group is ``META_GROUP``, on ``meta_replicas(topology)``.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, get_args

from cluster.topology import Topology

HASH_BITS = 128
HASH_SPACE = 1 << HASH_BITS  # partition-key hashes are ints in [0, HASH_SPACE)
META_GROUP = "meta"  # the replication group of the metadata store itself
MAX_GROUP_ID = 128
REPLICAS = 3

# Literal strings rather than Enums: these are DynamoDB's own wire values, and the router passes
# them through from requests and into responses unchanged.
KeyType = Literal["S", "N", "B"]
BillingMode = Literal["PAY_PER_REQUEST", "PROVISIONED"]
TableStatus = Literal["CREATING", "ACTIVE", "DELETING"]
KeyRole = Literal["hash", "range"]

_TABLE_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,255}")  # DynamoDB's rule
_GROUP_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_PLAIN_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # no hidden or option-like dir names
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST_CHARS = 10


# --- hashing and ranges ----------------------------------------------------------------------


def partition_key_hash(encoded_pk: bytes) -> int:
    """The MD5 of an encoded partition-key value (``encode_key_value``), in [0, 2**128)."""
    digest = hashlib.md5(encoded_pk, usedforsecurity=False).digest()
    return int.from_bytes(digest, "big")


def hash_ranges(n: int) -> tuple[tuple[int, int], ...]:
    """``n`` contiguous inclusive ranges ``(lo, hi)`` covering [0, 2**128) exactly.

    Sizes differ by at most one hash value (2**128 is rarely a multiple of ``n``).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"a table needs at least one partition, got {n!r}")
    bounds = [i * HASH_SPACE // n for i in range(n + 1)]
    return tuple((bounds[i], bounds[i + 1] - 1) for i in range(n))


def group_id(table: str, index: int) -> str:
    """The replication group name of partition ``index`` of ``table``: ``"orders.p3"``.

    Group ids name directories, so they keep to [A-Za-z0-9_.-], at most 128 characters, and
    start with neither "." nor "-". A table name that does not fit (too long, or odd) keeps a
    readable prefix and gets a short stable hash of the full name: ``"<prefix>-<10 hex>.p3"``.
    """
    if index < 0:
        raise ValueError(f"partition index must be >= 0, got {index}")
    suffix = f".p{index}"
    if _PLAIN_STEM.fullmatch(table) and len(table) + len(suffix) <= MAX_GROUP_ID:
        return table + suffix
    digest = hashlib.sha256(table.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    room = MAX_GROUP_ID - len(suffix) - 1 - _DIGEST_CHARS
    stem = _UNSAFE.sub("_", table).lstrip(".-")[:room] or "t"
    return f"{stem}-{digest}{suffix}"


# --- table specs -----------------------------------------------------------------------------


def _check_choice(what: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_count(what: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class KeySchema:
    hash_name: str
    hash_type: KeyType
    range_name: str | None = None
    range_type: KeyType | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hash_name, str) or not self.hash_name:
            raise ValueError(f"the hash key needs a name, got {self.hash_name!r}")
        _check_choice("hash key type", self.hash_type, get_args(KeyType))
        if (self.range_name is None) != (self.range_type is None):
            raise ValueError("a range key needs both a name and a type")
        if self.range_name is not None:
            if not isinstance(self.range_name, str) or not self.range_name:
                raise ValueError(f"the range key needs a name, got {self.range_name!r}")
            if self.range_name == self.hash_name:
                raise ValueError(f"hash and range key are both named {self.hash_name!r}")
            _check_choice("range key type", self.range_type, get_args(KeyType))

    def names(self) -> tuple[str, ...]:
        """The key attribute names: the hash key, then the range key if there is one."""
        return (self.hash_name,) if self.range_name is None else (self.hash_name, self.range_name)

    def parts(self) -> tuple[tuple[KeyRole, str, KeyType], ...]:
        """``(role, name, type)`` per key attribute: ``(("hash", "id", "S"), ...)``."""
        hash_part: tuple[KeyRole, str, KeyType] = ("hash", self.hash_name, self.hash_type)
        if self.range_name is None or self.range_type is None:
            return (hash_part,)
        return (hash_part, ("range", self.range_name, self.range_type))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # its four fields, all plain values

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KeySchema:
        return cls(d["hash_name"], d["hash_type"], d.get("range_name"), d.get("range_type"))


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table as DescribeTable reports it, plus how many partitions it is split into."""

    name: str
    key_schema: KeySchema
    billing_mode: BillingMode = "PAY_PER_REQUEST"
    read_capacity: int = 0
    write_capacity: int = 0
    partitions: int = 1
    created_at: float = 0.0  # seconds since the epoch
    status: TableStatus = "CREATING"
    # What DescribeTable and the table-settings operations report; none of it changes placement.
    table_id: str = ""  # a UUID, DynamoDB's TableId
    tags: tuple[tuple[str, str], ...] = ()  # (key, value), in the order they were set
    ttl_attribute: str | None = None  # Time to Live enabled on this attribute, or disabled
    sse: bool = False  # SSESpecification Enabled (KMS) asked for at creation
    billing_changed_at: float = 0.0  # the last UpdateTable that made the table PAY_PER_REQUEST
    table_class: str = "STANDARD"  # or STANDARD_INFREQUENT_ACCESS; only reported
    deletion_protection: bool = False  # DeleteTable refuses the table while it is set
    # The map version that created the table (0: created before incarnations existed). Group
    # ids come from the table's name, so a table created again under the same name reuses them;
    # its higher incarnation tells storage nodes that a replica they kept from the deleted
    # table (down during DeleteTable) is not one of its own (StorageNode.create_group).
    incarnation: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TABLE_NAME.fullmatch(self.name):
            raise ValueError(
                f"table names are 3-255 characters of [a-zA-Z0-9_.-]; got {self.name!r}"
            )
        _check_choice("billing mode", self.billing_mode, get_args(BillingMode))
        _check_choice("table status", self.status, get_args(TableStatus))
        floor = 1 if self.billing_mode == "PROVISIONED" else 0
        _check_count("read capacity", self.read_capacity, floor)
        _check_count("write capacity", self.write_capacity, floor)
        _check_count("partitions", self.partitions, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key_schema": self.key_schema.to_dict(),
            "billing_mode": self.billing_mode,
            "read_capacity": self.read_capacity,
            "write_capacity": self.write_capacity,
            "partitions": self.partitions,
            "created_at": self.created_at,
            "status": self.status,
            "table_id": self.table_id,
            "tags": [list(tag) for tag in self.tags],
            "ttl_attribute": self.ttl_attribute,
            "sse": self.sse,
            "billing_changed_at": self.billing_changed_at,
            "table_class": self.table_class,
            "deletion_protection": self.deletion_protection,
            "incarnation": self.incarnation,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableSpec:
        return cls(
            name=d["name"],
            key_schema=KeySchema.from_dict(d["key_schema"]),
            billing_mode=d["billing_mode"],
            read_capacity=d["read_capacity"],
            write_capacity=d["write_capacity"],
            partitions=d["partitions"],
            created_at=float(d["created_at"]),
            status=d["status"],
            # Maps written before these settings existed lack them: the defaults apply.
            table_id=str(d.get("table_id") or ""),
            tags=tuple((str(k), str(v)) for k, v in d.get("tags") or ()),
            ttl_attribute=d.get("ttl_attribute"),
            sse=bool(d.get("sse", False)),
            billing_changed_at=float(d.get("billing_changed_at") or 0.0),
            table_class=str(d.get("table_class") or "STANDARD"),
            deletion_protection=bool(d.get("deletion_protection", False)),
            incarnation=int(d.get("incarnation") or 0),
        )


# --- partitions and layouts ------------------------------------------------------------------


def _hash_to_json(h: int) -> str:
    return f"{h:032x}"


def _hash_from_json(s: object) -> int:
    if not isinstance(s, str) or not re.fullmatch(r"[0-9a-f]{32}", s):
        raise ValueError(f"a hash bound is 32 lowercase hex digits, got {s!r}")
    return int(s, 16)


@dataclass(frozen=True, slots=True)
class Partition:
    """One hash range of one table, and the replication group (3 replicas) that holds it."""

    id: str  # the group id: group_id(table, index)
    table: str
    index: int
    hash_lo: int  # inclusive
    hash_hi: int  # inclusive
    replicas: tuple[str, str, str]  # storage node ids, in 3 different AZs
    # Its table's (``TableSpec.incarnation``; a layout sets it, the map stores it in the spec):
    # with ``id``, the group's identity. Requests name it, so that a node's replica of another
    # table of the same name (a deleted one's) refuses them (StorageNode.replica).
    incarnation: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _GROUP_ID.fullmatch(self.id):
            raise ValueError(f"group ids are 1-128 characters of [A-Za-z0-9_.-]; got {self.id!r}")
        _check_count("partition index", self.index, 0)
        if not 0 <= self.hash_lo <= self.hash_hi < HASH_SPACE:
            raise ValueError(f"bad hash range [{self.hash_lo:#x}, {self.hash_hi:#x}] in {self.id}")
        if len(self.replicas) != REPLICAS or len(set(self.replicas)) != REPLICAS:
            raise ValueError(f"{self.id} needs 3 distinct replicas, got {self.replicas!r}")

    def contains(self, h: int) -> bool:
        return self.hash_lo <= h <= self.hash_hi

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "table": self.table,
            "index": self.index,
            "hash_lo": _hash_to_json(self.hash_lo),
            "hash_hi": _hash_to_json(self.hash_hi),
            "replicas": list(self.replicas),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Partition:
        replicas = tuple(d["replicas"])
        if len(replicas) != REPLICAS:
            raise ValueError(f"{d['id']} needs 3 replicas, got {replicas!r}")
        return cls(
            id=d["id"],
            table=d["table"],
            index=d["index"],
            hash_lo=_hash_from_json(d["hash_lo"]),
            hash_hi=_hash_from_json(d["hash_hi"]),
            replicas=(replicas[0], replicas[1], replicas[2]),
        )


@dataclass(frozen=True, slots=True)
class TableLayout:
    """A table and its partitions, in hash order, covering the whole hash space."""

    spec: TableSpec
    partitions: tuple[Partition, ...]
    _los: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name, parts = self.spec.name, self.partitions
        if len(parts) != self.spec.partitions:
            raise ValueError(f"{name} has {self.spec.partitions} partitions, got {len(parts)}")
        expected_lo = 0
        for i, p in enumerate(parts):
            if p.table != name or p.index != i:
                raise ValueError(f"partition {i} of {name} is {p.table}[{p.index}] ({p.id})")
            if p.hash_lo != expected_lo:
                raise ValueError(f"{p.id} starts at {p.hash_lo:#x}, expected {expected_lo:#x}")
            expected_lo = p.hash_hi + 1
        if expected_lo != HASH_SPACE:
            raise ValueError(f"the partitions of {name} do not reach the end of the hash space")
        incarnation = self.spec.incarnation
        if any(p.incarnation != incarnation for p in parts):
            parts = tuple(replace(p, incarnation=incarnation) for p in parts)
            object.__setattr__(self, "partitions", parts)
        object.__setattr__(self, "_los", tuple(p.hash_lo for p in parts))

    def partition_for(self, encoded_pk: bytes) -> Partition:
        """The partition owning an encoded partition-key value."""
        return self.partition_for_hash(partition_key_hash(encoded_pk))

    def partition_for_hash(self, h: int) -> Partition:
        if not 0 <= h < HASH_SPACE:
            raise ValueError(f"hash out of range: {h}")
        return self.partitions[bisect.bisect_right(self._los, h) - 1]

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "partitions": [p.to_dict() for p in self.partitions]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableLayout:
        return cls(
            TableSpec.from_dict(d["spec"]),
            tuple(Partition.from_dict(p) for p in d["partitions"]),
        )


# --- placement -------------------------------------------------------------------------------


def place_partitions(
    topology: Topology, table: str, count: int, load: Mapping[str, int] | None = None
) -> tuple[Partition, ...]:
    """Split ``table`` into ``count`` partitions and place 3 replicas of each in 3 different AZs.

    Greedy and deterministic (same inputs, same output). ``load`` counts the replicas each node
    already holds for other groups (``PartitionMap.replicas_per_node()``); nodes absent from it
    hold none, and nodes absent from ``topology`` are ignored. For each partition:

    1. AZs: the 3 with the fewest replicas in total (ties: topology order). With exactly 3 AZs
       that is all of them, so every AZ gets one replica per partition.
    2. In each of those AZs, the node with the fewest replicas; ties go to the node on the
       least-loaded rack, then to the node sharing the fewest groups of this table with the
       replicas already chosen for this partition (so that no fixed triple of nodes holds the
       whole table), then to topology order.

    Balance: if ``load`` is itself balanced the way this function leaves it (AZ totals within 1
    of each other, node counts within 1), every node's count stays within 1 of every other's.
    (Least-loaded node first and least-loaded rack first pick the same node then; when ``load``
    is lopsided, e.g. after a node was replaced by an empty one, the node-first order restores
    balance sooner.)

    The replicas of partition i are listed starting from the AZ ``i % 3`` of the chosen three,
    so code that favours the first replica (say, as the first leader) spreads over the AZs.
    """
    ranges = hash_ranges(count)
    load = load or {}
    for node_id, n in load.items():
        _check_count(f"load of {node_id}", n, 0)
    nodes = topology.storage_nodes()
    position = {n.id: i for i, n in enumerate(nodes)}
    held = {n.id: load.get(n.id, 0) for n in nodes}
    by_az = topology.by_az()
    by_rack = topology.by_rack()
    az_rank = {az: i for i, az in enumerate(topology.azs)}
    shared: Counter[tuple[str, str]] = Counter()  # groups of this table two nodes have in common

    def rack_total(rack: str) -> int:
        return sum(held[n.id] for n in by_rack[rack])

    def az_total(az: str) -> int:
        return sum(held[n.id] for n in by_az[az])

    out: list[Partition] = []
    for index, (lo, hi) in enumerate(ranges):
        azs = sorted(topology.azs, key=lambda az: (az_total(az), az_rank[az]))[:REPLICAS]
        azs.sort(key=az_rank.__getitem__)
        chosen: list[str] = []
        for az in azs:
            best = min(
                by_az[az],
                key=lambda n: (
                    held[n.id],
                    rack_total(n.rack),
                    sum(shared[(c, n.id)] for c in chosen),
                    position[n.id],
                ),
            )
            chosen.append(best.id)
        for a in chosen:
            held[a] += 1
            for b in chosen:
                if a != b:
                    shared[(a, b)] += 1
        k = index % REPLICAS
        r = chosen[k:] + chosen[:k]
        out.append(Partition(group_id(table, index), table, index, lo, hi, (r[0], r[1], r[2])))
    return tuple(out)


def build_layout(
    topology: Topology, spec: TableSpec, load: Mapping[str, int] | None = None
) -> TableLayout:
    """``TableLayout`` for ``spec`` with ``spec.partitions`` freshly placed partitions."""
    return TableLayout(spec, place_partitions(topology, spec.name, spec.partitions, load))


def meta_replicas(topology: Topology) -> tuple[str, str, str]:
    """The metadata group's replicas: the first storage node of each of the first 3 AZs."""
    by_az = topology.by_az()
    a, b, c = (by_az[az][0].id for az in topology.azs[:REPLICAS])
    return (a, b, c)


# --- the map ---------------------------------------------------------------------------------


def next_version(after: int) -> int:
    """A version for a change of the map made after version ``after``: the wall clock in ms,
    or ``after + 1`` when the clock is behind it (versions only grow, whoever's clock)."""
    return max(int(time.time() * 1000), after + 1)


@dataclass(frozen=True, slots=True)
class PartitionMap:
    """Every table's layout, versioned: each change makes a new map with a higher version.

    ``tables`` is copied into a read-only mapping, so a map handed around cannot change.
    """

    version: int
    tables: Mapping[str, TableLayout] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_count("partition map version", self.version, 0)
        tables = dict(sorted(self.tables.items()))
        seen: set[str] = {META_GROUP}
        for name, layout in tables.items():
            if layout.spec.name != name:
                raise ValueError(f"table {name!r} holds the layout of {layout.spec.name!r}")
            for p in layout.partitions:
                if p.id in seen:
                    raise ValueError(f"group id {p.id!r} is used twice")
                seen.add(p.id)
        object.__setattr__(self, "tables", MappingProxyType(tables))

    def __hash__(self) -> int:
        return hash((self.version, tuple(self.tables.items())))

    def layout(self, table: str) -> TableLayout:
        try:
            return self.tables[table]
        except KeyError:
            raise KeyError(f"no table {table!r} in partition map v{self.version}") from None

    def partitions(self) -> Iterator[Partition]:
        """Every partition: tables by name, then in hash order."""
        for layout in self.tables.values():
            yield from layout.partitions

    def group(self, gid: str) -> Partition:
        for p in self.partitions():
            if p.id == gid:
                return p
        raise KeyError(f"no group {gid!r} in partition map v{self.version}")

    def replicas_per_node(self) -> dict[str, int]:
        """Replicas each node holds (nodes holding none are absent); feeds ``place_partitions``."""
        counts = Counter(r for p in self.partitions() for r in p.replicas)
        return dict(sorted(counts.items()))

    def groups_on(self, node_id: str) -> tuple[str, ...]:
        """The ids of the groups with a replica on ``node_id``, tables by name, in hash order."""
        return tuple(p.id for p in self.partitions() if node_id in p.replicas)

    def with_table(self, layout: TableLayout) -> PartitionMap:
        """A map one version newer with ``layout`` added or replaced."""
        return PartitionMap(self.version + 1, {**self.tables, layout.spec.name: layout})

    def without_table(self, table: str) -> PartitionMap:
        """A map one version newer without ``table``."""
        self.layout(table)
        return PartitionMap(self.version + 1, {n: t for n, t in self.tables.items() if n != table})

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "tables": {name: layout.to_dict() for name, layout in self.tables.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartitionMap:
        return cls(
            d["version"],
            {name: TableLayout.from_dict(t) for name, t in d["tables"].items()},
        )
