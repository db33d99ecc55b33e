"""CreateTable's incarnation grows past every table of its name deleted before, even when a
DeleteTable of the name lands between its map read and its write (another router, its clock
ahead): the metadata refuses a create below the tombstone's version (store.py), and the router
reads the map again and retries with a higher one. The incarnation is the identity of the
table's groups on storage nodes (a lower one looks like the deleted table's)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.metadata.partitionmap import PartitionMap, TableLayout
from cluster.metadata.store import TableExists
from cluster.router import tables
from cluster.router.errors import DynamoError

REQUEST = {
    "TableName": "orders",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}
FUTURE = 10**15  # a tombstone's version (ms) from a router whose clock is far ahead


class Metadata:
    """The meta group as seen by one router: another router's DeleteTable of "orders" (at
    FUTURE) lands right after this router's first read."""

    def __init__(self, taken: bool = False) -> None:
        self.reads = 0
        self.taken = taken
        self.created: list[int] = []

    async def read_map(self) -> PartitionMap:
        self.reads += 1
        if self.reads == 1:
            return PartitionMap(1_000)
        if self.taken:
            return PartitionMap(FUTURE, {"orders": self.layout})
        return PartitionMap(FUTURE)

    async def create(self, layout: TableLayout, version: int) -> None:
        self.layout = layout
        if version <= FUTURE:  # the store's condition: above the tombstone's version
            raise TableExists(layout.spec.name)
        assert layout.spec.incarnation == version
        self.created.append(version)

    async def drain_of(self, table: str) -> None:
        return None  # a tombstone without a drain (store.Drain): nothing holds the name


def create(metadata: Metadata, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    async def built(build: Any, seconds: float) -> None:
        pass

    monkeypatch.setattr(tables, "start_build", lambda ctx, layout: None)
    monkeypatch.setattr(tables, "wait_built", built)
    config = SimpleNamespace(topology="3x1x1", default_partitions=1)
    ctx = SimpleNamespace(config=config, metadata=metadata)
    return asyncio.run(tables.create_table(ctx, dict(REQUEST)))  # type: ignore[arg-type]


def test_a_create_that_lost_to_a_newer_delete_retries_above_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metadata = Metadata()
    create(metadata, monkeypatch)
    assert metadata.created == [FUTURE + 1] and metadata.reads == 2


def test_a_name_taken_is_still_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    metadata = Metadata(taken=True)
    with pytest.raises(DynamoError) as raised:
        create(metadata, monkeypatch)
    assert raised.value.type == "ResourceInUseException" and metadata.created == []
