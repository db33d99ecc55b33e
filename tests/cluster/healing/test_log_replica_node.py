"""Log replicas on real storage-node processes: created with ``create_group(log_only=True)``
and added through a membership change, they acknowledge the log (so they count towards the
write quorum), keep their SQLite store empty, refuse reads, and survive kill -9."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.storage.client import GroupClient
from cluster.storage.commands import PutCommand, encode_command
from tests.local_nodes import LocalNodes
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
NODES = ("n1", "n2", "n3", "n4")
FULL = ("n1", "n2", "n3")  # n4 only ever holds a log replica: it never leads


def put(key: str, value: int) -> bytes:
    return encode_command(PutCommand("t", key.encode(), b"", {"v": {"N": str(value)}}))


async def write(client: GroupClient, group: str, keys: range) -> None:
    for i in keys:
        reply = await client.call_leader(
            group, "propose", deadline=120.0, candidates=FULL, cmd=put(f"k{i}", i)
        )
        assert reply.get("result", {}).get("ok"), reply


def replica_status(cluster: LocalNodes, node: str, group: str) -> dict[str, Any]:
    replicas = cluster.status(node)["replicas"]
    return next(r for r in replicas if r["group"] == group)


def caught_up(replica: dict[str, Any], field: str, lead: dict[str, Any]) -> dict[str, Any] | None:
    """``replica`` once its ``field`` reached the leader's (as it was read)."""
    return replica if replica[field] >= lead[field] else None


async def create(client: GroupClient, group: str, members: list[str]) -> None:
    for node in members:
        reply = await client.client(node).call("create_group", group=group, members=members)
        assert reply.get("created"), reply


async def change(client: GroupClient, group: str, voters: set[str], log_only: set[str]) -> None:
    started = time.monotonic()  # bounds a change never accepted; a busy machine is slow
    while time.monotonic() - started < 120.0:
        reply = await client.call_leader(
            group,
            "change_membership",
            candidates=FULL,
            voters=sorted(voters),
            log_only=sorted(log_only),
        )
        if "members" in reply:
            return
        await asyncio.sleep(0.1)  # e.g. the new leader has not committed its no-op yet
    raise AssertionError(f"membership change refused: {reply}")


def test_log_replica_acks_the_log_keeps_no_state_and_refuses_reads(tmp_path: Path) -> None:
    async def scenario() -> None:
        extra = ("--compact-every", "50")
        with LocalNodes(tmp_path, {}, nodes=NODES, extra_args=extra) as cluster:
            client = GroupClient(cluster.addresses())
            await create(client, "p0", ["n1", "n2", "n3"])
            await write(client, "p0", range(120))  # a few compactions: n4 joins by snapshot
            leader = cluster.wait_leader("p0")
            lost = next(n for n in ("n1", "n2", "n3") if n != leader)
            cluster.kill(lost)
            await change(client, "p0", {"n1", "n2", "n3"} - {lost}, set())
            reply = await client.client("n4").call(
                "create_group", group="p0", members=[], log_only=True
            )
            assert reply["created"], reply
            survivors = {"n1", "n2", "n3"} - {lost}
            await change(client, "p0", survivors | {"n4"}, {"n4"})
            await write(client, "p0", range(120, 140))
            lead = replica_status(cluster, leader, "p0")
            log_replica = wait_for(
                "n4 holding the whole log",
                lambda: caught_up(replica_status(cluster, "n4", "p0"), "last_index", lead),
                progress=lambda: replica_status(cluster, "n4", "p0")["last_index"],
            )
            assert log_replica["mode"] == "log" and log_replica["log_only"] == ["n4"]
            assert log_replica["last_index"] == lead["last_index"]
            assert log_replica["role"] == "follower"
            digest = cluster.nodes["n4"].get_json("/digest?group=p0")["digests"][0]
            assert digest["digest"] is None
            # Reads go elsewhere: a log replica has nothing to read from.
            refused = await client.client("n4").call("get", group="p0", tbl="t", pk=b"k1", sk=b"")
            assert refused["error"] == "NotLeader", refused
            db = sqlite3.connect(tmp_path / "n4" / "groups" / "p0" / "items.sqlite")
            assert db.execute("SELECT COUNT(*) FROM items").fetchone() == (0,)
            db.close()
            # It counts towards the quorum: with the other full replica down, writes commit.
            other = next(iter(survivors - {leader}))
            cluster.kill(other)
            await write(client, "p0", range(140, 150))
            # And it recovers as a log replica after kill -9.
            cluster.kill("n4")
            cluster.start("n4")
            cluster.start(other)
            cluster.wait_healthy(["n4", other])
            await write(client, "p0", range(150, 160))
            log_replica = wait_for(
                "n4 committing the log again",
                lambda: caught_up(
                    replica_status(cluster, "n4", "p0"),
                    "commit",
                    replica_status(cluster, leader, "p0"),
                ),
                progress=lambda: replica_status(cluster, "n4", "p0")["commit"],
            )
            # wait_for compared n4's commit with the leader's as it was read. Reading the leader
            # again here could race a newer entry (a re-election's no-op: with ``other`` and n4
            # down, the leader lost its quorum for a while).
            assert log_replica["mode"] == "log"
            await client.close()

    asyncio.run(scenario())
