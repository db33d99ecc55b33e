"""A log replica compacts its log only below what every full voter holds (compaction.py's
non-FULL branch, AppendEntries.held): above it, its log may be the only second copy of
committed entries, when a full member lags (the same hazard as raft.py _handle_snapshot's
stateless snapshot, safety review s10)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from cluster.consensus.messages import Membership
from cluster.storage.compaction import Compaction
from cluster.storage.recovery import ReplicaMode, ReplicaSettings
from tests.cluster.consensus.network import Network

EVERY = 20


def _compact_log_replica(net: Network, id: str) -> int:
    """Run storage compaction on ``id`` as a log replica; returns its snapshot index."""
    raft = net.raft(id)
    io = ThreadPoolExecutor(1)
    replica = SimpleNamespace(
        group="g", raft=raft, settings=ReplicaSettings(compact_every=EVERY),
        mode=ReplicaMode.LOG, io=io, release_wal=lambda meta: None,
    )  # fmt: skip
    try:
        asyncio.run(Compaction(replica).maybe_compact())  # type: ignore[arg-type]
    finally:
        io.shutdown()
    return raft.log.snapshot.meta.index


def test_a_log_replica_keeps_what_a_lagging_full_member_lacks() -> None:
    members = Membership(frozenset({"n1", "n2", "n3"}), log_only=frozenset({"n3"}))
    net = Network()
    for node, offset in (("n1", 0), ("n2", 6), ("n3", 9)):
        net.add(node, membership=members, offset=offset)
    net.run_until(lambda: net.leader() == "n1")
    net.stabilize()
    net.cut("n1", "n2")  # n1 and the log replica commit 3 * EVERY entries without n2
    for i in range(3 * EVERY):
        net.propose("n1", f"w{i}".encode())
    net.tick(times=3)  # heartbeats carry the commit index and what the full voters hold
    n2, n3 = net.raft("n2"), net.raft("n3")
    lags = n2.log.last_index()
    assert n3.log.applied >= lags + 2 * EVERY
    assert n3.full_voters_hold() == lags
    # Was: applied - EVERY / 2, far above lags: committed entries only on n1 then.
    assert _compact_log_replica(net, "n3") <= lags
    net.recover()
    net.run_until(lambda: n3.full_voters_hold() == net.raft("n1").log.last_index())
    assert _compact_log_replica(net, "n3") == n3.log.applied - EVERY // 2  # caught up: as before


def test_a_log_replica_compacts_nothing_while_its_leader_says_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leader of wire protocol 1 (a rolling upgrade) never sends ``held``; its log replica
    decodes 0 (test_wire_protocol.py) and keeps its whole log rather than guess (correctness
    over disk), although here every full member holds everything."""
    members = Membership(frozenset({"n1", "n2", "n3"}), log_only=frozenset({"n3"}))
    net = Network()
    for node, offset in (("n1", 0), ("n2", 6), ("n3", 9)):
        net.add(node, membership=members, offset=offset)
    net.run_until(lambda: net.leader() == "n1")
    monkeypatch.setattr(net.raft("n1"), "full_voters_hold", lambda: 0)  # what n3 decodes
    for i in range(3 * EVERY):
        net.propose("n1", f"w{i}".encode())
    net.tick(times=3)
    n3 = net.raft("n3")
    assert n3.log.applied >= 3 * EVERY and net.raft("n2").log.last_index() == n3.log.applied
    assert _compact_log_replica(net, "n3") == 0  # was: applied - EVERY / 2
