"""Which replica serves a router's eventually consistent reads (StorageAccess._read_any).

Each router reads a partition from a replica of its own choosing (rendezvous hashing of router,
partition and node), the routers together spread over the replicas; a replica that refused or
failed goes after the others. No cluster: the nodes are stand-ins that record who was asked.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from cluster.config import ClusterConfig, ProcessInfo
from cluster.metadata.partitionmap import HASH_SPACE, Partition
from cluster.router.storage_access import StorageAccess

NODES = ("sn-a1", "sn-b1", "sn-c1")
ROUTERS = ("rt-a", "rt-b", "rt-c")


def _config() -> ClusterConfig:
    processes = {}
    for i, name in enumerate(NODES + ROUTERS):
        role = "storage" if name.startswith("sn") else "router"
        az = f"az-{name[3]}"
        address = f"127.0.0.1:{7000 + i}"
        processes[name] = ProcessInfo(id=name, role=role, az=az, listen=address, admin=address)
    return ClusterConfig(processes=processes, credentials={"gameday": "x" * 32})


class StandIn:
    """A storage node's client that answers every call with ``reply`` and logs who was asked."""

    def __init__(self, name: str, asked: list[str], reply: dict[str, Any]) -> None:
        self.name, self.asked, self.reply = name, asked, reply

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.asked.append(self.name)
        return self.reply


def _access(router: str, asked: list[str], refusing: tuple[str, ...] = ()) -> StorageAccess:
    access = StorageAccess(_config(), router)
    nodes = {
        n: StandIn(n, asked, {"error": "NotLeader"} if n in refusing else {"item": None})
        for n in NODES
    }
    access.nodes.client = nodes.__getitem__  # type: ignore[assignment,method-assign]
    return access


def _partition(index: int) -> Partition:
    return Partition(f"t.p{index}", "t", index, 0, HASH_SPACE - 1, NODES)


async def _reads(access: StorageAccess, partition: Partition, count: int) -> None:
    for _ in range(count):
        reply = await access.read(partition, "get", False, 1.0, tbl="t", pk=b"k", sk=b"")
        assert reply == {"item": None}


def test_a_router_reads_a_partition_from_one_replica() -> None:
    for router in ROUTERS:
        asked: list[str] = []
        asyncio.run(_reads(_access(router, asked), _partition(0), 20))
        assert len(asked) == 20 and len(set(asked)) == 1


def test_routers_spread_the_partitions_over_their_replicas() -> None:
    first: Counter[str] = Counter()
    for router in ROUTERS:
        for index in range(30):
            asked: list[str] = []
            asyncio.run(_reads(_access(router, asked), _partition(index), 1))
            first[asked[0]] += 1
    assert set(first) == set(NODES) and min(first.values()) >= 15, first


def test_a_replica_that_refused_is_asked_after_the_others() -> None:
    asked: list[str] = []
    access = _access("rt-a", asked)
    asyncio.run(_reads(access, _partition(0), 1))
    preferred = asked[0]
    asked.clear()
    access = _access("rt-a", asked, refusing=(preferred,))
    asyncio.run(_reads(access, _partition(0), 3))
    # The first read asks it, hears NotLeader and moves on; the next ones go elsewhere first.
    assert asked[0] == preferred and preferred not in asked[1:] and len(asked) == 4


class Unconfirmed:
    """A replica its node restarted with and MemDS has not confirmed yet: it serves no read as
    it is (StorageNode._readable); the leader ``leads`` serves consistent ones (its lease)."""

    def __init__(self, name: str, leads: bool) -> None:
        self.name, self.leads = name, leads

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        if fields.get("consistent") and self.leads:
            return {"item": {"by": {"S": self.name}}}
        return {"error": "NotLeader", "leader": None}


def test_an_eventual_read_refused_by_every_replica_is_read_at_the_leader() -> None:
    """Every replica restarted while MemDS is out of reach: the read is not refused (503)."""
    access = StorageAccess(_config(), "rt-a")
    nodes = {n: Unconfirmed(n, n == "sn-b1") for n in NODES}
    access.nodes.client = nodes.__getitem__  # type: ignore[assignment,method-assign]
    read = access.read(_partition(0), "get", False, 1.0, tbl="t", pk=b"k", sk=b"")
    assert asyncio.run(read) == {"item": {"by": {"S": "sn-b1"}}}
