"""A table created again under the same name must start empty, whatever its nodes kept.

Group ids come from the table's name (``orders.p0``), so a table deleted and created again
reuses them. A node that is down during DeleteTable keeps the old replica (its drop never
arrives). When CreateTable of the same name then asked it for ``orders.p0``, create_group found
that replica and kept it: a voter of the new group with the old table's log and a newer term,
which could lead the new group and serve (and replicate) the deleted table's items as the new
table's. The table's id (``TableSpec.table_id``, a fresh UUID per CreateTable) now goes with
create_group, and a node hosting the group for another table id replaces it with a fresh one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.consensus.raft import RaftConfig
from cluster.metadata.partitionmap import KeySchema, TableSpec, build_layout
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.journal import NodeJournal
from cluster.storage.layout import groups_file, replica_dir
from cluster.storage.node import NodeConfig, NotLeader, StorageNode
from cluster.topology import parse_topology

GROUP = "orders.p0"
NODES = ["sn-a1", "sn-b1", "sn-c1"]
OLD, NEW = 1_000, 2_000  # the incarnations (map versions) of the two tables


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Cluster:
    """Three storage nodes in this event loop, each able to stop and start again."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.addresses = {n: f"127.0.0.1:{p}" for n, p in zip(NODES, free_ports(3), strict=True)}
        self.nodes: dict[str, StorageNode] = {}

    async def start(self, name: str) -> StorageNode:
        node = StorageNode(
            NodeConfig(
                node_id=name,
                listen=self.addresses[name],
                admin="127.0.0.1:0",
                data_dir=self.tmp_path / name,
                peers={n: a for n, a in self.addresses.items() if n != name},
                tick_seconds=0.01,
                raft=RaftConfig(),
            )
        )
        await node.start()
        self.nodes[name] = node
        return node

    async def stop(self, name: str) -> None:
        await self.nodes.pop(name).stop()

    async def start_with_old_item(self) -> None:
        """Every node started, GROUP created on all at incarnation OLD, and the item "old"
        written and applied everywhere."""
        for name in NODES:
            await self.start(name)
        for node in self.nodes.values():
            assert await node.create_group(GROUP, NODES, incarnation=OLD)
        await self.put("old")
        await self.until_everywhere("old")

    async def put(self, key: str) -> None:
        command = encode_command(PutCommand("orders", key.encode(), b"", {"v": {"S": key}}))
        for _ in range(500):
            for node in self.nodes.values():
                try:
                    assert (await node.replica({"group": GROUP}).propose(command, 5.0)).ok
                    return
                except NotLeader:
                    pass
            await asyncio.sleep(0.02)
        raise AssertionError(f"{GROUP} elected no leader")

    async def until_everywhere(self, key: str) -> None:
        for name in self.nodes:
            for _ in range(300):
                if key in await self.keys(name):
                    break
                await asyncio.sleep(0.01)

    async def keys(self, name: str) -> list[str]:
        def read(store: Any) -> list[str]:
            return [k for k in ("old", "new") if store.get("orders", k.encode(), b"") is not None]

        result: list[str] = await self.nodes[name].replica({"group": GROUP}).read_local(read)
        return result


def in_cluster(tmp_path: Path, scenario: Callable[[Cluster], Awaitable[None]]) -> None:
    async def main() -> None:
        cluster = Cluster(tmp_path)
        try:
            await scenario(cluster)
        finally:
            for name in list(cluster.nodes):
                await cluster.stop(name)

    asyncio.run(main())


def test_a_table_created_again_does_not_get_the_deleted_tables_items(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        for name in NODES:
            await cluster.start(name)
        for node in cluster.nodes.values():  # CreateTable "orders"
            assert await node.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.put("old")
        await cluster.until_everywhere("old")
        # DeleteTable: sn-c1's drop never arrives (down or cut off; it would be back by now).
        for name in ("sn-a1", "sn-b1"):
            assert await cluster.nodes[name].drop_group(GROUP)
        nodes = list(cluster.nodes.values())
        # CreateTable "orders" again; the router does not look at "created" (already there).
        created = [await n.create_group(GROUP, NODES, incarnation=NEW) for n in nodes]
        await cluster.put("new")
        await cluster.until_everywhere("new")
        for name in NODES:
            assert await cluster.keys(name) == ["new"], f"{name} serves the deleted table's item"
        assert created == [True, True, True]

    in_cluster(tmp_path, scenario)


def memds_tables(incarnation: int) -> dict[str, Any]:
    """MemDS's /map "tables": the ACTIVE table "orders" of ``incarnation``, on NODES."""
    spec = TableSpec("orders", KeySchema("pk", "S"), status="ACTIVE", incarnation=incarnation)
    layout = build_layout(parse_topology("3x1x1"), spec, {})
    assert [layout.partitions[0].id, list(layout.partitions[0].replicas)] == [GROUP, NODES]
    return {"orders": layout.to_dict()}


def test_the_reconcile_replaces_a_deleted_tables_replica_but_not_from_a_lagging_map(
    tmp_path: Path,
) -> None:
    """A node down during DeleteTable and still down during CreateTable comes back with the
    old replica: its reconcile replaces it with a rejoining one of the table in the map. A map
    that lags shows an older incarnation than the node's: the replica stays."""

    async def scenario(cluster: Cluster) -> None:
        node = await cluster.start("sn-a1")
        assert await node.create_group(GROUP, NODES, incarnation=OLD)
        await cluster.stop("sn-a1")
        node = await cluster.start("sn-a1")  # back
        replica = node.replicas[GROUP]
        await node._join_missing(memds_tables(OLD))  # the same table: nothing to do
        await node._join_missing(memds_tables(OLD - 1))  # a map from before: nothing either
        assert node.replicas[GROUP] is replica
        await node._join_missing(memds_tables(NEW))
        assert node.replicas[GROUP] is not replica
        assert node.replicas[GROUP].raft.status().rejoining  # no votes until caught up
        assert node.incarnation_of(GROUP) == NEW

    in_cluster(tmp_path, scenario)


def test_a_create_for_an_older_table_keeps_the_replica(tmp_path: Path) -> None:
    """A create_group of a deleted table that arrives late must not wipe the new one's."""

    async def scenario(cluster: Cluster) -> None:
        node = await cluster.start("sn-a1")
        assert await node.create_group(GROUP, NODES, incarnation=NEW)
        replica = node.replicas[GROUP]
        assert not await node.create_group(GROUP, NODES, incarnation=OLD)
        assert not await node.create_group(GROUP, NODES)  # a caller that sends none
        assert node.replicas[GROUP] is replica and node.incarnation_of(GROUP) == NEW

    in_cluster(tmp_path, scenario)


def test_groups_written_before_incarnations_still_open(tmp_path: Path) -> None:
    """A groups.json entry without "incarnation" (written before it existed) opens as 0: the
    replica of a table of unknown incarnation. The reconcile keeps it (it may be the live
    table's, created by the code before), a CreateTable (a new table) replaces it."""

    async def scenario(cluster: Cluster) -> None:
        node = await cluster.start("sn-a1")
        assert await node.create_group(GROUP, NODES)
        await cluster.stop("sn-a1")
        path = groups_file(tmp_path / "sn-a1")
        entries = json.loads(path.read_text())
        assert entries[GROUP].pop("incarnation") == 0
        path.write_text(json.dumps(entries))
        node = await cluster.start("sn-a1")
        assert GROUP in node.replicas and node.incarnation_of(GROUP) == 0
        assert not await node.create_group(GROUP, NODES)  # old routers, healing: kept
        replica = node.replicas[GROUP]
        await node._join_missing(memds_tables(NEW))
        assert node.replicas[GROUP] is replica
        assert await node.create_group(GROUP, NODES, incarnation=NEW)  # a new table: replaced
        await cluster.stop("sn-a1")
        node = await cluster.start("sn-a1")
        assert node.incarnation_of(GROUP) == NEW  # remembered

    in_cluster(tmp_path, scenario)


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    for _ in range(int(seconds / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {seconds} s: {what}")


def test_a_stopped_node_hangs_up_on_its_peers(tmp_path: Path) -> None:
    """A node stopped in a process that goes on (these tests) hangs up on the peers whose
    links it accepted, as a process that ends does: it used to go on reading their frames
    (server.close() only stops listening), so their links never noticed, and a node started
    again at its address was never dialled: its peers' messages went to the stopped one."""

    async def scenario(cluster: Cluster) -> None:
        a1 = await cluster.start("sn-a1")
        await cluster.start("sn-b1")
        link = a1.links.links["sn-b1"]
        await until(lambda: _true(link.connected), 5, "sn-a1's link to sn-b1 is up")
        await cluster.stop("sn-b1")
        await until(lambda: _true(not link.connected), 2, "sn-a1 noticed sn-b1's stop")

    in_cluster(tmp_path, scenario)


async def _true(value: bool) -> bool:
    return value


# --- a stale replica restarted without MemDS (incarnation in every Raft message) -------------


def leader_of(cluster: Cluster) -> str | None:
    for name, node in cluster.nodes.items():
        replica = node.replicas.get(GROUP)
        if replica is not None and replica.raft.status().role.value == "leader":
            return name
    return None


async def put_key(cluster: Cluster, key: str) -> None:
    command = encode_command(PutCommand("orders", key.encode(), b"", {"v": {"S": key}}))
    for _ in range(500):
        name = leader_of(cluster)
        if name is not None:
            try:
                assert (await cluster.nodes[name].replicas[GROUP].propose(command, 5.0)).ok
                return
            except NotLeader:
                pass
        await asyncio.sleep(0.02)
    raise AssertionError(f"{GROUP} elected no leader")


async def stored_keys(node: StorageNode) -> set[str]:
    def read(store: Any) -> set[str]:
        return {pk.decode() for pk, _, _ in store.scan("orders")}

    replica = node.replicas.get(GROUP)
    return set() if replica is None else set(await replica.read_local(read))


def test_a_stale_replica_restarted_without_memds_never_takes_part_in_the_new_group(
    tmp_path: Path,
) -> None:
    """sn-c1 is down while "orders" is deleted and created again; it comes back with the
    deleted table's replica of orders.p0 (a longer log, a higher term) and no MemDS to tell it.
    Its replica must never lead the new group nor have its log taken by the new replicas: a
    write the new group acknowledged (on sn-a1 and sn-b1) would be lost. Before incarnations
    travelled in Raft messages, with sn-a1 down, sn-c1 led the new group over sn-b1 and wiped
    "new" from it (its log won: same group id, higher last term)."""

    async def scenario(cluster: Cluster) -> None:
        for name in NODES:
            await cluster.start(name)
        for node in cluster.nodes.values():  # CreateTable "orders" (OLD)
            assert await node.create_group(GROUP, NODES, incarnation=OLD)
        for i in range(20):  # a long log ...
            await put_key(cluster, f"old-{i}")
        for target in ("sn-b1", "sn-c1", "sn-a1", "sn-b1"):  # ... in a high term
            for _ in range(200):
                name = leader_of(cluster)
                if name == target:
                    break
                if name is not None:
                    cluster.nodes[name].replicas[GROUP].transfer_leadership(target)
                await asyncio.sleep(0.02)
        await put_key(cluster, "old-last")
        c1 = cluster.nodes["sn-c1"]
        await until(lambda: _has(c1, "old-last"), 5, "sn-c1 holds the old table")
        old_term = c1.replicas[GROUP].raft.status().term
        await cluster.stop("sn-c1")
        for name in ("sn-a1", "sn-b1"):  # DeleteTable; sn-c1's drop never arrives
            assert await cluster.nodes[name].drop_group(GROUP)
        for name in ("sn-a1", "sn-b1"):  # CreateTable "orders" again (NEW), sn-c1 still down
            assert await cluster.nodes[name].create_group(GROUP, NODES, incarnation=NEW)
        await put_key(cluster, "new")  # acknowledged: on sn-a1 and sn-b1
        b1 = cluster.nodes["sn-b1"]
        await until(lambda: _has(b1, "new"), 5, "sn-b1 holds the acknowledged write")
        assert b1.replicas[GROUP].raft.status().term < old_term  # the stale log would win
        await cluster.stop("sn-a1")
        c1 = await cluster.start("sn-c1")  # no MemDS: nothing tells it about NEW but peers
        stale = c1.replicas[GROUP]
        get = {"op": "get", "group": GROUP, "tbl": "orders", "pk": b"old-0", "sk": b""}
        for _ in range(150):  # 3 s, 30 election timeouts
            served = await c1.handle_request(dict(get))  # eventually consistent
            assert served.get("item") is None, "sn-c1 served the deleted table's item"
            assert stale.raft.status().role.value != "leader", "the stale replica led"
            assert "new" in await stored_keys(b1), "the acknowledged write was lost"
            assert not any(k.startswith("old") for k in await stored_keys(b1))
            await asyncio.sleep(0.02)
        # It heard from the new group: its stale replica is gone (not served any more), its
        # files set aside.
        assert c1.replicas.get(GROUP) is not stale
        assert [p.name[: len(GROUP)] for p in (tmp_path / "sn-c1" / "quarantine").iterdir()] == [
            GROUP
        ]
        assert not any(k.startswith("old") for k in await stored_keys(c1))
        # Back to three: the group writes again. MemDS answers: a map that lags (the deleted
        # table) does not bring the old replica back; the new table's joins, caught up with
        # everything acknowledged.
        await cluster.start("sn-a1")
        await put_key(cluster, "new-2")
        await c1._join_missing(memds_tables(OLD))
        assert GROUP not in c1.replicas
        await c1._join_missing(memds_tables(NEW))
        assert c1.incarnation_of(GROUP) == NEW
        # sn-a1 restarted: its replica serves as it is once the map says it is the live
        # table's (its peers' messages do not: two replicas of a deleted table share theirs).
        a1 = cluster.nodes["sn-a1"]
        assert (await a1.handle_request({**get, "pk": b"new"})).get("error") == "NotLeader"
        await a1._join_missing(memds_tables(NEW))
        for node in cluster.nodes.values():
            await until(functools.partial(_has, node, "new-2"), 5, f"{node.node_id} caught up")
            assert await stored_keys(node) == {"new", "new-2"}
            served = await node.handle_request({**get, "pk": b"new"})  # (sn-a1: restarted)
            assert served.get("item") is not None, served

    in_cluster(tmp_path, scenario)


async def _has(node: StorageNode, key: str) -> bool:
    return key in await stored_keys(node)


def test_a_restarted_replica_serves_reads_as_it_is_once_known_to_be_the_live_tables(
    tmp_path: Path,
) -> None:
    """A node restarts with replicas it cannot tell from a deleted table's (its drop may have
    been missed while it was down): each serves no eventually consistent read until a
    create_group or MemDS's map says it is the live table's (a peer's message does not: see
    test_node_stale_quorum.py)."""
    get = {"op": "get", "group": GROUP, "tbl": "orders", "pk": b"k", "sk": b""}

    async def served(node: StorageNode) -> bool:
        reply = await node.handle_request(dict(get))
        assert reply.get("error") in (None, "NotLeader"), reply
        return "error" not in reply

    async def scenario(cluster: Cluster) -> None:
        node = await cluster.start("sn-a1")
        assert await node.create_group(GROUP, NODES, incarnation=NEW)
        assert await served(node)  # created now: the caller said which table
        for confirm in ("map", "create_group"):
            await cluster.stop("sn-a1")
            node = await cluster.start("sn-a1")
            assert not await served(node)
            # A read naming its incarnation (a router's map: NEW) is of the table it means;
            # one naming another is refused whatever the node knows (StorageNode.replica).
            assert (await node.handle_request({**get, "incarnation": NEW})).get("error") is None
            named_old = await node.handle_request({**get, "incarnation": OLD})
            assert named_old.get("error") == "NotLeader"
            await node._join_missing(memds_tables(OLD))  # an older table: says nothing
            assert not await served(node)
            if confirm == "map":
                await node._join_missing(memds_tables(NEW))
            else:
                assert not await node.create_group(GROUP, NODES, incarnation=NEW)
            assert await served(node)
        assert await node.create_group("alone.p0", ["sn-a1"], incarnation=NEW)
        await cluster.stop("sn-a1")
        node = await cluster.start("sn-a1")
        assert await node.handle_request({**get, "group": "alone.p0"}) == {"item": None}

    in_cluster(tmp_path, scenario)


def test_a_late_drop_of_the_deleted_table_leaves_the_new_tables_replica(tmp_path: Path) -> None:
    """DeleteTable's drop_group names the table's incarnation: one that arrives after the name
    was used again (a slow request, a retry) leaves the new table's replica, and does not stop
    the reconcile from joining the new table's group either."""

    async def scenario(cluster: Cluster) -> None:
        node = await cluster.start("sn-a1")
        assert await node.create_group(GROUP, NODES, incarnation=NEW)
        replica = node.replicas[GROUP]
        assert not await node.drop_group(GROUP, OLD)  # late: the new table's replica stays
        assert node.replicas[GROUP] is replica
        assert node._map_may_create(GROUP, NEW)
        assert await node.drop_group(GROUP, NEW)  # DeleteTable of the new table: dropped
        assert GROUP not in node.replicas
        await node._join_missing(memds_tables(NEW))  # the map lags: not put back
        assert GROUP not in node.replicas
        await node._join_missing(memds_tables(NEW + 1))  # a newer table of the name: joined
        assert node.incarnation_of(GROUP) == NEW + 1
        assert await node.drop_group(GROUP)  # a caller that names none: whatever it is
        await node._join_missing(memds_tables(NEW + 2))
        assert GROUP not in node.replicas  # (as before incarnations: only a create_group)

    in_cluster(tmp_path, scenario)


def test_a_replicas_files_left_behind_are_never_opened_as_a_new_replica(tmp_path: Path) -> None:
    """A replica's directory that groups.json does not list (a discard cut short by a crash,
    written in the order before) is deleted by create_group, not opened as the new replica's
    state. And a discard now moves the files away before groups.json forgets the group: cut
    short there, the group comes back listed without files, and rejoins empty."""

    async def scenario(cluster: Cluster) -> None:
        node = await cluster.start("sn-a1")
        assert await node.create_group(GROUP, ["sn-a1"], incarnation=OLD)
        await put_on(node, "old")
        await cluster.stop("sn-a1")
        path = groups_file(tmp_path / "sn-a1")
        path.write_text("{}")  # the crash: groups.json saved, the files not moved yet
        node = await cluster.start("sn-a1")
        assert GROUP not in node.replicas
        assert await node.create_group(GROUP, ["sn-a1"], incarnation=NEW)
        await put_on(node, "new")
        assert await stored_keys(node) == {"new"}, "the deleted table's files were opened"

        def crash() -> None:
            raise OSError("power lost before groups.json was saved")

        node._save_groups = crash  # type: ignore[method-assign]
        with pytest.raises(OSError):
            await node.drop_group(GROUP)
        assert not replica_dir(tmp_path / "sn-a1", GROUP).exists()  # moved away first
        assert GROUP in json.loads(path.read_text())  # still listed: the crash came first
        del node._save_groups
        await cluster.stop("sn-a1")
        node = await cluster.start("sn-a1")
        assert node.replicas[GROUP].raft.status().rejoining  # listed, no files: empty
        assert await stored_keys(node) == set()

    in_cluster(tmp_path, scenario)


def test_a_create_group_cancelled_midway_leaves_no_replica_running_unhosted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create_group once begun (the group lock held) ends even when its caller is cancelled
    (its connection closed: the router gave up). Cut while the new replica was registered with
    the journal (after ``Replica.open``), it left a replica running, its files open, that the
    node did not host (not in ``replicas`` nor groups.json): nobody closed it, and a retry or
    the reconcile deleted its files under it (review15a, session 15)."""
    real = NodeJournal.register

    def slow(self: NodeJournal, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.3)
        real(self, *args, **kwargs)

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        monkeypatch.setattr(NodeJournal, "register", slow)
        create = {"op": "create_group", "group": GROUP, "members": NODES, "incarnation": OLD}
        task = asyncio.create_task(b1.handle_request(create))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.4)
        loops = [t for t in asyncio.all_tasks() if t.get_name() == f"replica-{GROUP}"]
        assert GROUP in b1.replicas or not loops, "a replica runs that the node does not host"
        async with b1._group_lock:  # the create, if it goes on, has ended
            assert GROUP in b1.replicas and GROUP in json.loads(
                groups_file(tmp_path / "sn-b1").read_text()
            )

    in_cluster(tmp_path, scenario)


async def put_on(node: StorageNode, key: str) -> None:
    """A put on a one-member group of ``node`` (it elects itself)."""
    command = encode_command(PutCommand("orders", key.encode(), b"", {"v": {"S": key}}))
    for _ in range(300):
        try:
            assert (await node.replicas[GROUP].propose(command, 5.0)).ok
            return
        except NotLeader:
            await asyncio.sleep(0.01)
    raise AssertionError("no leader")
