"""The consensus side of log replicas (DESIGN.md "Log replicas"), scripted on the in-memory
network: a log replica joins with the snapshot's metadata only, counts towards the quorum, and a
replica the application marks as holding no state never campaigns, not even when asked to."""

from __future__ import annotations

from cluster.consensus.messages import InstallSnapshot, Membership, RequestVote, TimeoutNow
from cluster.consensus.raft import RaftConfig, Role
from tests.cluster.consensus.network import GROUP, Network

CONFIG = RaftConfig()
N3 = ["n1", "n2", "n3"]


def stable(ids: list[str]) -> Network:
    net = Network.bootstrap(ids)
    net.run_until(lambda: net.leader() == "n1")
    net.run_until(lambda: all(net.raft(n).log.commit >= 1 for n in ids))
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
