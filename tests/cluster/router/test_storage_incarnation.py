"""A router's data requests name the table's incarnation (StorageAccess, session 13).

Group ids come from the table's name: a node down while "orders" was deleted and created
again may still host the deleted table's replica of "orders.p0", and with another such node
elect a leader of the deleted group. Requests that named no table were served (and writes
acknowledged) by it; the write was lost when the node retired that replica. Each request now
names the incarnation of the layout it was routed with (``Partition.incarnation``, set from
the table's spec), which the node compares with its replica's (StorageNode.replica). No
cluster: the nodes are stand-ins applying that rule.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.metadata.partitionmap import KeySchema, TableLayout, TableSpec, build_layout
from cluster.router.storage_access import StorageAccess
from cluster.storage.commands import PutCommand
from cluster.topology import parse_topology
from tests.cluster.router.test_eventual_reads import NODES, _config

OLD, NEW = 1_000, 2_000


class Replica:
    """A node's replica of "orders.p0" of ``incarnation``, which says it leads."""

    def __init__(self, name: str, incarnation: int, asked: list[tuple[str, str, Any]]) -> None:
        self.name, self.incarnation, self.asked = name, incarnation, asked

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        wanted = fields.get("incarnation")
        self.asked.append((self.name, op, wanted))
        if wanted and wanted != self.incarnation:
            return {"error": "NotLeader", "leader": None}
        if op == "propose":
            return {"result": {"ok": True}}
        return {"item": {"by": {"S": self.name}}}


def _layout(incarnation: int) -> TableLayout:
    spec = TableSpec("orders", KeySchema("pk", "S"), status="ACTIVE", incarnation=incarnation)
    return build_layout(parse_topology("3x1x1"), spec, {})


def test_partitions_carry_their_tables_incarnation() -> None:
    layout = _layout(NEW)
    assert [p.incarnation for p in layout.partitions] == [NEW]
    again = TableLayout.from_dict(layout.to_dict())  # the map keeps it in the spec only
    assert [p.incarnation for p in again.partitions] == [NEW]
    assert "incarnation" not in layout.to_dict()["partitions"][0]


def test_only_the_tables_replicas_serve_and_acknowledge() -> None:
    async def main() -> None:
        asked: list[tuple[str, str, Any]] = []
        access = StorageAccess(_config(), "rt-a")
        # sn-a1 and sn-b1 kept the deleted table's replica (OLD); only sn-c1 is NEW's.
        replicas = {n: Replica(n, NEW if n == "sn-c1" else OLD, asked) for n in NODES}
        access.nodes.client = replicas.__getitem__  # type: ignore[assignment,method-assign]
        partition = _layout(NEW).partitions[0]
        assert set(partition.replicas) == set(NODES)
        cmd = PutCommand("orders", b"k", b"", {"v": {"S": "k"}})
        result = await access.write(partition, cmd, 2.0)
        assert result.ok
        assert asked[-1][:2] == ("sn-c1", "propose")
        for consistent in (True, False):
            reply = await access.read(
                partition, "get", consistent, 2.0, tbl="orders", pk=b"k", sk=b""
            )
            assert reply["item"] == {"by": {"S": "sn-c1"}}, consistent
        assert {wanted for _, _, wanted in asked} == {NEW}, asked
        await access.close()

    asyncio.run(main())
