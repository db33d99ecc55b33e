"""The durable partition map: one item per table in the replicated ``meta`` group.

The map is never kept in one process's memory only: each table's layout is an item of the
``__tables`` table inside the ``meta`` replication group (3 replicas on 3 AZs), written with
conditional writes so two routers creating the same table cannot both win. MemDS servers read
it from here; routers change it here.

    meta = MetadataStore(GroupClient(addresses), replicas=("sn-a1", "sn-b1", "sn-c1"))
    pmap = await meta.read_map()
    await meta.create(layout)          # raises TableExists when the name is taken
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.storage.client import GroupClient
from cluster.storage.commands import Condition, PutCommand, encode_command
from cluster.storage.itemstore import encode_key_value

from .partitionmap import META_GROUP, PartitionMap, TableLayout

TABLES = "__tables"
DELETED = "DELETED"
DRAIN = "drain"  # a tombstone's Drain (JSON)
DRAINING = "draining"  # present while the Drain holds the name back: groups not yet dropped


@dataclass(frozen=True, slots=True)
class Drain:
    """Where a deleted table's groups still have to be dropped (DeleteTable, tabledrain.py).

    ``pending``: group -> the storage nodes that have not acknowledged its drop (every node of
    the cluster at first: a group's members may have changed since the map said so). A node
    that did acknowledge never hosts the group again (deleted.json), so it is never put back.
    The name stays taken (``MetadataStore.create``) while some group has 2 or more nodes
    pending: a group's members are at least 2 nodes (healing never shrinks it below), so a
    quorum of its replicas, whatever its members now, needs 2 nodes that did not drop it;
    with at most 1 left, the deleted table's groups can commit nothing more, and every write
    they acknowledged was acknowledged before the name could be used again."""

    table: str
    version: int  # the tombstone's (a progress write is over this tombstone only)
    incarnation: int  # the deleted table's: what the drops name
    pending: Mapping[str, tuple[str, ...]]
    since: float  # time.time() of the DeleteTable

    def holding(self) -> int:
        """How many groups keep the name taken (2 or more nodes have not dropped them)."""
        return sum(1 for nodes in self.pending.values() if len(nodes) >= 2)

    def waiting(self) -> list[str]:
        """The nodes the name waits for: those pending in a group that holds it (one of them
        dropping it is enough; a node gone for good shows here)."""
        return sorted({n for nodes in self.pending.values() if len(nodes) >= 2 for n in nodes})

    def done(self) -> bool:
        """Has every node dropped every group (nothing left to clean up either)?"""
        return not any(self.pending.values())

    def without(self, acked: Mapping[str, set[str]]) -> Drain:
        """This drain once the nodes in ``acked`` (group -> nodes) dropped those groups."""
        pending = {
            g: tuple(n for n in nodes if n not in acked.get(g, ()))
            for g, nodes in self.pending.items()
        }
        return Drain(self.table, self.version, self.incarnation, pending, self.since)

    def to_json(self) -> str:
        pending = {g: list(nodes) for g, nodes in sorted(self.pending.items())}
        body = {"incarnation": self.incarnation, "since": self.since, "pending": pending}
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Drain | None:
        """The drain of a tombstone item; None for one written before drains were recorded
        (its drops were best effort: nothing can say what they missed, so as before)."""
        if item.get("status", {}).get("S") != DELETED or DRAIN not in item:
            return None
        body = json.loads(item[DRAIN]["S"])
        pending = {str(g): tuple(str(n) for n in nodes) for g, nodes in body["pending"].items()}
        version = int(item["version"]["N"])
        table = str(item["name"]["S"])
        return cls(table, version, int(body["incarnation"]), pending, float(body["since"]))


class TableExists(Exception):
    pass


class MetadataUnavailable(Exception):
    """The meta group could not be read or written (no quorum, or unknown outcome)."""


class MetadataStore:
    def __init__(self, nodes: GroupClient, replicas: tuple[str, ...], deadline: float = 5.0):
        self.nodes = nodes
        self.replicas = replicas
        self.deadline = deadline

    async def read_map(self) -> PartitionMap:
        """The whole map, read consistently from the meta group's leader (paged)."""
        return self._map_of(await self._items())

    async def drains(self) -> list[Drain]:
        """The deleted tables whose groups are not dropped everywhere yet (consistent read)."""
        return self._drains_of(await self._items())

    async def scan(self) -> tuple[PartitionMap, list[Drain]]:
        """``read_map()`` and ``drains()`` from one read (a router's background rounds)."""
        items = await self._items()
        return self._map_of(items), self._drains_of(items)

    @staticmethod
    def _map_of(items: list[dict[str, Any]]) -> PartitionMap:
        layouts: dict[str, TableLayout] = {}
        applied = 0
        for item in items:
            applied = max(applied, int(item["version"]["N"]))
            if item.get("status", {}).get("S") == DELETED:
                continue
            layout = TableLayout.from_dict(json.loads(item["layout"]["S"]))
            layouts[layout.spec.name] = layout
        return PartitionMap(applied, layouts)

    @staticmethod
    def _drains_of(items: list[dict[str, Any]]) -> list[Drain]:
        found = (Drain.from_item(item) for item in items)
        return [d for d in found if d is not None and not d.done()]

    async def drain_of(self, table: str) -> Drain | None:
        """The drain of ``table``'s tombstone (None: no tombstone, or one without a drain)."""
        reply = await self._call(
            "get", retry_unknown=True, tbl=TABLES, pk=self._pk(table), sk=b"", consistent=True
        )
        item = reply.get("item")
        return None if item is None else Drain.from_item(item)

    async def save_drain(self, drain: Drain) -> bool:
        """Record ``drain``'s progress in its tombstone, if that is still the tombstone (False
        if not: the name was used again, or deleted again, since). Only acknowledged drops
        leave ``pending``, so a write from an older read (another router's) never lets the
        name go early: at worst it lists a node again, whose drop is then repeated."""
        same = Condition(
            "#s = :deleted AND #v = :version",
            {"#s": "status", "#v": "version"},
            {":deleted": {"S": DELETED}, ":version": {"N": str(drain.version)}},
        )
        item = self._tombstone(drain.table, drain.version, drain)
        return await self._conditional(PutCommand(TABLES, self._pk(drain.table), b"", item, same))

    async def _items(self) -> list[dict[str, Any]]:
        """Every item of the map (tombstones too), read consistently from the leader, paged."""
        items: list[dict[str, Any]] = []
        cursor: list[bytes] | None = None
        for _ in range(100_000):  # bounded paging
            reply = await self._call(
                "scan",
                retry_unknown=True,
                tbl=TABLES,
                start_after=cursor,
                limit=500,
                consistent=True,
            )
            for pk, sk, item in reply["items"]:
                cursor = [pk, sk]
                items.append(item)
            if not reply["more"]:
                break
        return items

    async def create(self, layout: TableLayout, version: int) -> None:
        """Add a table; TableExists if the name is taken (checked at apply time), or if it was
        deleted at ``version`` or later, or if the deleted table's groups are not dropped yet
        on enough nodes (its tombstone's Drain: ``drain_of`` says how many). A table's
        incarnation (its create's version) is the identity of its groups, whose ids come from
        its name: it must grow past every table of the name before (StorageNode.create_group,
        Raft.step). A router that read the map before another one's DeleteTable of the name,
        its clock behind, would otherwise create the table again with a lower incarnation than
        the deleted one's. Checked at apply time: no router's earlier read passes the drain's
        gate."""
        free = Condition(
            "attribute_not_exists(#n) OR "
            "(#s = :deleted AND #v < :version AND attribute_not_exists(#d))",
            {"#n": "name", "#s": "status", "#v": "version", "#d": DRAINING},
            {":deleted": {"S": DELETED}, ":version": {"N": str(version)}},
        )
        cmd = PutCommand(TABLES, self._pk(layout.spec.name), b"", self._item(layout, version), free)
        result = await self._write(cmd)
        if not result["ok"]:
            if result.get("error") == "ConditionalCheckFailedException":
                raise TableExists(layout.spec.name)
            raise MetadataUnavailable(str(result))

    async def activate(self, layout: TableLayout, version: int) -> bool:
        """Write ``layout`` (ACTIVE) if the table is still CREATING with the same TableId;
        False if not (deleted meanwhile, or another router's build switched it first)."""
        creating = Condition(
            # An item written before items named their TableId has none: its version, written
            # once at creation, is the table's incarnation (create_table).
            "#s = :creating AND (#i = :id OR (attribute_not_exists(#i) AND #v = :inc))",
            {"#s": "status", "#i": "table_id", "#v": "version"},
            {
                ":creating": {"S": "CREATING"},
                ":id": {"S": layout.spec.table_id},
                ":inc": {"N": str(layout.spec.incarnation)},
            },
        )
        cmd = PutCommand(
            TABLES, self._pk(layout.spec.name), b"", self._item(layout, version), creating
        )
        return await self._conditional(cmd)

    async def update(self, layout: TableLayout, version: int) -> bool:
        """Write an ACTIVE table's changed ``layout`` (UpdateTable, tags, TTL) if the table is
        still ACTIVE with the same TableId; False if not (deleted, or created again, between
        the caller's read and this write: an unconditional write brought a deleted table back,
        its groups dropped)."""
        still = Condition(
            "#s = :active AND (#i = :id OR attribute_not_exists(#i))",
            {"#s": "status", "#i": "table_id"},
            {":active": {"S": "ACTIVE"}, ":id": {"S": layout.spec.table_id}},
        )
        cmd = PutCommand(
            TABLES, self._pk(layout.spec.name), b"", self._item(layout, version), still
        )
        return await self._conditional(cmd)

    async def _conditional(self, cmd: PutCommand) -> bool:
        result = await self._write(cmd)
        if not result["ok"]:
            if result.get("error") == "ConditionalCheckFailedException":
                return False
            raise MetadataUnavailable(str(result))
        return True

    async def delete(
        self, table: str, version: int, table_id: str, drain: Drain | None = None
    ) -> bool:
        """Replace the table by a tombstone, if it is still the table of ``table_id`` (False
        if not: deleted, or created again, since the caller read it). The tombstone keeps the
        map's version (max over items) growing and is the bar the next CreateTable's
        incarnation must pass; with ``drain`` (at ``version``), it also holds the name until
        the table's groups are dropped (``Drain``)."""
        tombstone = self._tombstone(table, version, drain)
        same = Condition(
            "#s <> :deleted AND (#i = :id OR attribute_not_exists(#i))",
            {"#s": "status", "#i": "table_id"},
            {":deleted": {"S": DELETED}, ":id": {"S": table_id}},
        )
        return await self._conditional(PutCommand(TABLES, self._pk(table), b"", tombstone, same))

    async def _write(self, cmd: PutCommand) -> dict[str, Any]:
        reply = await self._call(
            "propose", retry_unknown=False, cmd=encode_command(cmd), timeout=self.deadline
        )
        result: dict[str, Any] = reply["result"]
        return result

    async def _call(self, op: str, retry_unknown: bool, **fields: Any) -> dict[str, Any]:
        reply = await self.nodes.call_leader(
            META_GROUP,
            op,
            self.deadline,
            candidates=self.replicas,
            retry_unknown=retry_unknown,
            **fields,
        )
        if "error" in reply:
            raise MetadataUnavailable(f"meta group: {reply.get('message') or reply['error']}")
        return reply

    @staticmethod
    def _tombstone(table: str, version: int, drain: Drain | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "name": {"S": table},
            "status": {"S": DELETED},
            "version": {"N": str(version)},
        }
        if drain is not None:
            item[DRAIN] = {"S": drain.to_json()}
            if drain.holding():
                item[DRAINING] = {"N": str(drain.holding())}
        return item

    @staticmethod
    def _pk(table: str) -> bytes:
        return encode_key_value({"S": table})

    @staticmethod
    def _item(layout: TableLayout, version: int) -> dict[str, Any]:
        return {
            "name": {"S": layout.spec.name},
            "status": {"S": layout.spec.status},
            "table_id": {"S": layout.spec.table_id},
            "layout": {"S": json.dumps(layout.to_dict(), sort_keys=True)},
            "version": {"N": str(version)},
        }
