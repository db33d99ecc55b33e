"""A trip's replies written out by PeerLinks.uncork (ae5c115; session 14 review).

Before ae5c115 a send that raised after a trip's fsync was logged and no replica's trip failed
(``readyio._send_late``, test_readyio's ``test_a_send_that_raises_fails_no_trip``). ``uncork`` runs
outside that guard (``ReadyIO._send_late``'s ``finally``): if it raised (a connection's write, a
frame encoder), the loop's trip raises out of ``_run_batch`` after the fsync and before any apply,
and every replica of the batch is handed the error: each replica's loop ends (fail-stop of the
node) for a send, which Raft tolerates losing. Now the failure is logged (and ``uncork`` guards
each peer on its own).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster.storage.journal import NodeJournal
from cluster.storage.readyio import ReadyIO

from .test_readyio import (  # noqa: F401  (fixtures)
    FakeReplica,
    finish_trips,
    journal,
    open_wal,
    ready,
    reply,
    start_trips,
    where,
)


class RaisingLinks:
    """PeerLinks whose uncork raises (a connection's write that raised, say)."""

    def __init__(self) -> None:
        self.corked = False

    def cork(self) -> None:
        self.corked = True

    def uncork(self) -> None:
        self.corked = False
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")


def test_an_uncork_that_raises_fails_no_trip(
    tmp_path: Path,
    journal: NodeJournal,  # noqa: F811
    where: str,  # noqa: F811
) -> None:
    """As a send that raises: logged, every replica's trip completes (applied)."""
    log: list[str] = []
    io = ReadyIO(RaisingLinks())

    async def scenario() -> list[object]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        busy = start_trips(io, where)
        outcomes = await finish_trips(
            busy, *(io.handle(r, ready(1), [reply(r.group)]) for r in replicas)
        )
        await asyncio.sleep(0.01)
        for r in replicas:
            r.wal.close()
        return outcomes

    try:
        outcomes = asyncio.run(scenario())
    finally:
        io.close()
    assert outcomes == [{}, {}], f"a trip failed for a send: {outcomes!r}"
    assert "apply a" in log and "apply b" in log
