"""Healing on a whole local cluster (DESIGN.md "Log replicas"): kill -9 a storage node under a
write load; its groups get 3 live members again (2 full + 1 log replica), writes
go on, the log replicas later become full replicas, every step is an event and a metric, the
partition map follows, and when the node comes back no group is left short of 3 AZs."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chaos.backends.local import LocalCluster
from cluster import auth
from tests.conftest import client_for

from .conftest import events, get_json, leaders, modes, wait_for

pytestmark = pytest.mark.slow
CLIENT = Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=10)


class Writers:
    """Threads that put distinct keys through the routers; remember what was acknowledged."""

    def __init__(self, cluster: LocalCluster, table: str, threads: int = 3) -> None:
        self.cluster, self.table = cluster, table
        self.acked: dict[str, int] = {}
        self.ack_times: dict[int, list[float]] = {}  # per thread: each waits for its write
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        routers = ["rt-a", "rt-b", "rt-c"]
        self.threads = [
            threading.Thread(target=self._run, args=(routers[i % 3], i), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, router: str, n: int) -> None:
        client = client_for(self.cluster, router, config=CLIENT)
        for i in range(1_000_000):  # bounded; stops on the event
            if self.stop.is_set():
                return
            key = f"w{n}-{i}"
            try:
                client.put_item(TableName=self.table, Item={"id": {"S": key}, "n": {"N": str(i)}})
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                with self.lock:
                    self.errors[code] = self.errors.get(code, 0) + 1
                continue
            except BotoCoreError as exc:  # a read timeout on a busy machine: the writer goes on
                with self.lock:
                    self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                continue
            with self.lock:
                self.acked[key] = i
                self.ack_times.setdefault(n, []).append(time.monotonic())

    def acked_after(self, after: float) -> int:
        """How many writes were acknowledged after ``after`` (a monotonic time)."""
        with self.lock:
            return sum(1 for ts in self.ack_times.values() for t in ts if t > after)

    def longest_gap(self, after: float) -> float:
        """The longest a writer waited between two acknowledgements (after ``after``)."""
        with self.lock:
            per_thread = [[t for t in ts if t >= after] for ts in self.ack_times.values()]
        return max(
            (b - a for times in per_thread for a, b in itertools.pairwise(times)),
            default=float("inf"),
        )


def make_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})


def groups_of(cluster: LocalCluster, node: str) -> set[str]:
    status = cluster.storage_status(node) or {"replicas": []}
    return {r["group"] for r in status["replicas"]}


def restored(cluster: LocalCluster, groups: set[str], victim: str) -> dict[str, Any] | None:
    """Every group has 3 members without the victim, all live, if so their statuses."""
    found = leaders(cluster)
    if not groups <= set(found):
        return None
    for g in groups:
        members = found[g]["members"]
        if victim in members or len(members) != 3:
            return None
        if not all(cluster.alive(m) for m in members):
            return None
    return {g: found[g] for g in groups}


def all_full(cluster: LocalCluster, groups: set[str]) -> bool:
    found, mode = leaders(cluster), modes(cluster)
    return all(
        g in found
        and len(found[g]["members"]) == 3
        and not found[g]["log_only"]
        and all(mode.get((g, m)) == "full" for m in found[g]["members"])
        for g in groups
    )


def azs_of(cluster: LocalCluster, members: list[str]) -> set[str]:
    return {cluster.config.process(m).az for m in members}


def test_kill_9_under_write_load_heals_with_log_replicas_then_full_ones(
    healing_cluster: LocalCluster,
) -> None:
    cluster = healing_cluster
    client = client_for(cluster, "rt-a")
    make_table(client, "healing")
    with Writers(cluster, "healing") as writers:
        time.sleep(2.0)
        # A node with a partition of the table, leading as many groups as possible: its
        # groups also lose their leader.
        found = leaders(cluster)
        victim = max(
            (n for n in cluster.process_ids("storage") if groups_of(cluster, n) - {"meta"}),
            key=lambda n: sum(1 for r in found.values() if r["node"] == n),
        )
        hit = groups_of(cluster, victim)
        assert hit, "the victim hosts no replica"
        killed_at = time.monotonic()
        cluster.kill(victim)
        healed = wait_for("3 live members again", lambda: restored(cluster, hit, victim))
        restored_after = time.monotonic() - killed_at
        # 3 live members: the log replica has restored durability, the full one is not built yet
        for g, status in healed.items():
            assert len(status["log_only"]) == 1, (g, status)
            assert azs_of(cluster, status["members"]) == {"az-a", "az-b", "az-c"}, (g, status)
        # (The metadata group's full replicas live on its home nodes, where routers look for
        # it: its stand-in log replica stays until the node is back.)
        tables = hit - {"meta"}
        wait_for("log replicas replaced by full ones", lambda: all_full(cluster, tables))
        full_after = time.monotonic() - killed_at
        time.sleep(1.0)
    gap = writers.longest_gap(after=killed_at - 1.0)
    # How fast is bench/healing.py's question (timed assertions fail on a busy machine); here:
    # writes went on through the heal, and the log replica came before the full one (above).
    assert writers.acked_after(killed_at), writers.errors
    assert len(writers.acked) > 100, writers.errors
    print(f"restored in {restored_after:.1f}s, full in {full_after:.1f}s, gap {gap:.2f}s")

    # Every acknowledged write is there (consistent reads through the routers).
    reader = client_for(cluster, "rt-b")
    for key, n in itertools.islice(writers.acked.items(), 0, None, 7):
        item = reader.get_item(TableName="healing", Key={"id": {"S": key}}, ConsistentRead=True)
        assert item["Item"]["n"]["N"] == str(n), f"acknowledged write {key} lost"

    # The timeline: suspected, removed, log replica added, full replica ready, per group.
    timeline = events(cluster)
    kinds = {(e["kind"], e["group"]) for e in timeline}
    assert any(e["kind"] == "node_suspected" and e["node"] == victim for e in timeline)
    for g in tables:
        for kind in ("member_removed", "log_replica_added", "full_replica_ready"):
            assert (kind, g) in kinds, (kind, g, timeline)
        removed = next(e for e in timeline if e["kind"] == "member_removed" and e["group"] == g)
        added = next(e for e in timeline if e["kind"] == "log_replica_added" and e["group"] == g)
        ready = next(e for e in timeline if e["kind"] == "full_replica_ready" and e["group"] == g)
        assert removed["node"] == victim
        assert removed["time"] <= added["time"] <= ready["time"]
    # ... and in the metrics of the nodes that did it.
    reporters = {e["reporter"] for e in timeline if e["kind"] == "log_replica_added"}
    for node in reporters:
        admin = cluster.config.process(node).admin
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=30) as resp:
            text = resp.read().decode()
        assert 'healing_events_total{kind="log_replica_added"}' in text

    # The partition map (through MemDS) lists the new members of every table partition.
    def map_follows() -> bool:
        md = cluster.config.process("md-a").listen
        url = f"http://{md}/map"
        signed = urllib.request.Request(url, headers=auth.url_headers("GET", url))
        try:  # a busy MemDS may answer late: the wait goes on
            with urllib.request.urlopen(signed, timeout=30) as resp:
                body = json.loads(resp.read())
        except OSError:
            return False
        found = leaders(cluster)
        parts = body["tables"]["healing"]["partitions"]
        return all(sorted(p["replicas"]) == found[p["id"]]["members"] for p in parts)

    wait_for("partition map lists the new members", map_follows)

    # The node comes back: it keeps no stale copy, and every group spans 3 AZs.
    cluster.start(victim)
    cluster.wait_healthy()

    def settled() -> bool:
        found = leaders(cluster)
        mine = groups_of(cluster, victim)
        return all(
            len(s["members"]) == 3
            and azs_of(cluster, s["members"]) == {"az-a", "az-b", "az-c"}
            and not s["log_only"]
            for s in found.values()
        ) and all(victim in found[g]["members"] for g in mine if g in found)

    wait_for("the cluster settles with the node back", settled)
    state = get_json(cluster, victim, "/admin/state")
    assert state["node"] == victim
