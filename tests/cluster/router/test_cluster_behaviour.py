"""The cluster as a whole, through its public API: MemDS constant work, admission control,
failover under a boto3 write loop, restarts, and every process's health and metrics."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
import uuid

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from typer.testing import CliRunner

from chaos.backends.local import LocalCluster
from chaos.cli import app
from tests.conftest import client_for
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=10)
ADMIN_BOUND = 30.0  # an admin request answers at once, later beside CPU hogs: a bound only


def make_table(client, name: str, **capacity) -> None:  # type: ignore[no-untyped-def]
    capacity = capacity or {"BillingMode": "PAY_PER_REQUEST"}
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        **capacity,
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})


def scrape(url: str, metric: str) -> float:
    with urllib.request.urlopen(url, timeout=ADMIN_BOUND) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"^{metric}(\{{.*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def memds_lookups(cluster: LocalCluster) -> float:
    return sum(
        scrape(f"http://{cluster.config.process(m).listen}/metrics", "memds_lookups_total")
        for m in cluster.process_ids("memds")
    )


def test_memds_load_tracks_traffic_with_warm_and_cold_caches(local_cluster: LocalCluster) -> None:
    client = client_for(local_cluster, "rt-b")
    name = f"memds-{uuid.uuid4().hex[:8]}"
    make_table(client, name)
    client.put_item(TableName=name, Item={"id": {"S": "k"}})
    requests = 200

    def lookups_for(n: int) -> float:
        time.sleep(0.3)  # let in-flight lookups land
        before = memds_lookups(local_cluster)
        for _ in range(n):
            client.get_item(TableName=name, Key={"id": {"S": "k"}})
        time.sleep(0.3)
        return memds_lookups(local_cluster) - before

    warm = lookups_for(requests)
    local_cluster.kill("rt-b")  # a restarted router starts with an empty cache
    local_cluster.start("rt-b")
    local_cluster.wait_healthy()
    cold = lookups_for(requests)
    # Constant work: one lookup per request either way (a few more from background refreshes
    # of other tests' traffic are tolerated), so MemDS sees no surge when caches go cold.
    assert requests <= warm <= requests * 1.3, warm
    assert requests <= cold <= requests * 1.3, cold
    assert abs(cold - warm) <= requests * 0.3


def test_hot_table_is_throttled_while_another_keeps_its_throughput(
    local_cluster: LocalCluster,
) -> None:
    client = client_for(local_cluster, "rt-c")
    hot, cool = f"hot-{uuid.uuid4().hex[:6]}", f"cool-{uuid.uuid4().hex[:6]}"
    make_table(
        client,
        hot,
        BillingMode="PROVISIONED",
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
    )
    make_table(client, cool)
    outcomes: dict[str, dict[str, int]] = {hot: {}, cool: {}}

    def enough() -> bool:
        """Both tables did enough to judge: a busy machine needs more time, not more luck."""
        hot_throttled = outcomes[hot].get("ProvisionedThroughputExceededException", 0)
        return hot_throttled >= 10 and outcomes[cool].get("ok", 0) >= 60

    def hammer(table: str, seconds: float) -> None:
        own = client_for(local_cluster, "rt-c", config=NO_RETRIES)
        end = time.monotonic() + seconds
        for i in range(100_000):  # bounded in count, and in time below
            if time.monotonic() > end or enough():
                return
            try:
                own.put_item(TableName=table, Item={"id": {"S": f"k{i % 50}"}})
                code = "ok"
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
            except BotoCoreError as exc:  # a read timeout on a busy machine: hammer on
                code = type(exc).__name__
            outcomes[table][code] = outcomes[table].get(code, 0) + 1

    threads = [threading.Thread(target=hammer, args=(hot, 180.0)) for _ in range(3)]
    threads.append(threading.Thread(target=hammer, args=(cool, 180.0)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes[hot].get("ProvisionedThroughputExceededException", 0) > 0, outcomes
    # The other table is never throttled. (On a starved machine a few requests time out inside
    # the cluster, on either table: that is the machine, not admission control.)
    assert "ProvisionedThroughputExceededException" not in outcomes[cool], outcomes
    assert outcomes[cool].get("ok", 0) >= 60, outcomes


def test_kill_storage_node_during_boto3_write_loop(fresh_cluster: LocalCluster) -> None:
    client = client_for(fresh_cluster, "rt-a")
    make_table(client, "loop")
    acked: dict[str, int] = {}
    errors: dict[str, int] = {}
    # Phases by progress, not by the clock (a busy machine writes slowly): 20 acknowledged
    # writes, then kill the busiest leader, then 50 more. The loop is bounded in count and time.
    victim, acked_at_kill = "", 0
    start = time.monotonic()
    for i in range(100_000):
        if len(acked) >= acked_at_kill + 50 and victim:
            break
        assert time.monotonic() - start < 240, f"writes stalled: {len(acked)} acked, {errors}"
        if not victim and len(acked) >= 20:
            victim = busiest_leader(fresh_cluster)
            fresh_cluster.kill(victim)
            acked_at_kill = len(acked)
        try:
            client.put_item(TableName="loop", Item={"id": {"S": f"k{i}"}, "n": {"N": str(i)}})
            acked[f"k{i}"] = i
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            errors[code] = errors.get(code, 0) + 1
    assert victim and len(acked) >= acked_at_kill + 50, errors  # writes went on after the kill
    for key, n in acked.items():
        item = client.get_item(TableName="loop", Key={"id": {"S": key}}, ConsistentRead=True)
        assert item["Item"]["n"]["N"] == str(n), f"acknowledged write {key} lost"
    # Power the node back on: the cluster is whole again and the data is all there.
    fresh_cluster.start(victim)
    fresh_cluster.wait_healthy()
    assert client.scan(TableName="loop", Select="COUNT", ConsistentRead=True)["Count"] >= len(acked)


def busiest_leader(cluster: LocalCluster) -> str:
    leads = {}
    for node in cluster.process_ids("storage"):
        status = cluster.storage_status(node) or {"replicas": []}
        leads[node] = sum(1 for r in status["replicas"] if r["role"] == "leader")
    return max(leads, key=lambda n: leads[n])


def test_restart_on_existing_data_recovers_everything(fresh_cluster: LocalCluster) -> None:
    client = client_for(fresh_cluster)
    make_table(client, "durable")
    for i in range(30):
        client.put_item(TableName="durable", Item={"id": {"S": f"k{i}"}})
    for process_id in fresh_cluster.process_ids():  # every process, no warning
        fresh_cluster.kill(process_id)
    fresh_cluster.up()
    client = client_for(fresh_cluster)
    assert "durable" in client.list_tables()["TableNames"]
    for i in range(30):
        item = client.get_item(TableName="durable", Key={"id": {"S": f"k{i}"}}, ConsistentRead=True)
        assert item["Item"]["id"]["S"] == f"k{i}"


def test_every_process_serves_health_and_metrics(local_cluster: LocalCluster) -> None:
    expected = {
        "storage": "storage_replica_commit_index",
        "router": "router_requests_total",
        "memds": "memds_lookups_total",
        "gac": "gac_http_requests_total",
    }
    client_for(local_cluster).list_tables()  # so the router has counted something
    for process_id in local_cluster.process_ids():
        info = local_cluster.config.process(process_id)
        # /health answers within 1 s or counts as down; under load, ask again (bounded).
        wait_for(f"{process_id} healthy", lambda p=process_id: local_cluster.health(p), stall=None)
        with urllib.request.urlopen(f"http://{info.admin}/metrics", timeout=ADMIN_BOUND) as resp:
            assert expected[info.role] in resp.read().decode(), process_id


def test_cluster_status_cli_reports_processes_and_leaders(local_cluster: LocalCluster) -> None:
    result = CliRunner().invoke(
        app, ["cluster", "status", "--json", "--data-dir", str(local_cluster.data_dir)]
    )
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["healthy"]
    assert {p["role"] for p in status["processes"]} == {"storage", "router", "memds", "gac"}
    meta = next(g for g in status["partitions"] if g["group"] == "meta")
    assert meta["leader"] is not None and len(meta["members"]) == 3
