"""The leader of a deleted table's group must not write its members into the map entry of the
table created since under the same name (review, session 13).

DeleteTable's drops are best effort (a node down, a router that stopped between its tombstone
and its drops): orphans of the deleted table (OLD, on a1 b1 c1) may still form a group, led by
b1. Group ids come from the table's name, so the map's "orders.p0" (NEW, placed on a1 c2 d1)
was found for it: ``_map_differs`` compared members only, and ``update_partition`` wrote them
into the NEW table's layout. Routers then sent "orders" p0 traffic to b1, whose OLD replica
served the deleted table's items. Both now compare the table's incarnation with the group's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cluster.healing import admin as admin_module
from cluster.healing import planner
from cluster.healing.admin import Admin
from cluster.healing.mapupdate import update_partition
from cluster.healing.settings import HealingSettings
from cluster.metadata.partitionmap import (
    HASH_SPACE,
    KeySchema,
    Partition,
    PartitionMap,
    TableLayout,
    TableSpec,
)

OLD, NEW = 1_000, 2_000
GROUP = "orders.p0"


def _layout(incarnation: int, replicas: tuple[str, str, str]) -> TableLayout:
    spec = TableSpec("orders", KeySchema("pk", "S"), status="ACTIVE", incarnation=incarnation)
    return TableLayout(spec, (Partition(GROUP, "orders", 0, 0, HASH_SPACE - 1, replicas),))


def _admin(tmp_path: Path, hosted: int) -> Admin:
    node = SimpleNamespace(
        node_id="b1",
        listen="127.0.0.1:1",
        peers={},
        data_dir=tmp_path,
        registry=CollectorRegistry(),
        replicas={},
        incarnation_of=lambda group: hosted,  # b1's replica of orders.p0
    )
    return Admin(node, HealingSettings(), {}, meta_home=("m1",))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hosted", "mapped"), [(OLD, NEW), (NEW, NEW), (0, NEW), (0, 0), (NEW, 0), (OLD, 0)]
)
def test_only_the_tables_own_leader_rewrites_its_map_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hosted: int, mapped: int
) -> None:
    """The leader of another table's group (a deleted one's, OLD) leaves the map's entry
    (``mapped``); only its own table's (the same incarnation) updates it. 0 is a table from
    before incarnations: its replicas are 0, and a 0 group left from such a table (deleted,
    created again: NEW) is another table's too (session 14)."""
    admin = _admin(tmp_path, hosted)
    admin.map = PartitionMap(NEW + 5, {"orders": _layout(mapped, ("a1", "c2", "d1"))})
    view = planner.GroupView(GROUP, "b1", frozenset({"a1", "b1", "c1"}))
    written: list[Any] = []

    async def update_partition(*args: Any, **kwargs: Any) -> bool:
        written.append(kwargs.get("incarnation"))
        return True

    monkeypatch.setattr(admin_module, "update_partition", update_partition)
    if admin._map_differs(view):
        asyncio.run(admin._update_map(view))
    assert written == ([hosted] if hosted == mapped else [])


class MetaGroup:
    """The meta group's leader: the table item of "orders" (NEW's layout), writes recorded."""

    def __init__(self, incarnation: int) -> None:
        layout = _layout(incarnation, ("a1", "c2", "d1"))
        self.item = {
            "name": {"S": "orders"},
            "status": {"S": "ACTIVE"},
            "version": {"N": str(NEW + 5)},
            "layout": {"S": json.dumps(layout.to_dict(), sort_keys=True)},
        }
        self.proposed = 0

    async def call_leader(self, group: str, op: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if op == "get":
            return {"item": self.item}
        self.proposed += 1
        return {"result": {"ok": True}}


@pytest.mark.parametrize(
    ("incarnation", "table"), [(OLD, NEW), (NEW, NEW), (0, NEW), (None, NEW), (0, 0), (NEW, 0)]
)
def test_update_partition_checks_the_table_it_reads(incarnation: int | None, table: int) -> None:
    """A map read before the table was created again (``_map_differs`` saw the deleted
    table's entry): the item ``update_partition`` reads is another table's (``table``), left
    alone by the deleted one's leader (OLD; 0: a table from before incarnations). None: the
    caller does not say (written)."""
    meta = MetaGroup(table)
    members = ["a1", "b1", "c1"]
    azs = {"a1": "a", "b1": "b", "c1": "c", "c2": "c", "d1": "d"}
    changed = asyncio.run(
        update_partition(meta, ("m1",), GROUP, "orders", members, azs, incarnation=incarnation)  # type: ignore[arg-type]
    )
    written = incarnation is None or incarnation == table
    assert (changed, meta.proposed) == ((True, 1) if written else (False, 0))


def test_healings_calls_about_a_group_name_its_incarnation(tmp_path: Path) -> None:
    """A rebuild or quarantine asked by a deleted table's leader (OLD) reaches no replica of
    the table created since (its node refuses: StorageNode.replica); an explicit one stays."""
    admin = _admin(tmp_path, OLD)
    asked: list[dict[str, Any]] = []

    class Node:
        async def call(self, op: str, **fields: Any) -> dict[str, Any]:
            asked.append({"op": op, **fields})
            return {}

    admin.client.client = lambda node: Node()  # type: ignore[assignment,method-assign,return-value]

    async def main() -> None:
        await admin.call("a1", "quarantine", 1.0, group=GROUP, reason="r")
        await admin.call("a1", "create_group", 1.0, group=GROUP, incarnation=NEW)
        await admin.call("a1", "status", 1.0)

    asyncio.run(main())
    assert [a.get("incarnation") for a in asked] == [OLD, NEW, None]


@pytest.mark.parametrize("dropped", [True, False])
def test_an_orphan_drop_is_recorded_only_when_something_was_dropped(
    tmp_path: Path, dropped: bool
) -> None:
    """Rule 8 (a copy on a node that is not a member): a node whose replica is another table's
    (a newer one's) answers "not dropped", every round: ORPHAN_DROPPED was recorded each time."""
    admin = _admin(tmp_path, OLD)

    class Node:
        async def call(self, op: str, **fields: Any) -> dict[str, Any]:
            return {"dropped": dropped}

    admin.client.client = lambda node: Node()  # type: ignore[assignment,method-assign,return-value]
    view = planner.GroupView(GROUP, "b1", frozenset({"a1", "b1", "c1"}))
    replica = SimpleNamespace(group=GROUP)
    asyncio.run(admin._execute(replica, view, planner.DropOrphan("d1", "not a member")))  # type: ignore[arg-type]
    kinds = [e.kind for e in admin.events.since()]
    assert kinds.count("orphan_dropped") == (1 if dropped else 0), kinds


@pytest.mark.parametrize(
    ("mapped", "acts"), [(NEW, False), ("deleted", False), (OLD, True), ("no map", True)]
)
def test_a_deleted_tables_group_is_never_made_whole_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: int | str, acts: bool
) -> None:
    """The leader of a group left from a deleted table (OLD; orphans elect: DeleteTable's drops
    are best effort) creates no replica of it: not again on the member that got the drop (rule
    2), nor on another node (rule 3), once the map shows the table gone or another one (NEW).
    Its own table's group, or one while no map was read yet, is healed as before."""
    admin = _admin(tmp_path, OLD)
    if mapped == "no map":
        admin.map = None
    elif mapped == "deleted":
        admin.map = PartitionMap(NEW + 5, {})
    else:
        assert isinstance(mapped, int)
        admin.map = PartitionMap(NEW + 5, {"orders": _layout(mapped, ("a1", "b1", "c1"))})
    actions = [planner.RecreateReplica("c1", "lost its copy"), planner.AddLogReplica("d1", "2")]
    assert _planned_as_leader(admin, monkeypatch, actions) == (actions if acts else [])


# A map read before the group's table was created is stale, not a sign that the table is gone:
# incarnations are map versions (CreateTable: ``next_version(map.version)``), and ``_refresh_map``
# keeps the last map while reads fail (MetadataUnavailable, a malformed item), so taking such a
# group for a deleted table's left a live table short of a replica for as long (review2, s14).
@pytest.mark.parametrize("mapped", ["no table yet", OLD])
def test_a_map_older_than_the_group_does_not_hold_back_its_healing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: int | str
) -> None:
    admin = _admin(tmp_path, NEW)  # the leader's replica: the live table created at NEW
    # The last map this admin could read, before NEW was created (its version below NEW): no
    # table of the name yet, or the deleted one (OLD) that NEW replaced.
    tables = {} if mapped == "no table yet" else {"orders": _layout(OLD, ("a1", "b1", "c1"))}
    admin.map = PartitionMap(OLD + 5, tables)
    assert admin.map.version < NEW
    action = planner.RecreateReplica("c1", "lost its copy")
    executed = _planned_as_leader(admin, monkeypatch, [action])
    assert executed == [action], "a live table's group taken for a deleted one's"


def _planned_as_leader(
    admin: Admin, monkeypatch: pytest.MonkeyPatch, actions: Sequence[planner.Action]
) -> list[planner.Action]:
    """The actions ``admin`` executes when it leads GROUP (b1 and a1 its members) and the
    planner proposes each of ``actions`` in turn."""
    status = SimpleNamespace(config_pending=False)
    replica = SimpleNamespace(group=GROUP, raft=SimpleNamespace(status=lambda: status))
    view = planner.GroupView(GROUP, "b1", frozenset({"a1", "b1"}))
    monkeypatch.setattr(admin, "_led", lambda: [replica])
    monkeypatch.setattr(admin, "group_view", lambda r: view)
    monkeypatch.setattr(admin, "node_views", lambda: {})
    executed: list[planner.Action] = []

    async def execute(replica: Any, view: Any, action: planner.Action) -> None:
        executed.append(action)

    monkeypatch.setattr(admin, "_execute", execute)

    async def main() -> None:
        for action in actions:
            monkeypatch.setattr(admin_module.planner, "plan", lambda *a, act=action, **k: act)
            admin._plan_all()
            await asyncio.gather(*admin.tasks)

    asyncio.run(main())
    return executed
