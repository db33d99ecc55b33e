"""DeleteTable while two of a group's three replicas are down: the name stays taken until they
are back and have dropped it (cluster/router/tabledrain.py), then CreateTable succeeds.

Before, the drops they missed were forgotten and CreateTable reused the name at once. The two
leftovers, back, were a quorum of the deleted table's group: a router whose table cache was
stale (MemDS cut off) had its writes acknowledged there, and lost once the new table existed
(session 14, "gap 5")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos.backends.local import LocalCluster
from cluster.metadata.partitionmap import meta_replicas
from cluster.topology import parse_topology
from tests.conftest import client_for

pytestmark = pytest.mark.slow

TABLE = "drained"
GROUPS = (f"{TABLE}.p0", f"{TABLE}.p1")
NODES = [n.id for n in parse_topology("3x2x1").storage_nodes()]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster.create(tmp_path / "cluster", "3x2x1", partitions=2)
    cluster.die_with_this_process()
    try:
        cluster.up(timeout=120)
        yield cluster
    finally:
        cluster.down()
        cluster.release_subnet()


def hosts(cluster: LocalCluster, group: str) -> list[str]:
    """The nodes that host a replica of ``group``."""
    found = []
    for node in NODES:
        status = cluster.storage_status(node) if cluster.alive(node) else None
        if any(r["group"] == group for r in (status or {"replicas": []})["replicas"]):
            found.append(node)
    return found


def retry_until(what: str, call: Any, code: str, timeout: float = 30.0) -> None:
    """``call()`` until it does not fail with ``code`` (a meta leader killed: an election)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != code:
                raise
            assert time.monotonic() < deadline, f"{what}: still {code} after {timeout}s"
            time.sleep(1.0)


def test_a_name_is_reused_only_once_the_deleted_groups_are_dropped(cluster: LocalCluster) -> None:
    client = client_for(cluster, config=Config(retries={"mode": "standard", "max_attempts": 3}))

    def create(wait: bool = True) -> None:
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        if wait:
            client.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 0.2})

    create()
    client.put_item(TableName=TABLE, Item={"id": {"S": "old"}})
    # Two replicas of a group, not metadata nodes (the tombstone needs the meta group).
    meta = set(meta_replicas(parse_topology("3x2x1")))
    replicas = min((hosts(cluster, g) for g in GROUPS), key=lambda r: len(meta & set(r)))
    assert len(replicas) == 3, replicas
    down = [n for n in replicas if n not in meta][:2]
    assert len(down) == 2, replicas
    for node in down:
        cluster.kill(node)
    retry_until("DeleteTable", lambda: client.delete_table(TableName=TABLE), "ServiceUnavailable")
    with pytest.raises(ClientError) as refused:
        create(wait=False)
    error: Any = refused.value.response["Error"]
    assert error["Code"] == "ResourceInUseException", error
    assert "still being dropped" in error["Message"], error
    assert TABLE not in client.list_tables()["TableNames"]  # deleted, for every reader
    # DELETING while the name is held: the table_not_exists waiter goes on waiting.
    assert client.describe_table(TableName=TABLE)["Table"]["TableStatus"] == "DELETING"

    for node in down:
        cluster.start(node)
    cluster.wait_healthy()
    # The routers' TableDrains drop the deleted group on the nodes back; DynamoDB's way to
    # recreate a table (waiter, then CreateTable) works once DescribeTable says not found.
    waiter = client.get_waiter("table_not_exists")
    waiter.wait(TableName=TABLE, WaiterConfig={"Delay": 0.5, "MaxAttempts": 240})
    create()
    client.put_item(TableName=TABLE, Item={"id": {"S": "new"}})
    items = client.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    assert [item["id"]["S"] for item in items] == ["new"]
