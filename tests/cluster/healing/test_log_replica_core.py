"""The consensus side of log replicas (DESIGN.md "Log replicas"), scripted on the in-memory
network: a log replica joins with the snapshot's metadata only, counts towards the quorum, and a
replica the application marks as holding no state never campaigns, not even when asked to."""

from __future__ import annotations

import pytest

from cluster.consensus.messages import (
    AppendEntries,
    InstallSnapshot,
    Membership,
    RequestVote,
    TimeoutNow,
)
from cluster.consensus.raft import ProposalRejectedError, RaftConfig, Role
from tests.cluster.consensus.network import GROUP, Network

CONFIG = RaftConfig()
N3 = ["n1", "n2", "n3"]


def stable(ids: list[str]) -> Network:
    net = Network.bootstrap(ids)
    net.run_until(lambda: net.leader() == "n1")
    net.run_until(lambda: all(net.raft(n).log.commit >= 1 for n in ids))
    return net


def with_log_replica_n3() -> Network:
    """Three voters led by n1, n3 a log replica that may not lead (as the storage replica sets
    it for a log replica), every entry everywhere."""
    net = Network.bootstrap(N3, log_only=["n3"])
    net.raft("n3").can_lead = False
    net.run_until(lambda: net.leader() == "n1")
    net.stabilize()
    return net


def test_log_replica_joins_with_snapshot_metadata_only_and_acks_the_log_tail() -> None:
    net = stable(N3)
    for i in range(30):
        net.propose("n1", f"v{i}".encode())
    net.stabilize()
    snap = net.compact("n1")
    assert snap.data  # the leader's snapshot holds state
    n1 = net.raft("n1")
    # n3 is lost: remove it, then add n4 as a log replica (single-member changes).
    net.crash("n3")
    n1.propose_membership(Membership(frozenset({"n1", "n2"})))
    net.stabilize()
    net.add("n4", offset=30)
    n1.propose_membership(Membership(frozenset({"n1", "n2", "n4"}), frozenset({"n4"})))
    net.stabilize()
    net.tick(times=CONFIG.heartbeat_ticks * 3)
    installs = [m for m in net.sent if isinstance(m, InstallSnapshot) and m.dst == "n4"]
    assert installs and all(m.snapshot.data == b"" for m in installs)
    assert all(m.snapshot.meta == snap.meta for m in installs)
    n4 = net.raft("n4")
    assert n4.log.first_index() == snap.meta.index + 1
    assert n4.log.last_index() == n1.log.last_index()
    assert n1.progress["n4"].match == n1.log.last_index()
    # It counts towards the quorum: with n2 gone, n1 and the log replica commit.
    net.crash("n2")
    index, _ = net.propose("n1", b"with the log replica")
    net.stabilize()
    net.tick("n1")  # the next tick tells n4 the commit index (Raft._maybe_commit)
    assert n1.log.commit >= index and n4.log.commit >= index


def test_replica_that_may_not_lead_never_campaigns_even_on_timeout_now() -> None:
    net = stable(N3)
    n2 = net.raft("n2")
    n2.can_lead = False
    net.inject(TimeoutNow(GROUP, "n1", "n2", net.raft("n1").term))
    net.crash("n1")
    net.tick(times=5 * CONFIG.election_ticks)
    assert not [m for m in net.sent if isinstance(m, RequestVote) and m.src == "n2"]
    assert net.leader() == "n3" and n2.role is Role.FOLLOWER


def test_log_replica_holding_entries_a_full_member_lacks_stands_in_then_hands_over() -> None:
    """An AZ split leaves a full member and a log replica on the majority side, and the last
    entry the cut-off leader sent reached only the log replica. The full member cannot win its
    vote (its log is behind) and the log replica may not lead: without a stand-in the group
    stays leaderless for as long as the split lasts (CI: 180 s of 'leader hint: None'). The log
    replica campaigns once it has refused a voter for that reason, and its leadership goes to
    the full member as soon as that one holds every entry (a transfer, as the storage replica's
    hand-over does for any leader without state)."""
    net = with_log_replica_n3()
    n2, n3 = net.raft("n2"), net.raft("n3")
    net.drop(lambda m: isinstance(m, AppendEntries) and m.dst == "n2" and bool(m.entries))
    index, _ = net.propose("n1", b"acknowledged by n1 and the log replica only")
    net.stabilize()
    assert n3.log.last_index() == index > n2.log.last_index()
    net.recover()
    net.isolate("n1")
    net.run_until(lambda: n3.role is Role.LEADER, max_ticks=5 * CONFIG.election_ticks)
    assert n2.log.last_index() >= index  # the stand-in's no-op brought n2 up to date
    with pytest.raises(ProposalRejectedError):  # it could not apply it: no result to give
        n3.propose(b"to the stand-in")
    # The storage replica hands a stateless leader's leadership to its best full member.
    n3.transfer_leadership("n2")
    net.run_until(lambda: n2.role is Role.LEADER, max_ticks=2 * CONFIG.election_ticks)
    assert n2.log.commit >= index  # the entry the old leader may have acknowledged survives
    net.propose("n2", b"the group takes writes again")
    net.stabilize()


def test_a_replica_that_may_not_lead_still_does_not_campaign_while_a_full_member_can_win() -> None:
    """The stand-in is for a deadlock only: with logs equal, the full member wins the vote and
    the log replica never campaigns."""
    net = with_log_replica_n3()
    net.isolate("n1")
    net.run_until(lambda: net.raft("n2").role is Role.LEADER, max_ticks=5 * CONFIG.election_ticks)
    assert not [m for m in net.sent if isinstance(m, RequestVote) and m.src == "n3"]


def test_a_stand_in_never_sends_its_stateless_snapshot_to_a_full_member() -> None:
    """A full member that lags behind the stand-in's compacted log can only be refilled from a
    full member: the stand-in's snapshot has no data, and a full replica that installed it would
    turn into a log replica (cluster/storage/replica.py) and the group would have no state."""
    net = with_log_replica_n3()
    n3 = net.raft("n3")
    net.isolate("n2")
    for i in range(30):
        net.propose("n1", f"v{i}".encode())
    net.stabilize()
    n3.compact(n3.log.applied, b"")  # as a log replica compacts: metadata only
    net.recover()
    net.isolate("n1")
    net.run_until(lambda: n3.role is Role.LEADER, max_ticks=5 * CONFIG.election_ticks)
    net.tick(times=3 * CONFIG.heartbeat_ticks)
    assert not [m for m in net.sent if isinstance(m, InstallSnapshot) and m.src == "n3"]
    assert net.raft("n2").log.snapshot.meta.index == 0
