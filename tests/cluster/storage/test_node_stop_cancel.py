"""The node's reconcile loop takes a stop's cancel (session 14 review of 0284640, which fixed the
same Python 3.11 ``wait_for`` trap in the peer links; it was left in the reconcile loop: node.py
``_reconcile_loop``'s ``wait_for(self._reconcile_now.wait(), reconcile_seconds)``).

In 3.11 a ``wait_for`` cancelled in the loop pass where its awaitable completed returns the
result and drops the cancel. ``_reconcile_now`` is set by ``_retire`` (a peer's message of a newer
incarnation); if that lands in the pass where ``StorageNode.stop`` cancels the loop's task, the
loop goes on for ever and ``stop`` (``task.cancel(); await task``) never returns (in-process
tests hang; ``python -m cluster.storage`` bounds its stop by STOP_SECONDS).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster.consensus.raft import RaftConfig
from cluster.storage.node import NodeConfig, StorageNode

from .test_node_incarnation import free_ports


def test_the_reconcile_loop_ends_on_a_cancel_that_meets_a_reconcile_now(tmp_path: Path) -> None:
    async def main() -> bool:
        listen, dead = free_ports(2)
        node = StorageNode(
            NodeConfig(
                node_id="sn-a1",
                listen=f"127.0.0.1:{listen}",
                admin="127.0.0.1:0",
                data_dir=tmp_path / "sn-a1",
                peers={},
                tick_seconds=0.01,
                raft=RaftConfig(),
                memds_urls=(f"http://127.0.0.1:{dead}",),  # nobody there: the loop waits
                reconcile_seconds=30.0,
            )
        )
        await node.start()
        task = next(t for t in node._tasks if t.get_name() == "reconcile")
        await asyncio.sleep(0.3)  # its first round failed; it waits in wait_for
        node._reconcile_now.set()  # a retirement (``_retire``) ...
        task.cancel()  # ... in the loop pass of the stop's cancel
        done, _ = await asyncio.wait({task}, timeout=2.0)
        ended = bool(done)
        while not task.done():  # (cleanup: cancel again until it takes one)
            task.cancel()
            await asyncio.sleep(0.05)
        await node.stop()
        return ended

    assert asyncio.run(main()), "the reconcile loop took no cancel: StorageNode.stop hangs"
