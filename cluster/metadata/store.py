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
from typing import Any

from cluster.storage.client import GroupClient
from cluster.storage.commands import Condition, PutCommand, encode_command
from cluster.storage.itemstore import encode_key_value

from .partitionmap import META_GROUP, PartitionMap, TableLayout

TABLES = "__tables"
DELETED = "DELETED"


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
        layouts: dict[str, TableLayout] = {}
        cursor: list[bytes] | None = None
        applied = 0
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
                applied = max(applied, int(item["version"]["N"]))
                cursor = [pk, sk]
                if item.get("status", {}).get("S") == DELETED:
                    continue
                layout = TableLayout.from_dict(json.loads(item["layout"]["S"]))
                layouts[layout.spec.name] = layout
            if not reply["more"]:
                break
        return PartitionMap(applied, layouts)

    async def create(self, layout: TableLayout, version: int) -> None:
        """Add a table; TableExists if the name is taken (checked at apply time), or if it was
        deleted at ``version`` or later. A table's incarnation (its create's version) is the
        identity of its groups, whose ids come from its name: it must grow past every table of
        the name before (StorageNode.create_group, Raft.step). A router that read the map
        before another one's DeleteTable of the name, its clock behind, would otherwise create
        the table again with a lower incarnation than the deleted one's."""
        free = Condition(
            "attribute_not_exists(#n) OR (#s = :deleted AND #v < :version)",
            {"#n": "name", "#s": "status", "#v": "version"},
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

    async def delete(self, table: str, version: int, table_id: str) -> bool:
        """Replace the table by a tombstone, if it is still the table of ``table_id`` (False
        if not: deleted, or created again, since the caller read it). The tombstone keeps the
        map's version (max over items) growing and is the bar the next CreateTable's
        incarnation must pass."""
        tombstone = {"name": {"S": table}, "status": {"S": DELETED}, "version": {"N": str(version)}}
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
