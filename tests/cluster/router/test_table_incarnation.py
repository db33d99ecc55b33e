"""DeleteTable then CreateTable of the same name, on a whole local cluster, while a storage node
misses the delete: the new table starts empty (tests/cluster/storage/test_node_incarnation.py
has the mechanism). Group ids come from the name, and the node kept the deleted table's replica;
before tables had an incarnation, that replica joined the new table's group as one of its own
and could lead it, serving the deleted table's items."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config

from chaos.backends.local import LocalCluster
from cluster.storage.client import ask
from tests.conftest import client_for

pytestmark = pytest.mark.slow

TABLE = "reborn"
GROUP = f"{TABLE}.p0"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster.create(tmp_path / "cluster", "3x1x1", partitions=1)
    cluster.die_with_this_process()
    try:
        cluster.up(timeout=120)
        yield cluster
    finally:
        cluster.down()
        cluster.release_subnet()


def until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.2)
    return value


def replicas(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    found = {}
    for node in ("sn-a1", "sn-b1", "sn-c1"):
        for r in (cluster.storage_status(node) or {"replicas": []})["replicas"]:
            if r["group"] == GROUP:
                found[node] = r
    return found


def in_step(cluster: LocalCluster) -> bool:
    """All three replicas hold everything their leader committed, none rejoining."""
    found = replicas(cluster)
    commit = max((r["commit"] for r in found.values() if r["role"] == "leader"), default=0)
    return len(found) == 3 and all(
        r["applied"] >= commit > 0 and not r["rejoining"] for r in found.values()
    )


def same_data(cluster: LocalCluster) -> bool:
    """The three replicas applied the same entries and hold the same data (their digests)."""
    found = []
    for node in ("sn-a1", "sn-b1", "sn-c1"):
        address = cluster.config.process(node).listen
        reply = asyncio.run(ask(address, {"op": "digest", "group": GROUP}, 5.0))
        found += reply.get("digests", [])
    return len(found) == 3 and len({(d["applied"], d["digest"]) for d in found}) == 1


def test_a_table_created_again_starts_empty_whatever_a_node_kept(cluster: LocalCluster) -> None:
    client = client_for(cluster, config=Config(retries={"mode": "standard", "max_attempts": 5}))

    def create(items: list[str]) -> None:
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 0.2})
        for item in items:
            client.put_item(TableName=TABLE, Item={"id": {"S": item}})

    def delete() -> None:
        client.delete_table(TableName=TABLE)
        client.get_waiter("table_not_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 0.2})

    def stored() -> set[str]:
        items = client.scan(TableName=TABLE, ConsistentRead=True)["Items"]
        return {item["id"]["S"] for item in items}

    # 1. sn-c1 is down during DeleteTable only: back before the table is created again.
    create([f"old-{i}" for i in range(10)])
    until("sn-c1 holding the table", lambda: in_step(cluster))
    cluster.kill("sn-c1")
    delete()
    cluster.start("sn-c1")
    cluster.wait_healthy()
    create(["new"])
    until("the new table on all three", lambda: in_step(cluster))
    assert stored() == {"new"}
    until("the same data on all three", lambda: same_data(cluster))

    # 2. sn-c1 is down during both: back once the new table is in use (its reconcile).
    cluster.kill("sn-c1")
    delete()
    create(["newer"])
    cluster.start("sn-c1")
    cluster.wait_healthy()
    until("sn-c1 caught up with the new table", lambda: in_step(cluster))
    client.put_item(TableName=TABLE, Item={"id": {"S": "last"}})
    assert stored() == {"newer", "last"}
    until("the same data on all three", lambda: same_data(cluster))
