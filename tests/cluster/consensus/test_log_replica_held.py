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


# From the session 11 safety review (review2, branch review2 tests/review_s11/test_review2_held.py):
# each catches a break the tests above miss.


def test_the_leader_counts_its_own_copy_only_once_it_is_on_its_disk() -> None:
    """B6. The leader's AppendEntries leave before its own fsync: n2 and n3 write and
    acknowledge, which commits the entries (2 of 3) while the leader's disk lacks them. held
    must not count the leader's unsynced copy: there the entries are on n2's disk (and n3's
    log) only, so the log replica must keep them."""
    net = _group()
    for i in range(5):
        net.propose("n1", f"w{i}".encode())
    net.tick(times=2)
    n1 = net.raft("n1")
    stable = n1.log.stable
    for i in range(4):
        net.propose("n1", f"x{i}".encode())
    rd = n1.ready()  # the leader's write is still in flight: no persist, no advance
    assert rd.entries and any(isinstance(m, AppendEntries) for m in rd.messages)
    net.inflight += [m for m in rd.messages if isinstance(m, AppendEntries)]
    net.deliver(lambda m: m.dst in ("n2", "n3"))
    for node in ("n2", "n3"):
        raft = net.raft(node)
        while raft.has_ready():
            net.handle_ready(node, raft.ready())
    net.deliver(lambda m: m.dst == "n1")
    assert n1.log.stable == stable < n1.log.last_index()
    assert n1.log.commit == n1.log.last_index()  # committed by n2 and n3 alone
    assert n1.full_voters_hold() <= n1.log.stable


def test_adding_a_full_voter_drops_held_until_it_acknowledges() -> None:
    """B3. A new full voter (n4, cut off) holds nothing: the leader's held is 0 from the moment
    the change is in its log, and the log replica follows it down (latest word, not highest)."""
    net = _group()
    for i in range(5):
        net.propose("n1", f"w{i}".encode())
    net.tick(times=2)
    n1, n3 = net.raft("n1"), net.raft("n3")
    before = n3.full_voters_hold()
    assert before > 0
    new = Membership(frozenset([*N3, "n4"]), log_only=frozenset({"n3"}))
    net.add("n4", membership=new, offset=12)
    net.cut("n1", "n4")
    net.cut("n2", "n4")
    net.cut("n3", "n4")
    n1.propose_membership(new)
    assert n1.full_voters_hold() == 0
    net.tick(times=3)
    assert n3.membership == new
    assert n3.full_voters_hold() == 0
    net.recover()
    net.run_until(lambda: n3.full_voters_hold() >= before, max_ticks=20)
