"""Two replicas of a deleted table, restarted together, must neither serve its items nor
acknowledge a write for the table created since under the same name (review, session 13).

sn-a1 and sn-b1 are down while "orders" (OLD, on a1 b1 c1) is deleted and created again
(NEW, placed on a1 c1 d1: the placement follows the load). They come back with no MemDS to
ask (or before the reconcile's first answer) and before NEW's members reach them (a link's
reconnect backoff, a partition). Each hears the other's OLD messages: together they are a
quorum of OLD's membership and elect a leader. Before requests named the table's
incarnation, that leader acknowledged the router's write for "orders" p0 (sn-a1 is one of
NEW's replicas and says it leads), and once NEW's members reached sn-a1 its replica was
retired: the acknowledged write was gone. A peer's message of the replica's own incarnation
also counted as confirming it, so both served the deleted table's items to eventually
consistent reads, even those that name no incarnation (routers before it).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from cluster.consensus.raft import RaftConfig
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.node import NodeConfig, StorageNode
from cluster.storage.rebuild import rebuild_from
from tests.cluster.storage.test_node_incarnation import (
    GROUP,
    NEW,
    NODES,
    OLD,
    Cluster,
    _has,
    free_ports,
    in_cluster,
    put_key,
    stored_keys,
    until,
)


async def _leader(cluster: Cluster, names: tuple[str, ...]) -> str | None:
    for name in names:
        replica = cluster.nodes[name].replicas.get(GROUP)
        if replica is not None and replica.raft.status().role.value == "leader":
            return name
    return None


@pytest.mark.parametrize("old", [OLD, 0], ids=["old", "before-incarnations"])
def test_stale_replicas_never_serve_or_acknowledge_for_the_new_table(
    tmp_path: Path, old: int
) -> None:
    """``old`` 0: the deleted table was created before incarnations (its replicas are 0): a
    request naming NEW was served by them as one naming none (session 14)."""

    async def scenario(cluster: Cluster) -> None:
        for name in NODES:
            await cluster.start(name)
        for node in cluster.nodes.values():  # CreateTable "orders" (OLD) on a1 b1 c1
            assert await node.create_group(GROUP, NODES, incarnation=old)
        await put_key(cluster, "old")
        for node in cluster.nodes.values():
            await until(functools.partial(_has, node, "old"), 5, "old everywhere")
        await cluster.stop("sn-a1")
        await cluster.stop("sn-b1")
        c1 = cluster.nodes["sn-c1"]
        assert await c1.drop_group(GROUP, old)  # DeleteTable (a1, b1 are down)
        # CreateTable again: NEW on a1 c1 d1 (d1 took it too; a1 down: a quorum anyway).
        assert await c1.create_group(GROUP, ["sn-a1", "sn-c1", "sn-d1"], incarnation=NEW)
        await cluster.stop("sn-c1")  # NEW's members do not reach a1 yet
        await cluster.start("sn-a1")
        await cluster.start("sn-b1")
        # The router's eventually consistent read of "orders" p0, as the map shows it: NEW;
        # and one naming no incarnation (a router before it).
        get = {"op": "get", "group": GROUP, "tbl": "orders", "pk": b"old", "sk": b""}
        served_old = False
        for _ in range(150):  # 3 s
            for name in ("sn-a1", "sn-b1"):
                for request in ({**get, "incarnation": NEW}, get):
                    reply = await cluster.nodes[name].handle_request(dict(request))
                    served_old = served_old or reply.get("item") is not None
            if await _leader(cluster, ("sn-a1", "sn-b1")) is not None and served_old:
                break
            await asyncio.sleep(0.02)
        leader = await _leader(cluster, ("sn-a1", "sn-b1"))
        assert leader is not None, "the two OLD replicas elected nobody (the scenario's premise)"
        # The router's put for "orders" p0 as the map shows it now: NEW.
        cmd = encode_command(PutCommand("orders", b"acked", b"", {"v": {"S": "acked"}}))
        put = {"op": "propose", "group": GROUP, "cmd": cmd, "timeout": 2.0, "incarnation": NEW}
        reply = await cluster.nodes[leader].handle_request(put)
        acked = bool(reply.get("result", {}).get("ok"))
        assert acked or reply.get("error") == "NotLeader", reply  # the router tries another
        await cluster.start("sn-c1")  # NEW's members reach sn-a1: its OLD replica retires
        a1 = cluster.nodes["sn-a1"]

        async def retired() -> bool:
            return a1.replicas.get(GROUP) is None or a1.incarnation_of(GROUP) == NEW

        await until(retired, 5, "sn-a1's OLD replica retired")
        on_new = set()
        for name in ("sn-a1", "sn-c1"):
            if cluster.nodes[name].incarnation_of(GROUP) == NEW:
                on_new |= await stored_keys(cluster.nodes[name])
        assert not acked or "acked" in on_new, "a write acknowledged for NEW was lost"
        assert not acked, "a replica of the deleted table acknowledged a write for NEW"
        assert not served_old, "a stale replica served the deleted table's item as it is"

    in_cluster(tmp_path, scenario)


@pytest.mark.parametrize("hosted", [NEW, 0], ids=["new", "before-incarnations"])
def test_a_request_naming_another_incarnation_is_refused_and_retires_nothing(
    tmp_path: Path, hosted: int
) -> None:
    """Every data request (writes, reads, a rebuild's snapshot_dump) naming another table's
    incarnation than the replica's is answered NotLeader (the client tries another replica);
    one naming none (callers before incarnations) is served. 0 is a table's incarnation like
    any other (created before incarnations): a replica of 0 refuses a request naming N, and
    one of N a request naming 0 (session 14). A client's word never retires the replica: only
    a peer's message of a newer incarnation does."""

    async def scenario(cluster: Cluster) -> None:
        node = await cluster.start("sn-a1")
        assert await node.create_group("alone.p0", ["sn-a1"], incarnation=hosted)
        cmd = encode_command(PutCommand("orders", b"k", b"", {"v": {"S": "k"}}))
        requests = [
            {"op": "propose", "cmd": cmd, "timeout": 2.0},
            {"op": "get", "tbl": "orders", "pk": b"k", "sk": b""},
            {"op": "get", "tbl": "orders", "pk": b"k", "sk": b"", "consistent": True},
            {"op": "query", "tbl": "orders", "pk": b"k"},
            {"op": "scan", "tbl": "orders"},
            {"op": "txn_read", "reader": "t1", "keys": [["orders", b"k", b""]]},
            {"op": "txn_check", "reader": "t1", "keys": [["orders", b"k", b""]]},
            {"op": "snapshot_dump"},
        ]
        for _ in range(200):  # its own group: it leads at once (an election timeout)
            if node.replicas["alone.p0"].raft.status().role.value == "leader":
                break
            await asyncio.sleep(0.02)
        for request in requests:
            for other in {OLD, NEW, NEW + 1, 0} - {hosted}:
                reply = await node.handle_request(
                    {**request, "group": "alone.p0", "incarnation": other}
                )
                assert reply.get("error") == "NotLeader", (request["op"], other, reply)
            for same in ({"incarnation": hosted}, {}):  # {}: a caller before incarnations
                reply = await node.handle_request({**request, "group": "alone.p0", **same})
                assert "error" not in reply, (request["op"], same, reply)
        assert node.incarnation_of("alone.p0") == hosted
        assert "alone.p0" in node.replicas

    in_cluster(tmp_path, scenario)


def test_a_rebuild_takes_no_snapshot_of_another_tables_replica(tmp_path: Path) -> None:
    """A rebuild's snapshot_dump names its replica's incarnation: a source that hosts another
    table's replica of the group id (a deleted one's) refuses, and nothing is rebuilt from it."""

    async def scenario(cluster: Cluster) -> None:
        a1, b1 = await cluster.start("sn-a1"), await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)  # the deleted table's
        # NEW is placed on a1 c1 d1: its messages do not reach b1 (which would retire OLD's).
        assert await a1.create_group(GROUP, ["sn-a1", "sn-c1", "sn-d1"], incarnation=NEW)
        result = await rebuild_from(a1, GROUP, ["sn-b1"], False, timeout=2.0)
        assert result.get("error") == "Unavailable" and "NotLeader" in result["message"], result
        assert a1.incarnation_of(GROUP) == NEW and b1.incarnation_of(GROUP) == OLD

    in_cluster(tmp_path, scenario)


def test_a_restarted_source_serves_a_rebuild_of_its_own_table(tmp_path: Path) -> None:
    """A replica its node restarted with and no map confirmed yet (MemDS out of reach) still
    hands its snapshot to a rebuild naming its incarnation: the same table's replica asks."""

    async def scenario(cluster: Cluster) -> None:
        a1, b1 = await cluster.start("sn-a1"), await cluster.start("sn-b1")
        for node in (a1, b1):
            assert await node.create_group(GROUP, NODES, incarnation=NEW)
        await cluster.stop("sn-b1")
        await cluster.start("sn-b1")  # unconfirmed: no MemDS here
        # 10 s: a bound, not a goal (it once took over 2 s on a busy machine)
        result = await rebuild_from(a1, GROUP, ["sn-b1"], False, timeout=10.0)
        assert result.get("source") == "sn-b1", result

    in_cluster(tmp_path, scenario)


def test_the_metadata_group_serves_a_rebuild_after_a_restart(tmp_path: Path) -> None:
    """A group from the node's config (the metadata group: never deleted, in no map, created by
    nobody) is never waiting to be confirmed: a rebuild reads it, so healing can repair it."""
    addresses = {n: f"127.0.0.1:{p}" for n, p in zip(NODES, free_ports(3), strict=True)}

    def node(name: str) -> StorageNode:
        peers = {n: a for n, a in addresses.items() if n != name}
        config = NodeConfig(
            node_id=name,
            listen=addresses[name],
            admin="127.0.0.1:0",
            data_dir=tmp_path / name,
            peers=peers,
            tick_seconds=0.01,
            raft=RaftConfig(),
            groups={"meta": list(NODES)},
        )
        return StorageNode(config)

    async def scenario() -> dict[str, object]:
        nodes = {name: node(name) for name in NODES}
        try:
            for n in nodes.values():
                await n.start()
            await nodes["sn-b1"].stop()
            nodes["sn-b1"] = node("sn-b1")
            await nodes["sn-b1"].start()  # restarted: no map, no create_group for meta
            assert all("meta" not in n._unconfirmed for n in nodes.values())
            return await rebuild_from(nodes["sn-a1"], "meta", ["sn-b1", "sn-c1"], False, 3.0)
        finally:
            for n in nodes.values():
                await n.stop()

    result = asyncio.run(scenario())
    assert result.get("source") in ("sn-b1", "sn-c1"), result
