"""A table created again under a deleted one's name gets a higher incarnation, always.

The incarnation (the create's version, ``TableSpec.incarnation``) is the identity of the
table's replication groups, whose ids come from its name: storage nodes replace a replica of a
lower one and never let replicas of different ones exchange Raft messages, and a replica that
hears of a higher one is retired (cluster/storage/node.py). A create whose version is not above
the tombstone's (a router that read the map before another one's DeleteTable, its clock behind)
must therefore fail: it was accepted, and its groups would have been the older-looking ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster.consensus.raft import RaftConfig
from cluster.metadata.partitionmap import (
    META_GROUP,
    KeySchema,
    TableLayout,
    TableSpec,
    build_layout,
)
from cluster.metadata.store import MetadataStore, TableExists
from cluster.storage.client import GroupClient
from cluster.storage.node import NodeConfig, StorageNode
from cluster.topology import parse_topology
from tests.local_nodes import free_port


@contextlib.asynccontextmanager
async def meta_store(data_dir: Path) -> AsyncIterator[MetadataStore]:
    """A MetadataStore over a real one-node meta group (a storage node in this event loop)."""
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"
    node = StorageNode(
        NodeConfig(
            node_id="n1",
            listen=listen,
            admin="127.0.0.1:0",
            data_dir=data_dir,
            groups={META_GROUP: ("n1",)},
            tick_seconds=0.01,
            raft=RaftConfig(),
        )
    )
    await node.start()
    nodes = GroupClient({"n1": listen})
    try:
        yield MetadataStore(nodes, ("n1",))
    finally:
        await nodes.close()
        await node.stop()


def test_a_create_below_the_tombstones_version_is_refused(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        topology = parse_topology("3x1x1")

        def layout(incarnation: int) -> TableLayout:
            spec = TableSpec("orders", KeySchema("pk", "S"), incarnation=incarnation)
            return build_layout(topology, spec, {})

        async with meta_store(tmp_path / "n1") as store:
            await store.create(layout(100), 100)
            with pytest.raises(TableExists):
                await store.create(layout(150), 150)  # taken
            assert await store.delete("orders", 200, "")
            with pytest.raises(TableExists):  # deleted at 200: 150 would look older
                await store.create(layout(150), 150)
            with pytest.raises(TableExists):
                await store.create(layout(200), 200)
            await store.create(layout(201), 201)
            pmap = await store.read_map()
            return [pmap.tables["orders"].spec.incarnation, pmap.version]

    assert asyncio.run(scenario()) == [201, 201]
