"""What a leader tells its log replicas about the full members (``AppendEntries.held``,
``Raft.full_voters_hold``): the highest index every full voter is known to hold. A log replica
compacts its own log only below it (cluster/storage/compaction.py): above it, the log may be
the only second copy of committed entries (a full member that lags, or is down).

The value comes from the acknowledgements the commit index counts. Anything less known is
reported lower, never higher: 0 from a new leader until the full voters acknowledge, 0 after a
change of leader until the next one says, 0 from a leader that does not send it at all.
"""

from __future__ import annotations

from cluster.consensus.messages import AppendEntries, Membership, RequestVote

from .network import GROUP, Network

N3 = ["n1", "n2", "n3"]


def _group() -> Network:
    """n1 leads; n3 is a log replica."""
    net = Network()
    members = Membership(frozenset(N3), log_only=frozenset({"n3"}))
    for node, offset in (("n1", 0), ("n2", 6), ("n3", 9)):
        net.add(node, membership=members, offset=offset)
    net.run_until(lambda: net.leader() == "n1")
    net.stabilize()
    return net


def _appends_to(net: Network, dst: str) -> list[AppendEntries]:
    return [m for m in net.sent if isinstance(m, AppendEntries) and m.dst == dst]


def test_the_leader_tells_log_replicas_only_the_least_a_full_voter_holds() -> None:
    net = _group()
    n1, n2, n3 = (net.raft(n) for n in N3)
    net.cut("n1", "n2")  # n2 lags from here
    lags = n2.log.last_index()
    for i in range(6):
        net.propose("n1", f"w{i}".encode())
    net.tick(times=2)
    assert n1.log.commit == n1.log.last_index() > lags  # committed by n1 and the log replica
    assert n1.full_voters_hold() == lags  # not the log replica's match: it is not a full voter
    assert _appends_to(net, "n3")[-1].held == lags
    assert n3.full_voters_hold() == lags
    assert {m.held for m in _appends_to(net, "n2")} == {0}  # full members are not told
    net.recover()  # n2 catches up; the log replica hears it at the next append (a heartbeat)
    net.run_until(lambda: n3.full_voters_hold() > lags, max_ticks=10)
    assert n3.full_voters_hold() == n1.log.last_index() == n2.log.last_index()


def test_after_a_change_of_leader_a_log_replica_knows_nothing_until_told_again() -> None:
    net = _group()
    n3 = net.raft("n3")
    net.propose("n1", b"w")
    net.tick(times=2)
    assert n3.full_voters_hold() == net.raft("n1").log.last_index() > 0
    # A vote for a newer term: a new leader may come whose full voters hold less (it has not
    # heard from them yet). Nothing is known until it says, even before its first append.
    last = n3.log
    net.inject(RequestVote(GROUP, "n2", "n3", n3.term + 1, last.last_index(), last.last_term(),
                           transfer=True))  # fmt: skip
    assert n3.full_voters_hold() == 0
    net.stabilize()
    net.crash("n1")
    net.run_until(lambda: net.leader() == "n2")
    n2 = net.raft("n2")
    # n2 heard from n1 only through n1's messages: its own match table starts empty, so it
    # says nothing more than what it and n1 (down) are known to hold: n1's match is 0.
    assert n2.full_voters_hold() == 0
    assert n3.full_voters_hold() == 0
    # A leader that never says (wire protocol 1, during a rolling upgrade) sends held = 0:
    # the log replica's word drops to 0 with it, even after a leader that said more.
    net.restart("n1")
    net.run_until(lambda: n3.full_voters_hold() > 0)
    hs = n3.log
    net.inject(
        AppendEntries(GROUP, "n1", "n3", n3.term + 1, hs.last_index(), hs.last_term(), (), 0)
    )
    assert n3.full_voters_hold() == 0
