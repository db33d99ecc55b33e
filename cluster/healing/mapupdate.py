"""Write a replication group's current members into the partition map (the ``meta`` group).

Routers find replicas through the map (served by MemDS), so after a group changed members its
leader records them here. The write is conditional on the table's layout being the one that was
read, so two leaders updating partitions of the same table never lose each other's change (the
loser reads again and retries), and a table being created or deleted is left alone.

    await update_partition(GroupClient(peers), meta_home, "orders.p3",
                           ["sn-a1", "sn-b2", "sn-c1"], azs)   # -> True when the map changed
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from cluster.metadata.partitionmap import (
    META_GROUP,
    Partition,
    PartitionMap,
    TableLayout,
    next_version,
)
from cluster.metadata.store import DELETED, TABLES
from cluster.storage.client import GroupClient
from cluster.storage.commands import Condition, PutCommand, encode_command
from cluster.storage.itemstore import encode_key_value

from .planner import GroupView


class MapUpdateFailed(Exception):
    pass


def table_of(group: str, tables: Sequence[str]) -> str | None:
    """The table whose partition ``group`` is, among ``tables`` (group ids start with it)."""
    for table in sorted(tables, key=len, reverse=True):
        if group.startswith(table + ".p"):
            return table
    return None


def reorder(old: Sequence[str], members: Sequence[str], azs: Mapping[str, str]) -> list[str]:
    """``members`` in the order of ``old``: a kept member keeps its slot, a new one takes the
    slot of the member it replaced in the same AZ if there is one, else any free slot."""
    slots: list[str | None] = [m if m in members else None for m in old]
    new = [m for m in members if m not in old]
    for m in sorted(new, key=lambda n: (azs.get(n, ""), n)):
        same_az = [
            i for i, s in enumerate(slots) if s is None and azs.get(old[i]) == azs.get(m, "?")
        ]
        free = same_az or [i for i, s in enumerate(slots) if s is None]
        slots[free[0]] = m
    return [s for s in slots if s is not None]


async def read_table_item(
    nodes: GroupClient, home: Sequence[str], table: str, deadline: float = 5.0
) -> dict[str, Any] | None:
    reply = await nodes.call_leader(
        META_GROUP,
        "get",
        deadline,
        candidates=home,
        tbl=TABLES,
        pk=encode_key_value({"S": table}),
        sk=b"",
        consistent=True,
    )
    if "error" in reply:
        raise MapUpdateFailed(f"meta group: {reply.get('message') or reply['error']}")
    item: dict[str, Any] | None = reply.get("item")
    return item


def _other_table(layout_incarnation: int, incarnation: int | None) -> bool:
    """Is the map's table (``layout_incarnation``) another than the group's (``incarnation``;
    None: not said)? Group ids come from table names: the map's group may be a table created
    again since ours was deleted (our replica an orphan, left while its node was down), whose
    entry our members must not replace (session 13). 0 (a table, and its replicas, from before
    incarnations) is one like any other: a leftover 0 group of a deleted table rewrote the
    entry of the table created since under its name, which has one (session 14)."""
    return incarnation is not None and layout_incarnation != incarnation


def map_differs(pmap: PartitionMap, view: GroupView, incarnation: int) -> bool:
    """Does ``pmap`` list other replicas for ``view``'s group, of ``incarnation``, than its
    members? (Not for another table's group of the same id.)"""
    partition = next((p for p in pmap.partitions() if p.id == view.group), None)
    if partition is None or _other_table(partition.incarnation, incarnation):
        return False
    return set(partition.replicas) != view.voters


def live_group(pmap: PartitionMap | None, group: str, incarnation: int) -> bool:
    """May the leader of ``group`` (of ``incarnation``) create replicas of it: is it in the map
    as its table's? (No map read yet, or the meta group, in no map: yes.) Not a group left from
    a deleted table (DeleteTable's drops are best effort: orphans elect): its leader's healing
    had a member that got the drop create it again (rule 2), or a node add it (rule 3), and the
    deleted table's group was whole again (session 14). A group whose incarnation is above the
    map's version belongs to a table created after that map was read (incarnations are map
    versions: ``next_version``): live, or a map kept while reads fail would hold its healing
    back for as long."""
    if pmap is None or group == META_GROUP or incarnation > pmap.version:
        return True
    partition = next((p for p in pmap.partitions() if p.id == group), None)
    return partition is not None and partition.incarnation == incarnation


async def update_partition(
    nodes: GroupClient,
    home: Sequence[str],
    group: str,
    table: str,
    members: Sequence[str],
    azs: Mapping[str, str],
    deadline: float = 5.0,
    incarnation: int | None = None,
) -> bool:
    """Make the map list ``members`` (exactly 3) for ``group``; True when it wrote a change.
    ``incarnation``: the group's table's (None: not said); the map's table of another is left
    alone (the write's condition is the layout read, so it holds at the write too)."""
    for _ in range(5):  # bounded: each retry means another writer changed the table meanwhile
        item = await read_table_item(nodes, home, table, deadline)
        if item is None or item.get("status", {}).get("S") in (DELETED, "CREATING", "DELETING"):
            return False
        layout = TableLayout.from_dict(json.loads(item["layout"]["S"]))
        if _other_table(layout.spec.incarnation, incarnation):
            return False
        partitions = list(layout.partitions)
        index = next((i for i, p in enumerate(partitions) if p.id == group), None)
        if index is None:
            return False
        old = partitions[index]
        if set(old.replicas) == set(members):
            return False
        r = reorder(old.replicas, members, azs)
        partitions[index] = replace(old, replicas=(r[0], r[1], r[2]))
        new_layout = TableLayout(layout.spec, tuple(partitions))
        version = next_version(int(item["version"]["N"]))
        new_item = dict(item)
        new_item["layout"] = {"S": json.dumps(new_layout.to_dict(), sort_keys=True)}
        new_item["version"] = {"N": str(version)}
        same = Condition("#l = :l", {"#l": "layout"}, {":l": item["layout"]})
        cmd = PutCommand(TABLES, encode_key_value({"S": table}), b"", new_item, same)
        reply = await nodes.call_leader(
            META_GROUP,
            "propose",
            deadline,
            candidates=home,
            retry_unknown=False,
            cmd=encode_command(cmd),
            timeout=deadline,
        )
        result = reply.get("result")
        if result is None:
            raise MapUpdateFailed(f"meta group: {reply.get('message') or reply.get('error')}")
        if result.get("ok"):
            return True
        if result.get("error") != "ConditionalCheckFailedException":
            raise MapUpdateFailed(str(result))
    raise MapUpdateFailed(f"{table}: the layout kept changing")


def partition_replicas(item: Mapping[str, Any], group: str) -> Partition | None:
    layout = TableLayout.from_dict(json.loads(item["layout"]["S"]))
    return next((p for p in layout.partitions if p.id == group), None)
