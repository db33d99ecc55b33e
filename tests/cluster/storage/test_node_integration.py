"""Storage nodes as real processes on 127.x.0.y addresses, killed with real SIGKILLs."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cluster.storage.client import GroupClient
from cluster.storage.commands import (
    ApplyResult,
    BatchWriteCommand,
    Condition,
    PutCommand,
    UpdateCommand,
    encode_command,
)
from cluster.storage.itemstore import encode_key_value
from tests.local_nodes import ADMIN_BOUND, LocalNodes
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
# How long a request may look for the group's leader: an upper bound for a group that has none,
# not a deadline for a busy machine (there an election takes many rounds).
DEADLINE = 120.0
GROUPS: dict[str, tuple[str, ...]] = {"p0": ("n1", "n2", "n3"), "p1": ("n1", "n2", "n3")}


def put(key: str, value: int) -> bytes:
    return encode_command(PutCommand("t", key.encode(), b"", {"v": {"N": str(value)}}))


class WriteLoad:
    """Writes distinct keys in a loop; remembers exactly which writes were acknowledged."""

    def __init__(self, writer: GroupClient, group: str) -> None:
        self.writer = writer
        self.group = group
        self.acked: dict[str, int] = {}
        self.attempts = 0
        self.stop = asyncio.Event()

    async def run(self, limit: int = 100_000) -> None:
        for i in range(limit):  # bounded: stops by itself even if nobody sets stop
            if self.stop.is_set():
                return
            self.attempts += 1
            key = f"{self.group}-k{i}"
            reply = await self.writer.call_leader(
                self.group, "propose", deadline=5.0, cmd=put(key, i), timeout=2.0
            )
            if "result" in reply and reply["result"]["ok"]:
                self.acked[key] = i


async def read_all(writer: GroupClient, group: str, keys: dict[str, int]) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for key in keys:
        reply = await writer.call_leader(
            group, "get", DEADLINE, tbl="t", pk=key.encode(), sk=b"", consistent=True
        )
        assert "item" in reply, reply
        item = reply["item"]
        found[key] = None if item is None else int(item["v"]["N"])
    return found


def wait_digests_equal(cluster: LocalNodes, group: str) -> str:
    """The replicas' common digest, once every replica applied the same log: waits while the
    laggards' applied indexes move (a busy machine catches up slowly, a stuck one fails)."""
    seen: dict[str, tuple[int, str]] = {}

    def converged() -> str | None:
        seen.clear()
        for node_id, node in cluster.nodes.items():
            for d in node.get_json(f"/digest?group={group}")["digests"]:
                seen[node_id] = (d["applied"], d["digest"])
        return next(iter(seen.values()))[1] if len(set(seen.values())) == 1 else None

    applied = lambda: sorted(a for a, _ in seen.values())  # noqa: E731
    return wait_for(f"replicas of {group} converge", converged, progress=applied)


def test_group_accepts_writes_and_serves_consistent_reads(tmp_path: Path) -> None:
    async def scenario() -> None:
        with LocalNodes(tmp_path, GROUPS) as cluster:
            writer = GroupClient(cluster.addresses())
            for i in range(20):
                reply = await writer.call_leader("p0", "propose", DEADLINE, cmd=put(f"k{i}", i))
                assert reply["result"]["ok"], reply
            found = await read_all(writer, "p0", {f"k{i}": i for i in range(20)})
            assert found == {f"k{i}": i for i in range(20)}
            # A follower refuses consistent reads but serves eventual ones.
            leader = cluster.wait_leader("p0")
            follower = next(n for n in cluster.nodes if n != leader)
            client = writer.client(follower)
            refused = await client.call(
                "get", group="p0", tbl="t", pk=b"k1", sk=b"", consistent=True
            )
            assert refused["error"] == "NotLeader" and refused["leader"] == leader
            wait_digests_equal(cluster, "p0")
            eventual = await client.call("get", group="p0", tbl="t", pk=b"k1", sk=b"")
            assert eventual["item"] == {"v": {"N": "1"}}
            await writer.close()

    asyncio.run(scenario())


def test_propose_replies_match_handle_request(tmp_path: Path) -> None:
    """Proposals are answered by callbacks (node.py ``_answer_propose``), not a task each:
    pipelined ones each get their own reply, with the results, sizes and errors that
    ``handle_request`` gives (ApplyResult sizes come from the leader, which computes results
    for its waiting proposals: statemachine.py skips them only where nobody waits)."""

    async def scenario() -> None:
        with LocalNodes(tmp_path, GROUPS) as cluster:
            writer = GroupClient(cluster.addresses())
            first = await writer.call_leader("p0", "propose", DEADLINE, cmd=put("a", 1))
            assert first["result"]["ok"], first
            leader = cluster.wait_leader("p0")
            node = writer.client(leader)
            calls = [node.call("propose", group="p0", cmd=put(f"p{i}", i)) for i in range(30)]
            replies = await asyncio.gather(*calls)
            assert all(r["result"]["ok"] and r["result"]["sizes"] for r in replies), replies
            returns = PutCommand("t", b"a", b"", {"v": {"N": "2"}}, returns="ALL_OLD")
            old = await node.call("propose", group="p0", cmd=encode_command(returns))
            assert old["result"]["old"] == {"v": {"N": "1"}}, old
            no_group = await node.call("propose", group="nope", cmd=put("x", 1))
            assert no_group["error"] == "NoSuchGroup", no_group
            no_cmd = await node.call("propose", group="p0")
            assert no_cmd["error"] == "ValidationException", no_cmd
            bad_timeout = await node.call("propose", group="p0", cmd=put("x", 1), timeout="x")
            assert bad_timeout["error"] == "ValidationException", bad_timeout
            follower = next(n for n in cluster.nodes if n != leader)
            refused = await writer.client(follower).call("propose", group="p0", cmd=put("x", 1))
            assert refused["error"] == "NotLeader" and refused["leader"] == leader, refused
            # No outcome within the request's timeout: OutcomeUnknown, and only that answer
            # (the write itself may still commit later: its reply is dropped).
            late = await node.call("propose", group="p0", cmd=put("late", 1), timeout=0.0)
            assert late["error"] == "OutcomeUnknown", late
            assert "no outcome within" in late["message"], late
            after = await node.call("propose", group="p0", cmd=put("after", 1))
            assert after["result"]["ok"], after
            await writer.close()

    asyncio.run(scenario())


def test_admin_endpoints(tmp_path: Path) -> None:
    with LocalNodes(tmp_path, GROUPS) as cluster:
        cluster.wait_leader("p0")
        node = cluster.nodes["n1"]
        assert node.get_json("/health")["status"] == "ok"
        replicas = node.get_json("/replicas")["replicas"]
        assert {r["group"] for r in replicas} == {"p0", "p1"}
        assert all(r["members"] == ["n1", "n2", "n3"] for r in replicas)
        digests = node.get_json("/digest")["digests"]
        assert {d["group"] for d in digests} == {"p0", "p1"}
        with urllib.request.urlopen(node.admin + "/metrics", timeout=ADMIN_BOUND) as resp:
            metrics = resp.read().decode()
        assert 'storage_replica_commit_index{group="p0"}' in metrics
        assert "storage_peer_connected" in metrics


def test_kill_leader_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        with LocalNodes(tmp_path, GROUPS) as cluster:
            writer = GroupClient(cluster.addresses())
            load = WriteLoad(writer, "p0")
            task = asyncio.create_task(load.run())
            await asyncio.sleep(1.0)
            old = cluster.wait_leader("p0")
            before = len(load.acked)
            cluster.kill(old)
            new = await asyncio.to_thread(cluster.wait_leader, "p0", not_=old)
            # Writes resume: wait for a few more acks while attempts go on (bounded).
            await asyncio.to_thread(
                wait_for,
                "writes resuming after the leader died",
                lambda: len(load.acked) > before + 5,
                progress=lambda: len(load.acked),
            )
            load.stop.set()
            await task
            assert new != old
            found = await read_all(writer, "p0", load.acked)
            assert found == load.acked
            # The killed node comes back on its data and catches up.
            cluster.start(old)
            cluster.wait_healthy()
            wait_digests_equal(cluster, "p0")
            await writer.close()

    asyncio.run(scenario())


def test_all_nodes_killed_and_restarted_keep_every_acknowledged_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        with LocalNodes(tmp_path, GROUPS) as cluster:
            writer = GroupClient(cluster.addresses())
            loads = [WriteLoad(writer, g) for g in GROUPS]
            tasks = [asyncio.create_task(load.run()) for load in loads]
            # Enough acknowledged writes to lose, however busy the machine (bounded wait).
            await asyncio.to_thread(
                wait_for,
                "20 acknowledged writes per group",
                lambda: all(len(load.acked) > 20 for load in loads),
                progress=lambda: [len(load.acked) for load in loads],
            )
            for node in cluster.nodes:  # mid-load, no warning
                cluster.kill(node)
            for load in loads:
                load.stop.set()
            await asyncio.gather(*tasks)
            await writer.close()
            for node in cluster.nodes:
                cluster.start(node)
            cluster.wait_healthy()
            writer = GroupClient(cluster.addresses())
            for load in loads:
                assert len(load.acked) > 20
                found = await read_all(writer, load.group, load.acked)
                assert found == load.acked
            await writer.close()

    asyncio.run(scenario())


def test_lagging_node_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    async def scenario() -> None:
        extra = ("--compact-every", "40")
        with LocalNodes(tmp_path, GROUPS, extra_args=extra) as cluster:
            writer = GroupClient(cluster.addresses())
            leader = cluster.wait_leader("p0")
            down = next(n for n in cluster.nodes if n != leader)
            cluster.kill(down)
            for i in range(150):  # several compactions while it is down
                reply = await writer.call_leader("p0", "propose", DEADLINE, cmd=put(f"k{i}", i))
                assert reply["result"]["ok"], reply
            cluster.start(down)
            cluster.wait_healthy()
            wait_digests_equal(cluster, "p0")
            # And the caught-up node survives another crash-restart on its snapshot.
            cluster.kill(down)
            cluster.start(down)
            cluster.wait_healthy()
            digest = wait_digests_equal(cluster, "p0")
            assert digest
            await writer.close()

    asyncio.run(scenario())


def test_conditional_update_and_paged_reads_through_the_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        with LocalNodes(tmp_path, GROUPS) as cluster:
            writer = GroupClient(cluster.addresses())
            pk, sks = b"Suser", [encode_key_value({"N": str(i)}) for i in range(10)]
            keys = [{"id": {"S": "user"}, "n": {"N": str(i)}} for i in range(10)]
            batch = BatchWriteCommand(
                tuple(PutCommand("q", pk, sk, k) for sk, k in zip(sks, keys, strict=True))
            )
            reply = await writer.call_leader("p0", "propose", DEADLINE, cmd=encode_command(batch))
            assert reply.get("result", {}).get("ok"), reply

            async def bump(expected: int) -> ApplyResult:
                expect = {":expected": {"N": str(expected)}}
                cond = Condition("attribute_not_exists(v) OR v = :expected", values=expect)
                text = "SET v = if_not_exists(v, :zero) + :one"
                values = {":zero": {"N": "0"}, ":one": {"N": "1"}}
                cmd = UpdateCommand(
                    "q",
                    pk,
                    sks[0],
                    keys[0],
                    text,
                    {},
                    values,
                    cond,
                    "ALL_NEW",
                    key_names=("id", "n"),
                )
                reply = await writer.call_leader("p0", "propose", DEADLINE, cmd=encode_command(cmd))
                return ApplyResult.from_wire(reply["result"])

            assert (await bump(0)).new == keys[0] | {"v": {"N": "1"}}
            stale = await bump(0)
            assert stale.error == "ConditionalCheckFailedException"
            assert stale.old == keys[0] | {"v": {"N": "1"}}
            assert (await bump(1)).new == keys[0] | {"v": {"N": "2"}}

            async def query(**fields: Any) -> dict[str, Any]:
                reply = await writer.call_leader(
                    "p0", "query", DEADLINE, tbl="q", pk=pk, consistent=True, **fields
                )
                assert "items" in reply, reply
                return reply

            def numbers(items: list[Any]) -> list[int]:
                return [int(item["n"]["N"]) for _, item in items]

            page = await query(lo=[sks[2], True], hi=[sks[7], False])
            assert numbers(page["items"]) == [2, 3, 4, 5, 6] and page["more"] is False
            page = await query(lo=[sks[2], False], hi=[sks[7], True], forward=False, limit=10)
            assert numbers(page["items"]) == [7, 6, 5, 4, 3] and page["more"] is False
            seen: list[int] = []
            pages, after = 0, None  # paging down from the top, two at a time
            while True:
                page = await query(lo=[sks[2], True], forward=False, limit=2, start_after=after)
                items = page["items"]
                seen += numbers(items)
                pages += 1
                if not page["more"]:
                    break
                after = items[-1][0]
            assert seen == [9, 8, 7, 6, 5, 4, 3, 2] and pages == 4
            bad = await writer.call_leader(
                "p0", "query", DEADLINE, tbl="q", pk="Suser", lo=[1, True]
            )
            assert bad["error"] == "ValidationException", bad

            scanned: list[tuple[bytes, bytes]] = []
            start_after = None
            for _ in range(10):  # bounded: 10 items, 3 a page
                fields: dict[str, Any] = {
                    "tbl": "q",
                    "limit": 3,
                    "start_after": start_after,
                    "consistent": True,
                }
                page = await writer.call_leader("p0", "scan", DEADLINE, **fields)
                scanned += [(p, s) for p, s, _ in page["items"]]
                if not page["more"]:
                    break
                start_after = list(scanned[-1])
            assert scanned == [(pk, sk) for sk in sks]
            bad = await writer.call_leader("p0", "scan", DEADLINE, tbl="q", limit=0)
            assert bad["error"] == "ValidationException", bad

            # Followers serve eventually consistent reads once they have applied everything.
            wait_digests_equal(cluster, "p0")
            leader = cluster.wait_leader("p0")
            follower = writer.client(next(n for n in cluster.nodes if n != leader))
            page = await follower.call("query", group="p0", tbl="q", pk=pk, limit=1)
            assert page["items"] == [[sks[0], keys[0] | {"v": {"N": "2"}}]] and page["more"]
            await writer.close()

    asyncio.run(scenario())


def test_read_marks_prove_items_unchanged_between_two_reads(tmp_path: Path) -> None:
    """TransactGetItems' reads: txn_read marks the items it reads at the leader, txn_check
    says whether each is still unchanged; a write in between, or another node, says no."""

    async def scenario() -> None:
        with LocalNodes(tmp_path, GROUPS) as cluster:
            writer = GroupClient(cluster.addresses())
            for key in ("a", "b"):
                reply = await writer.call_leader("p0", "propose", DEADLINE, cmd=put(key, 1))
                assert reply["result"]["ok"], reply
            keys = [["t", b"a", b""], ["t", b"b", b""], ["t", b"none", b""]]

            async def read(reader: str) -> dict[str, Any]:
                return await writer.call_leader(
                    "p0", "txn_read", DEADLINE, reader=reader, keys=keys, consistent=True
                )

            async def check(reader: str) -> dict[str, Any]:
                return await writer.call_leader(
                    "p0", "txn_check", DEADLINE, reader=reader, keys=keys, consistent=True
                )

            first = await read("r1")
            assert first["items"] == [{"v": {"N": "1"}}, {"v": {"N": "1"}}, None], first
            assert first["locks"] == [None, None, None]
            checked = await check("r1")
            assert checked["held"] == [True, True, True] and checked["node"] == first["node"]
            assert (await check("r1"))["held"] == [False, False, False]  # marks are one-shot
            await read("r2")
            reply = await writer.call_leader("p0", "propose", DEADLINE, cmd=put("b", 2))
            assert reply["result"]["ok"], reply
            assert (await check("r2"))["held"] == [True, False, True]
            # Marks live on the node that read: another node has none (nor serves the check).
            await read("r3")
            leader = cluster.wait_leader("p0")
            follower = next(n for n in cluster.nodes if n != leader)
            refused = await writer.client(follower).call(
                "txn_check", group="p0", reader="r3", keys=keys, consistent=True
            )
            assert refused["error"] == "NotLeader", refused
            await writer.close()

    asyncio.run(scenario())
