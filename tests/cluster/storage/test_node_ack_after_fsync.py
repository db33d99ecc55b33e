"""On real nodes: a follower whose fsync fails never acknowledges the entries it could not make
durable, whether its trip runs on the event loop (the replies written out by PeerLinks.uncork)
or on the I/O thread (handed to the loop), so a leader whose other follower is down
acknowledges no write (a mutant sending a trip's replies before its
fsync fails it, on the loop and on the thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from cluster.consensus.messages import AnyMessage, AppendResponse
from cluster.consensus.raft import Role
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.node import StopFailed

from .test_node_incarnation import GROUP, Cluster, in_cluster


def _command(key: str) -> bytes:
    return encode_command(PutCommand("orders", key.encode(), b"", {"v": {"S": key}}))


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_a_follower_whose_fsync_failed_acknowledges_nothing(tmp_path: Path, where: str) -> None:
    async def scenario(cluster: Cluster) -> None:
        await cluster.start_with_old_item()
        leader = next(
            n for n in cluster.nodes.values() if n.replicas[GROUP].raft.status().role is Role.LEADER
        )
        follower, other = (n for n in cluster.nodes.values() if n is not leader)
        await cluster.stop(other.config.node_id)  # the leader's quorum is the follower
        index = leader.replicas[GROUP].raft.status().last_index + 1

        journal = follower.journal
        assert journal is not None

        def failing_sync(wals: Any) -> None:
            raise OSError(5, "Input/output error (injected fsync failure)")

        journal.sync = failing_sync  # type: ignore[method-assign]
        acks: list[AppendResponse] = []
        send = follower.links.send

        def spy(msg: AnyMessage) -> None:
            if isinstance(msg, AppendResponse) and msg.success and msg.match_index >= index:
                acks.append(msg)
            send(msg)

        follower.links.send = spy  # type: ignore[method-assign]
        for replica in follower.replicas.values():
            replica.send = spy
        release = threading.Event()
        if where == "thread":  # the follower's trips queue for its busy I/O thread
            follower.ready_io.executor.submit(release.wait, 5)
            asyncio.get_running_loop().call_later(0.2, release.set)  # the trip then runs there
        try:
            result = await leader.replicas[GROUP].propose(_command("new"), 1.5)
            acknowledged = result.ok
        except Exception:  # OutcomeUnknown, NotLeader: not acknowledged
            acknowledged = False
        finally:
            release.set()
        await asyncio.sleep(0.1)
        assert not acks, f"the follower acknowledged entries its fsync did not cover: {acks}"
        assert not acknowledged, "a write was acknowledged with no durable quorum"
        # The follower failed (fail-stop: its journal refused); its stop says so.
        with contextlib.suppress(StopFailed):
            await cluster.stop(follower.config.node_id)

    in_cluster(tmp_path, scenario)
