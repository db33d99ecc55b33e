"""A storage node in this process answers a burst of pipelined requests on one connection: every
request gets exactly its own reply (replies ready together leave in one write, node.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster.storage.client import NodeClient
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.node import NodeConfig, StorageNode


def test_a_burst_of_proposals_on_one_connection_gets_every_reply(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = NodeConfig(
            node_id="n1",
            listen="127.0.0.1:0",
            admin="127.0.0.1:0",
            data_dir=tmp_path / "n1",
            groups={"g": ("n1",)},
        )
        node = StorageNode(config)
        await node.start()
        try:
            assert node._server is not None
            port = node._server.sockets[0].getsockname()[1]
            async with NodeClient(f"127.0.0.1:{port}") as client:
                for _ in range(200):  # bounded: a group of one elects itself in a few ticks
                    status = await client.call("status", deadline=5.0)
                    if status["replicas"][0]["role"] == "leader":
                        break
                    await asyncio.sleep(0.05)

                async def put(i: int) -> dict[str, object]:
                    cmd = PutCommand("t", f"k{i}".encode(), b"", {"v": {"N": str(i)}})
                    return await client.call(
                        "propose", group="g", cmd=encode_command(cmd), timeout=20.0, deadline=30.0
                    )

                replies = await asyncio.gather(*(put(i) for i in range(30)))
                assert [r["result"]["ok"] for r in replies] == [True] * 30, replies[:2]
                for i in (0, 17, 29):
                    got = await client.call(
                        "get", group="g", tbl="t", pk=f"k{i}".encode(), sk=b"", consistent=True
                    )
                    assert got["item"]["v"] == {"N": str(i)}, got
        finally:
            await node.stop()

    asyncio.run(scenario())
