"""Scripted interaction tests for the Raft core: one tricky protocol path per test.

Each test drives replicas through ``network.Network`` by hand (who ticks, which messages arrive,
which are lost) and names the part of the Raft paper ("In Search of an Understandable Consensus
Algorithm", Ongaro & Ousterhout 2014) or of Ongaro's thesis ("Consensus: Bridging Theory and
Practice", 2014) that it checks. The randomized simulator looks for unknown failures; these pin
down known ones.
"""

from __future__ import annotations

import pytest

from cluster.consensus.messages import (
    AnyMessage,
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Membership,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)
from cluster.consensus.raft import (
    CATCH_UP_PATIENCE,
    ProposalRejectedError,
    Raft,
    RaftConfig,
    Role,
)

from .network import GROUP, Disk, Network

CONFIG = RaftConfig()
ELECTION = CONFIG.election_ticks
HEARTBEAT = CONFIG.heartbeat_ticks
LEASE = CONFIG.lease_ticks
N3 = ["n1", "n2", "n3"]


def stable_cluster(ids: list[str] = N3) -> Network:
    """n1 leads term 1; its no-op is committed everywhere and it holds a lease."""
    net = Network.bootstrap(ids)
    net.run_until(lambda: net.leader() == "n1")
    net.run_until(
        lambda: (
            net.raft("n1").lease_read_index() is not None
            and all(net.raft(n).log.commit == 1 for n in ids)
        )
    )
    return net


def votes_from(msgs: list[AnyMessage], src: str) -> list[VoteResponse]:
    return [m for m in msgs if isinstance(m, VoteResponse) and m.src == src]


def vote_request(src: str, dst: str, term: int, raft: Raft, pre: bool) -> RequestVote:
    """A vote request from ``src`` with a log exactly as up to date as ``raft``'s."""
    return RequestVote(GROUP, src, dst, term, raft.log.last_index(), raft.log.last_term(), pre=pre)


def propose_all(net: Network, leader: str, values: list[bytes]) -> None:
    for value in values:
        net.propose(leader, value)
    net.stabilize()


# --- 1. election (paper §5.2, thesis §3.4) --------------------------------------------------


def test_single_leader_is_elected_and_terms_increase() -> None:
    """Paper §5.2 / thesis §3.4: after an election timeout one candidate wins a majority; a new
    election after the leader fails happens in a higher term, and the old leader rejoins as a
    follower."""
    net = Network.bootstrap(N3)
    assert net.run_until(lambda: net.leader() is not None) == ELECTION  # n1 times out first
    assert net.leaders() == ["n1"]
    assert [net.raft(n).term for n in N3] == [1, 1, 1]
    net.tick(times=HEARTBEAT)
    assert [net.raft(n).leader for n in N3] == ["n1", "n1", "n1"]

    net.crash("n1")
    net.run_until(lambda: net.leader() is not None)
    assert net.leaders() == ["n2"]
    assert [net.raft(n).term for n in ("n2", "n3")] == [2, 2]

    net.restart("n1")
    net.tick(times=HEARTBEAT)
    assert net.leaders() == ["n2"]
    assert (net.raft("n1").role, net.raft("n1").term, net.raft("n1").leader) == (
        Role.FOLLOWER,
        2,
        "n2",
    )


def test_vote_is_persisted_in_the_same_ready_as_the_vote_response() -> None:
    """Thesis Figure 3.1 / §3.8: currentTerm and votedFor are on stable storage before a server
    answers a RequestVote, so a crash cannot make it vote twice in one term. Pre-votes (§9.6)
    change no durable state."""
    net = Network.bootstrap(N3)
    net.run_until(lambda: net.leader() == "n1")

    for voter in ("n2", "n3"):
        readies = net.nodes[voter].readies
        granted = [
            rd
            for rd in readies
            if any(m.granted and not m.pre for m in votes_from(rd.messages, voter))
        ]
        assert len(granted) == 1
        assert granted[0].hard_state == HardState(term=1, vote="n1", commit=0)
        pre = [rd for rd in readies if any(m.pre for m in votes_from(rd.messages, voter))]
        assert pre and all(rd.hard_state is None for rd in pre)

    # The candidate persists its own vote in the Ready that asks for votes.
    (asking,) = [
        rd
        for rd in net.nodes["n1"].readies
        if any(isinstance(m, RequestVote) and not m.pre for m in rd.messages)
    ]
    assert asking.hard_state == HardState(term=1, vote="n1", commit=0)

    # A voter that crashes and restarts remembers its vote: no second vote in term 1.
    net.crash("n2")
    n2 = net.restart("n2")
    net.inject(vote_request("n3", "n2", 1, n2, pre=False))
    net.process()
    (answer,) = votes_from(net.inflight, "n2")
    assert not answer.granted and n2.vote == "n1"


# --- 2. pre-vote (thesis §9.6) ----------------------------------------------------------------


def test_prevote_keeps_an_isolated_follower_from_disrupting_the_leader() -> None:
    """Thesis §9.6: a partitioned server keeps timing out but, without a pre-vote majority, never
    raises its term; when it comes back the leader keeps its term and leadership."""
    net = stable_cluster()
    net.isolate("n3")
    propose_all(net, "n1", [b"a", b"b"])
    sent_before = len(net.sent)
    net.tick(times=10 * ELECTION)
    campaigns = [m for m in net.sent[sent_before:] if isinstance(m, RequestVote)]
    assert campaigns and all(m.pre and m.src == "n3" and m.term == 2 for m in campaigns)
    assert net.raft("n3").term == 1

    net.recover()
    net.tick(times=2 * ELECTION)
    assert net.leaders() == ["n1"]
    assert [net.raft(n).term for n in N3] == [1, 1, 1]
    assert net.raft("n3").leader == "n1"
    assert net.nodes["n3"].applied == [b"a", b"b"]


# --- 3. leader stickiness and the lease (thesis §4.2.3, §6.4.1) ------------------------------


def test_voters_ignore_a_higher_term_vote_request_while_the_leader_is_live() -> None:
    """Thesis §4.2.3 (disruptive servers): a server that heard from a leader within the minimum
    election timeout ignores RequestVote, even at a higher term, and keeps its term."""
    net = stable_cluster()
    n3 = net.raft("n3")
    for voter in ("n1", "n2"):
        net.inject(vote_request("n3", voter, 5, n3, pre=False))
        net.inject(vote_request("n3", voter, 6, n3, pre=True))
    net.process()
    assert not [m for m in net.inflight if isinstance(m, VoteResponse)]
    assert [net.raft(n).term for n in ("n1", "n2")] == [1, 1]
    assert net.leaders() == ["n1"] and net.raft("n2").vote == "n1"


def test_lease_read_index_needs_a_current_term_commit_and_a_live_quorum() -> None:
    """Thesis §6.4.1: a leader may serve reads from its lease only after committing an entry of its
    term (§6.4 step 1: its commit index is then current) and only while a quorum acknowledged a
    heartbeat within lease_ticks; partitioned away it loses the lease in lease_ticks ticks."""
    net = Network.bootstrap(N3)
    # The new leader announces itself (and its no-op) at once; hold the answers back.
    net.drop(lambda m: isinstance(m, AppendResponse))
    net.run_until(lambda: net.leader() == "n1")
    n1 = net.raft("n1")
    assert n1.log.last_index() == 1 and n1.log.commit == 0  # the no-op is not committed yet
    assert n1.lease_read_index() is None

    net.recover()
    net.tick(times=HEARTBEAT)
    assert n1.log.commit == 1
    assert n1.lease_read_index() == 1

    net.tick(times=HEARTBEAT)  # acknowledged heartbeats keep the lease alive
    net.isolate("n1")
    ticks = net.run_until(lambda: n1.lease_read_index() is None, max_ticks=LEASE)
    assert 0 < ticks <= LEASE
    assert n1.role is Role.LEADER  # still leader (check-quorum is slower): only the lease is gone


def test_restarted_replica_refuses_votes_for_its_first_election_ticks() -> None:
    """Thesis §6.4.1: a replica that acknowledged the leader's heartbeat just before crashing has
    forgotten it did; it must not help elect anyone for election_ticks after restarting, or the
    old leader's lease could overlap a new leader."""
    net = stable_cluster()
    net.crash("n2")
    n2 = net.restart("n2")
    net.isolate("n2")  # it hears from no leader, so only time can release it
    n3 = net.raft("n3")
    for elapsed in range(ELECTION + 1):
        net.inject(vote_request("n3", "n2", 2, n3, pre=True))
        net.process()
        answers = votes_from(net.inflight, "n2")
        net.inflight.clear()
        if elapsed < ELECTION:
            assert answers == [], f"voted {elapsed} ticks after restart"
        else:
            assert [(a.granted, a.pre) for a in answers] == [(True, True)]
        net.tick("n2")
    assert n2.term == 1  # pre-votes never moved its term


# --- 4. committing entries from previous terms (paper §5.4.2, Figure 8) ---------------------

S = ["s1", "s2", "s3", "s4", "s5"]


def figure8() -> Network:
    """Figure 8 (c): s1, leader of term 4, has put its term-2 entry at index 2 on s1, s2, s3 (a
    majority) but its term-4 no-op at index 3 only on itself. s5, leader of term 3, holds a
    different entry (term 3) at index 2. Returns with s1's AppendEntries carrying index 3 to
    s2 and s3 still in flight."""
    net = Network(RaftConfig(max_entries_per_message=1))
    members = Membership(frozenset(S))

    def start(node: str, offset: int, vote: str | None, *terms: int) -> None:
        """Start ``node`` at term 3 with one entry per term in ``terms``; index 1 committed."""
        log = [Entry(i, t, data=f"{i}@{t}".encode()) for i, t in enumerate(terms, start=1)]
        net.add(
            node, membership=members, offset=offset, hard_state=HardState(3, vote, 1), entries=log
        )

    start("s1", 0, None, 1, 2)  # s1 led term 2 and crashed with index 2 on itself only
    for peer in ("s2", "s3", "s4"):
        start(peer, 5, "s5", 1)
    start("s5", 1, "s5", 1, 3)  # s5 led term 3 and crashed with its index 2 on itself only

    # s1 times out first; s2, s3, s4 vote for it (its last entry, term 2, beats their term 1).
    # Its announcement (AppendEntries right after winning) is lost; the heartbeat repeats it.
    net.drop(lambda m: isinstance(m, AppendEntries) and m.src == "s1")
    net.run_until(lambda: net.leader() == "s1")
    net.recover()
    s1 = net.raft("s1")
    assert s1.term == 4 and net.log_terms("s1") == [(1, 1), (2, 2), (3, 4)]
    net.isolate("s4")
    net.isolate("s5")

    s1.tick()
    s1.tick()  # heartbeat: AppendEntries(prev=2, [3@4]) to everyone
    net.process()
    probes = net.deliver()  # s2, s3 lack index 2: rejected
    assert {(m.dst, m.prev_index) for m in probes if isinstance(m, AppendEntries)} == {
        ("s2", 2),
        ("s3", 2),
    }
    net.process()
    net.deliver()  # the rejections: s1 backs up and sends [2@2]
    net.process()
    repairs = net.deliver()
    assert {(m.dst, m.entries) for m in repairs if isinstance(m, AppendEntries)} == {
        ("s2", (Entry(2, 2, data=b"2@2"),)),
        ("s3", (Entry(2, 2, data=b"2@2"),)),
    }
    net.process()
    net.deliver()  # s2, s3 acknowledge index 2
    net.process()  # s1 sends [3@4] to s2 and s3: held in flight
    held = [(m.dst, m.entries) for m in net.inflight if isinstance(m, AppendEntries)]
    assert sorted(held) == [
        ("s2", (Entry(3, 4, EntryKind.NOOP),)),
        ("s3", (Entry(3, 4, EntryKind.NOOP),)),
    ]
    return net


def test_figure8_old_term_entry_on_a_majority_is_not_committed_by_counting() -> None:
    """Paper §5.4.2 (thesis §3.6.2): a leader never commits an entry of an earlier term by counting
    replicas. In Figure 8 (c) index 2 (term 2) is on a majority, yet if s1 crashes s5 can still be
    elected (d) and overwrite it, so s1 must not have reported it committed."""
    net = figure8()
    s1 = net.raft("s1")
    assert {n: s1.progress[n].match for n in ("s1", "s2", "s3")} == {"s1": 3, "s2": 2, "s3": 2}
    assert s1.log.commit == 1
    # Heartbeats (even rejected ones) were acknowledged by a quorum, yet there is no lease
    # read: the leader does not know its commit index is current until index 3 commits.
    assert s1.lease_until > s1.now
    assert s1.lease_read_index() is None

    # Figure 8 (d): s1 crashes; s5 (last entry term 3) wins votes from s2, s3, s4.
    net.crash("s1")
    net.recover()
    net.run_until(lambda: net.leader() is not None)
    assert net.leader() == "s5" and net.raft("s5").term == 5
    net.tick(times=2 * HEARTBEAT)
    for node in ("s2", "s3", "s4", "s5"):
        assert net.log_terms(node) == [(1, 1), (2, 3), (3, 5)]
    net.restart("s1")
    net.run_until(lambda: net.log_terms("s1") == net.log_terms("s5"))
    # Nobody ever applied the overwritten entry.
    for node in S:
        assert b"2@2" not in net.nodes[node].applied
        assert b"2@3" in net.nodes[node].applied


def test_figure8_old_term_entry_commits_with_the_first_current_term_entry() -> None:
    """Paper §5.4.2, Figure 8 (e): once an entry of the leader's own term is on a majority, it and
    every entry before it are committed (Log Matching), and s5 can no longer win an election."""
    net = figure8()
    s1 = net.raft("s1")
    net.stabilize()  # [3@4] reaches s2 and s3
    assert s1.log.commit == 3
    assert s1.lease_read_index() == 3
    assert net.nodes["s1"].applied == [b"1@1", b"2@2"]  # the no-op carries no data

    net.crash("s1")
    net.recover()
    sent_before = len(net.sent)
    net.run_until(lambda: net.leader() is not None)
    assert net.leader() in ("s2", "s3")
    # s5 timed out first, but s2 and s3 (last entry term 4) refused it.
    refused = [m for m in votes_from(net.sent[sent_before:], "s2") if m.dst == "s5"]
    assert refused and not any(m.granted for m in refused)
    net.tick(times=2 * HEARTBEAT)
    for node in ("s2", "s3", "s4", "s5"):
        assert net.log_terms(node)[:3] == [(1, 1), (2, 2), (3, 4)]
        assert b"2@2" in net.nodes[node].applied


# --- 5. repairing a divergent log (paper §5.3, thesis §3.5) ---------------------------------


def test_follower_with_a_long_conflicting_suffix_is_repaired_in_one_round_trip() -> None:
    """Paper §5.3 / thesis §3.5: the leader finds the last index where a follower's log
    matches and overwrites the rest. With the conflict hint (the first index of the follower's
    conflicting term: the optimization at the end of paper §5.3) a 28-entry stale suffix costs
    one rejection, not 28. Committed entries are never touched."""
    net = Network()
    members = Membership(frozenset(N3))
    common = [Entry(1, 1, data=b"a"), Entry(2, 1, data=b"b"), Entry(3, 1, data=b"c")]
    ours = [*common, Entry(4, 3, data=b"d"), Entry(5, 3, data=b"e")]
    # n3 led term 2 while cut off and appended 28 entries nobody else has; n2 missed index 3.
    stale = common + [Entry(i, 2, data=b"stale") for i in range(4, 32)]
    for node, offset, hard_state, entries in (
        ("n1", 0, HardState(3, "n1", 2), ours),
        ("n2", 3, HardState(3, "n1", 2), common[:2]),
        ("n3", 6, HardState(2, "n3", 2), stale),
    ):
        net.add(node, membership=members, offset=offset, hard_state=hard_state, entries=entries)

    net.run_until(lambda: net.leader() == "n1")  # (5, term 3) beats (31, term 2): n3 votes too
    assert net.raft("n1").term == 4
    net.tick(times=HEARTBEAT)

    rejections = [m for m in net.sent if isinstance(m, AppendResponse) and not m.success]
    # The leader probes at index 5. n2's log is shorter: its hint is its last index, 2. n3's
    # entry 5 has term 2: its hint skips the whole term-2 run and points just before it, at 3.
    assert sorted((m.src, m.match_index) for m in rejections) == [("n2", 2), ("n3", 3)]
    overwrite = [rd for rd in net.nodes["n3"].readies if rd.entries]
    assert [rd.entries[0].index for rd in overwrite] == [4]  # one write, after the match
    leader_log = net.log_terms("n1")
    assert leader_log == [(1, 1), (2, 1), (3, 1), (4, 3), (5, 3), (6, 4)]
    for node in ("n2", "n3"):
        assert net.log_terms(node) == leader_log
        assert [(e.index, e.term) for e in net.nodes[node].disk.entries] == leader_log
    assert net.raft("n3").log.entries[:3] == common
    for node in N3:
        assert net.nodes[node].applied == [b"a", b"b", b"c", b"d", b"e"]
    # Replayed now, the first probe falls inside n3's committed prefix: nothing changes.
    probe = next(m for m in net.sent if isinstance(m, AppendEntries) and m.dst == "n3")
    readies = len(net.nodes["n3"].readies)
    net.inject(probe)
    net.process()
    assert net.log_terms("n3") == leader_log
    assert all(not rd.entries for rd in net.nodes["n3"].readies[readies:])


# --- 6. check-quorum (thesis §6.2) -----------------------------------------------------------


@pytest.mark.parametrize("phase", range(ELECTION))
def test_leader_cut_off_from_everybody_steps_down_within_election_ticks(phase: int) -> None:
    """Thesis §6.2: a leader steps down if an election timeout passes without hearing from a
    majority, so clients stop waiting on it. ``phase`` cuts it off at every point of its
    heartbeat/check cycle."""
    net = stable_cluster()
    net.tick(times=phase)
    net.isolate("n1")
    n1 = net.raft("n1")
    ticks = net.run_until(lambda: n1.role is not Role.LEADER, max_ticks=ELECTION)
    assert ticks <= ELECTION
    assert n1.term == 1  # stepping down is not an election
    assert n1.lease_read_index() is None


def test_leader_that_hears_from_a_quorum_keeps_leading() -> None:
    """Thesis §6.2, the other side: losing one follower of three is no reason to step down."""
    net = stable_cluster()
    net.isolate("n3")
    net.tick(times=5 * ELECTION)
    assert net.leaders() == ["n1"] and net.raft("n1").term == 1


def stall(net: Network, ticks: int) -> list[AnyMessage]:
    """Every node's event loop stalls for ``ticks`` ticks (the machine starved for CPU): the
    messages sent meanwhile wait unread, then every node gets its ticks as one catch-up batch
    (cluster/storage/node.py) before it steps them. Returns what the nodes sent."""
    waiting: list[AnyMessage] = []
    for _ in range(ticks):
        net.process()
        waiting += net.inflight
        net.inflight = []
        for id in net.up():
            net.raft(id).tick(catch_up=True)
    net.process()
    net.inflight = waiting + net.inflight
    sent = list(net.inflight)
    net.stabilize()
    return sent


def test_a_stall_of_an_election_timeout_deposes_nobody_and_starts_no_election() -> None:
    """Raft.tick(catch_up=True): a leader whose loop stalled past election_ticks counts the
    time (its lease lapses) but keeps leading: the acknowledgements that waited through the
    stall are stepped after the catch-up ticks, and the next on-time tick finds its quorum.
    Its followers, whose stickiness ran out in the same stall, start no election either."""
    net = stable_cluster()
    sent = stall(net, 2 * ELECTION)
    assert not [m for m in sent if isinstance(m, RequestVote)]
    net.tick(times=2 * ELECTION)
    assert net.leaders() == ["n1"] and {net.raft(n).term for n in N3} == {1}
    assert net.raft("n1").lease_read_index() is not None


def test_a_leader_cut_off_during_a_stall_still_steps_down() -> None:
    """The other side: a catch-up tick steps a leader down once the silence lasts
    CATCH_UP_PATIENCE election timeouts, and the first on-time tick at once after that."""
    net = stable_cluster()
    net.isolate("n1")
    n1 = net.raft("n1")
    stall(net, CATCH_UP_PATIENCE * ELECTION)
    assert n1.role is not Role.LEADER and n1.term == 1
    net = stable_cluster()
    net.isolate("n1")
    n1 = net.raft("n1")
    stall(net, 2 * ELECTION)
    assert n1.role is Role.LEADER and n1.lease_read_index() is None
    net.tick("n1")
    assert n1.role is not Role.LEADER and n1.term == 1


# --- 7. snapshots (thesis chapter 5, paper §7) -----------------------------------------------


def test_follower_behind_the_snapshot_installs_it_then_receives_later_entries() -> None:
    """Paper §7 / thesis chapter 5: a follower that needs entries the leader already compacted
    receives InstallSnapshot; it installs it (Ready.snapshot, before any entries) and the leader
    then sends it the entries after the snapshot. A duplicated, delayed InstallSnapshot is
    ignored."""
    net = stable_cluster()
    net.crash("n3")
    values = [f"v{i}".encode() for i in range(20)]
    propose_all(net, "n1", values)
    snap = net.compact("n1")
    n1 = net.raft("n1")
    assert snap.meta.index == n1.log.applied == 21 and n1.log.first_index() == 22

    n3 = net.restart("n3")
    propose_all(net, "n1", [b"after"])
    net.run_until(lambda: net.nodes["n3"].applied == [*values, b"after"])
    installs = [m for m in net.sent if isinstance(m, InstallSnapshot)]
    # A rejection that was already in flight makes n1 send the snapshot a second time; the
    # copy arrives after n3 installed the first and is ignored.
    assert installs and all(m.dst == "n3" and m.snapshot is snap for m in installs)
    (installed,) = [rd for rd in net.nodes["n3"].readies if rd.snapshot is not None]
    assert installed.snapshot is snap and installed.committed == []
    assert net.nodes["n3"].disk.snapshot is snap
    assert n3.log.first_index() == 22 and n3.log.last_index() == n1.log.last_index()
    assert n3.membership == n1.membership

    # The same InstallSnapshot again, long after: nothing is reinstalled or truncated.
    net.propose("n1", b"later")
    net.stabilize()
    before = (net.log_terms("n3"), n3.log.commit, list(net.nodes["n3"].applied))
    readies = len(net.nodes["n3"].readies)
    net.inject(installs[0])
    net.stabilize()
    assert (net.log_terms("n3"), n3.log.commit, net.nodes["n3"].applied) == before
    assert all(rd.snapshot is None for rd in net.nodes["n3"].readies[readies:])
    assert n1.progress["n3"].match == n1.log.last_index()

    # The snapshot on n3's disk is enough to restart from.
    net.crash("n3")
    net.restart("n3")
    net.tick(times=HEARTBEAT)
    assert net.nodes["n3"].applied == [*values, b"after", b"later"]

    # From a deposed leader (an older term) it is refused outright.
    n1.transfer_leadership("n2")
    net.stabilize()
    net.tick(times=HEARTBEAT)  # n2's first heartbeat
    n3 = net.raft("n3")
    assert n3.term == 2
    net.inject(installs[0])
    net.process()
    (refusal,) = [m for m in net.inflight if m.src == "n3"]
    assert isinstance(refusal, AppendResponse) and (refusal.term, refusal.success) == (2, False)
    assert n3.log.snapshot is snap and n3.leader == "n2"


def test_snapshot_replaces_a_log_that_does_not_contain_its_last_entry() -> None:
    """Paper §7 / thesis §5.1: a follower given a snapshot whose last entry is not in its log
    discards its entire log, including a stale suffix that reaches past the snapshot. Were it kept
    on disk, a restart would claim a last entry of term 2 and could vote for a candidate missing the
    committed entries the snapshot holds."""
    net = Network()
    members = Membership(frozenset(N3))
    ours = [Entry(1, 1, data=b"a")] + [Entry(i, 3, data=f"x{i}".encode()) for i in range(2, 31)]
    stale = [Entry(1, 1, data=b"a")] + [Entry(i, 2, data=b"stale") for i in range(2, 41)]
    for node, offset, hard_state, entries in (
        ("n1", 0, HardState(3, "n1", 30), ours),
        ("n2", 3, HardState(3, "n1", 30), ours),
        ("n3", 6, HardState(2, "n3", 1), stale),
    ):
        net.add(node, membership=members, offset=offset, hard_state=hard_state, entries=entries)
    # n1's announcement is lost, so its no-op stays uncommitted until the heartbeat below.
    net.drop(lambda m: isinstance(m, AppendEntries) and m.src == "n1")
    net.run_until(lambda: net.leader() == "n1")
    net.recover()
    snap = net.compact("n1")
    assert (snap.meta.index, snap.meta.term) == (30, 3)

    net.raft("n1").tick()
    net.raft("n1").tick()  # heartbeat
    net.process()
    net.deliver()  # probe at index 30: n3 rejects with hint 1
    net.process()
    net.deliver()  # n1 backs up to index 2, below its snapshot: InstallSnapshot
    net.process()
    net.deliver()  # n3 installs it
    net.process()  # n3 persists the snapshot and acknowledges it
    n3 = net.raft("n3")
    assert n3.log.snapshot is snap and n3.log.last_index() == 30 and n3.log.entries == []
    assert net.nodes["n3"].disk.entries == []

    net.crash("n3")  # before any entry after the snapshot arrived
    n3 = net.restart("n3")
    assert (n3.log.last_index(), n3.log.last_term()) == (30, 3)
    assert net.nodes["n3"].applied == [b"a", *(f"x{i}".encode() for i in range(2, 31))]
    net.tick(times=HEARTBEAT)
    assert net.log_terms("n3") == net.log_terms("n1") == [(31, 4)]


# --- 8. membership changes (thesis §4.1, §4.2.2) ---------------------------------------------


def test_adding_a_fourth_member_catches_it_up_and_makes_the_quorum_three() -> None:
    """Thesis §4.1: a new server starts with an empty log and no configuration; the leader appends
    the new configuration, which takes effect at once, and catches the server up. With four voters a
    write needs three. Only one change may be in flight: the next one waits until the previous one
    has committed."""
    net = stable_cluster()
    propose_all(net, "n1", [b"a", b"b"])
    net.add("n4", offset=0)  # shortest timeout of all, but not a member: never campaigns
    n1, n4 = net.raft("n1"), net.raft("n4")
    net.tick("n4", times=3 * ELECTION)
    assert n4.role is Role.FOLLOWER and n4.term == 0
    assert not [m for m in net.sent if m.src == "n4"]

    four = Membership(frozenset({*N3, "n4"}))
    index, _ = n1.propose_membership(four)
    assert n1.membership == four
    with pytest.raises(ProposalRejectedError, match="in flight"):
        n1.propose_membership(Membership(frozenset({"n1", "n2", "n4"})))
    net.run_until(lambda: n4.log.last_index() == n1.log.last_index() and n1.log.commit >= index)
    assert n4.membership == four and net.nodes["n4"].applied == [b"a", b"b"]
    assert n1.membership.quorum() == 3

    # n1 + n2 is no longer a quorum ...
    net.cut("n1", "n3")
    net.cut("n1", "n4")
    index, _ = net.propose("n1", b"c")
    net.tick(times=2 * HEARTBEAT)
    assert n1.log.commit < index
    # ... n1 + n2 + n4 is.
    net.recover()
    net.cut("n1", "n3")
    net.tick(times=HEARTBEAT)
    assert n1.log.commit >= index
    net.recover()
    net.tick(times=HEARTBEAT)
    assert all(net.nodes[n].applied == [b"a", b"b", b"c"] for n in [*N3, "n4"])


def test_removed_leader_leads_until_the_change_commits_then_steps_down() -> None:
    """Thesis §4.2.2: a leader removed from the configuration manages the cluster (without counting
    itself) until the change commits, then steps down; the rest elect a new leader and the
    removed server never campaigns again."""
    net = stable_cluster()
    n1 = net.raft("n1")
    two = Membership(frozenset({"n2", "n3"}))
    net.cut("n1", "n3")
    index, _ = n1.propose_membership(two)
    net.tick(times=2 * HEARTBEAT)
    assert n1.role is Role.LEADER and n1.log.commit < index  # n1 itself does not count

    net.recover()
    ticks = net.run_until(lambda: n1.role is not Role.LEADER, max_ticks=HEARTBEAT)
    assert n1.log.commit >= index and ticks <= HEARTBEAT
    sent_before = len(net.sent)
    net.run_until(lambda: net.leader() in ("n2", "n3"))
    assert net.raft(net.leader() or "").term == 2
    net.tick(times=5 * ELECTION)
    assert not [m for m in net.sent[sent_before:] if m.src == "n1"]
    assert n1.term == 1 and net.raft("n1").role is Role.FOLLOWER

    new = net.leader() or ""
    index, _ = net.propose(new, b"after")
    net.tick(times=HEARTBEAT)
    assert all(net.raft(n).log.commit >= index for n in ("n2", "n3"))


def test_log_only_member_votes_but_never_campaigns() -> None:
    """DESIGN.md "Log replicas": a log-only member counts towards quorums and votes, but never
    seeks leadership on its own, even when its election timeout is the shortest."""
    net = Network()
    members = Membership(frozenset(N3), log_only=frozenset({"n3"}))
    for node, offset in (("n1", 3), ("n2", 6), ("n3", 0)):
        net.add(node, membership=members, offset=offset)
    net.run_until(lambda: net.leader() == "n1")
    net.crash("n1")
    net.run_until(lambda: net.leader() == "n2")
    net.crash("n2")
    net.tick(times=5 * ELECTION)
    assert not [m for m in net.sent if isinstance(m, RequestVote) and m.src == "n3"]
    assert net.raft("n3").role is Role.FOLLOWER and net.raft("n3").term == 2
    assert any(m.granted and not m.pre for m in votes_from(net.sent, "n3"))


# --- 9. leadership transfer (thesis §3.10) ----------------------------------------------------


def test_transfer_leadership_to_an_up_to_date_follower() -> None:
    """Thesis §3.10: the leader stops accepting proposals, sends TimeoutNow to the caught-up target,
    which starts an election at once (past the voters' stickiness) and wins the next term.
    The old leader's lease is void from the moment it starts the transfer."""
    net = stable_cluster()
    propose_all(net, "n1", [b"a"])
    n1, n2 = net.raft("n1"), net.raft("n2")
    assert n1.lease_read_index() is not None
    n1.transfer_leadership("n2")
    assert n1.lease_read_index() is None
    with pytest.raises(ProposalRejectedError):
        net.propose("n1", b"refused")
    net.stabilize()  # no ticks needed
    assert [m.dst for m in net.sent if isinstance(m, TimeoutNow)] == ["n2"]
    assert net.leaders() == ["n2"] and n2.term == 2
    # n3 had just heard from n1 (stickiness), yet voted: the request said "transfer".
    for voter in ("n1", "n3"):
        assert [(m.term, m.granted) for m in votes_from(net.sent, voter) if m.term == 2] == [
            (2, True)
        ]
    assert n1.role is Role.FOLLOWER and n1.lease_read_index() is None
    net.tick(times=HEARTBEAT)
    assert n1.leader == "n2" and n2.lease_read_index() == 3


@pytest.mark.parametrize("phase", range(0, ELECTION, 3))
def test_transfer_waits_for_a_lagging_target_and_is_abandoned_after_election_ticks(
    phase: int,
) -> None:
    """Thesis §3.10: TimeoutNow goes out only once the target's log matches the leader's. A transfer
    that cannot finish within an election timeout is abandoned and proposals resume, but the
    lease stays forfeited for the rest of the term (TimeoutNow may still be in flight).
    ``phase`` starts the transfer at different points of the leader's tick cycle."""
    net = stable_cluster()
    net.tick(times=phase)
    n1 = net.raft("n1")
    net.cut("n1", "n3")
    propose_all(net, "n1", [b"a", b"b"])
    n1.transfer_leadership("n3")
    net.tick(times=HEARTBEAT)
    assert not [m for m in net.sent if isinstance(m, TimeoutNow)]
    with pytest.raises(ProposalRejectedError):
        net.propose("n1", b"refused")

    ticks = net.run_until(lambda: n1.transfer_target is None, max_ticks=ELECTION)
    assert HEARTBEAT + ticks == ELECTION  # a full election timeout after the transfer began
    net.propose("n1", b"accepted")
    assert n1.role is Role.LEADER and n1.lease_read_index() is None
    net.recover()

    n1.transfer_leadership("n3")
    ticks = net.run_until(lambda: net.leader() == "n3", max_ticks=2 * HEARTBEAT)
    assert ticks <= 2 * HEARTBEAT and net.raft("n3").term == 2
    net.tick(times=HEARTBEAT)
    assert all(net.nodes[n].applied == [b"a", b"b", b"accepted"] for n in N3)


# --- 10. duplicated and reordered AppendEntries (paper §5.3, thesis §3.5) --------------------


def test_duplicated_and_reordered_append_entries_are_idempotent() -> None:
    """Paper Figure 2 (AppendEntries, receiver step 3) / §5.3: a follower deletes existing
    entries only where one conflicts with a new entry (same index, different term). A stale or
    duplicated AppendEntries whose entries it already has must not truncate the newer entries
    after them; one that leaves a gap is refused; acknowledgements never move back."""
    net = stable_cluster()
    n1, n2 = net.raft("n1"), net.raft("n2")
    net.cut("n1", "n2")
    propose_all(net, "n1", [b"a", b"b", b"c"])
    net.recover()
    n1.tick()
    n1.tick()
    net.process()
    heartbeat = next(m for m in net.inflight if m.dst == "n2")
    net.deliver()  # n2 rejects (it lacks index 4) ...
    net.process()
    net.deliver()  # ... and n1 backs up to n2's hint
    net.process()
    (batch,) = [m for m in net.inflight if m.dst == "n2"]
    assert isinstance(batch, AppendEntries) and [e.index for e in batch.entries] == [2, 3, 4]
    net.stabilize()
    propose_all(net, "n1", [b"d", b"e"])
    net.tick("n1")  # the next tick tells the followers the commit index (Raft._maybe_commit)
    assert n2.log.last_index() == 6

    written = sum(len(rd.entries) for rd in net.nodes["n2"].readies)
    commit = n2.log.commit
    # Old messages arrive again, out of order: the batch, the probe, the batch once more.
    for msg in (batch, heartbeat, batch):
        net.inject(msg)
    net.process()
    assert n2.log.last_index() == 6 and net.log_terms("n2") == net.log_terms("n1")
    assert sum(len(rd.entries) for rd in net.nodes["n2"].readies) == written  # nothing rewritten
    assert n2.log.commit == commit  # a stale commit index never moves it back
    # All three fall inside n2's committed prefix, which matches by definition: n2 answers
    # with its commit index.
    answers = [m for m in net.inflight if isinstance(m, AppendResponse) and m.src == "n2"]
    assert [(m.success, m.match_index) for m in answers] == [(True, 6)] * 3
    net.stabilize()
    assert n1.progress["n2"].match == 6
    assert net.nodes["n2"].applied == [b"a", b"b", b"c", b"d", b"e"]

    # Uncommitted entries sent one by one (each proposal in a Ready of its own) arrive
    # last-first, then in order, then the first one once more: gaps are refused, and the stale
    # copy must not cut off the entries after it.
    for value in (b"f", b"g", b"h"):
        net.propose("n1", value)
        net.process()
    singles = [m for m in net.inflight if isinstance(m, AppendEntries) and m.dst == "n2"]
    assert [(m.prev_index, len(m.entries), m.commit) for m in singles] == [
        (6, 1, 6),
        (7, 1, 6),
        (8, 1, 6),
    ]
    net.inflight.clear()
    for msg in [*reversed(singles), *singles[1:], singles[0]]:
        net.inject(msg)
    net.process()
    answers = [m for m in net.inflight if isinstance(m, AppendResponse)]
    assert [(m.success, m.match_index) for m in answers] == [
        (False, 6),  # [9] after 8: n2's log ends at 6
        (False, 6),  # [8] after 7
        (True, 7),
        (True, 8),
        (True, 9),
        (True, 7),  # the stale [7]: acknowledged, nothing truncated
    ]
    assert n2.log.last_index() == 9 and n2.log.commit == 6
    assert sum(len(rd.entries) for rd in net.nodes["n2"].readies) == written + 3
    net.stabilize()  # the stale answers reach n1 too: match never moves back
    assert n1.progress["n2"].match == 9
    net.tick(times=HEARTBEAT)
    assert all(net.log_terms(n) == net.log_terms("n1") for n in N3)
    assert all(net.nodes[n].applied[-3:] == [b"f", b"g", b"h"] for n in N3)


# --- 11. lost data (issue #14: a replica that lost its log must not stand in for a quorum) ---


def wipe(net: Network, id: str) -> None:
    """Crash ``id`` and lose everything on its disk (a wiped data dir, a dropped replica)."""
    net.crash(id)
    net.nodes[id].disk = Disk()


@pytest.mark.parametrize("compacted", [False, True])
def test_follower_that_lost_its_log_is_counted_from_zero_and_refilled(compacted: bool) -> None:
    """A follower that rejects entries below the match it acknowledged has lost its log. The
    leader counts it from what it holds now (not as a copy of entries it no longer has) and
    refills it: from index 1, or from a snapshot when the log is compacted."""
    net = stable_cluster()
    values = [f"v{i}".encode() for i in range(20)]
    propose_all(net, "n1", values)
    n1 = net.raft("n1")
    assert n1.progress["n3"].match == n1.log.last_index() == 21
    if compacted:
        net.compact("n1")
    wipe(net, "n3")
    net.restart("n3")
    # Only heartbeats reach n3 for now: it rejects them, and the leader learns of the loss.
    net.drop(
        lambda m: (
            m.dst == "n3" and (isinstance(m, InstallSnapshot) or bool(getattr(m, "entries", ())))
        )
    )
    net.tick(times=HEARTBEAT)
    assert n1.status().followers["n3"].lost_data == 1
    assert n1.progress["n3"].match == 0
    net.recover()
    net.run_until(lambda: net.nodes["n3"].applied == values)
    assert n1.progress["n3"].match == n1.log.last_index()
    installs = [m for m in net.sent if isinstance(m, InstallSnapshot) and m.dst == "n3"]
    assert bool(installs) is compacted


def test_rejoining_replica_neither_votes_nor_campaigns_until_caught_up() -> None:
    """A replica started without its former state (``rejoin``) may have voted in a term it no
    longer remembers: it refuses every vote and never campaigns until a leader has brought it up
    to that leader's commit index; then it is an ordinary member again."""
    net = stable_cluster()
    propose_all(net, "n1", [b"a", b"b"])
    wipe(net, "n3")
    n3 = net.restart("n3")
    n3.rejoin()
    assert n3.status().rejoining
    net.crash("n1")
    net.tick("n3", times=3 * ELECTION)  # its timeout passes: no campaign
    assert not [m for m in net.sent if isinstance(m, RequestVote) and m.src == "n3"]
    sent = len(net.sent)
    net.inject(vote_request("n2", "n3", 5, net.raft("n2"), pre=True))
    net.inject(vote_request("n2", "n3", 5, net.raft("n2"), pre=False))
    net.process()
    answers = votes_from(net.sent[sent:], "n3")
    assert len(answers) == 2 and not any(m.granted for m in answers)

    net.restart("n1")
    net.recover()
    net.run_until(lambda: net.leader() is not None and net.nodes["n3"].applied == [b"a", b"b"])
    net.run_until(lambda: not net.raft("n3").status().rejoining)
    assert n3.log.commit >= 3


def test_only_a_moved_commit_index_may_skip_the_fsync() -> None:
    """Figure 2: commitIndex is volatile state, so a Ready that only moves it need not be
    fsynced before its messages (``Ready.must_sync`` False, etcd's MustSync); new entries, a
    new term and a vote are durable before any message that depends on them."""
    net = stable_cluster()
    for n in N3:
        net.nodes[n].readies.clear()
    index, _ = net.propose("n1", b"x")
    net.run_until(lambda: all(net.raft(n).log.commit >= index for n in N3))
    for n in N3:
        readies = net.nodes[n].readies
        assert any(rd.entries and rd.must_sync for rd in readies), n
        commit_only = [rd for rd in readies if rd.hard_state and rd.hard_state.commit == index]
        assert commit_only and not any(rd.must_sync for rd in commit_only), n
        if n != "n1":  # its answer to the commit's heartbeat leaves with that Ready, at once
            assert any(isinstance(m, AppendResponse) for rd in commit_only for m in rd.messages)
    for n in N3:
        net.nodes[n].readies.clear()
    net.crash("n1")
    net.run_until(lambda: net.leader() not in (None, "n1"))
    changes = 0
    for n in ("n2", "n3"):
        before = (1, "n1")
        for rd in net.nodes[n].readies:
            if rd.hard_state is not None:
                now = (rd.hard_state.term, rd.hard_state.vote)
                if now != before:  # a new term or a vote: fsynced before the messages
                    assert rd.must_sync, (n, rd)
                    changes += 1
                before = now
    assert changes >= 2  # both moved to the new term, and at least one voted in it


def test_proposals_and_commit_steps_between_readies_leave_as_one_message_per_follower() -> None:
    """The leader sends what it owes each follower once per Ready: proposals made together go
    in one AppendEntries (not one each), and acknowledgements that move the commit index
    cause no round of their own: the next AppendEntries, or the next tick's heartbeat, tells
    the followers. What the messages say is unchanged: every entry the follower lacks, and the
    commit index as of the Ready."""
    net = stable_cluster()
    net.inflight.clear()
    values = [b"a", b"b", b"c", b"d"]
    for value in values:
        net.propose("n1", value)
    net.process()
    sent = [m for m in net.inflight if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in sent) == ["n2", "n3"]
    assert all([e.data for e in m.entries] == values and m.commit == 1 for m in sent)

    net.deliver()  # the followers take the batch ...
    net.process()  # ... and answer once each, after persisting it
    answers = [m for m in net.inflight if isinstance(m, AppendResponse)]
    assert sorted((m.src, m.match_index) for m in answers) == [("n2", 5), ("n3", 5)]
    net.deliver()  # both answers reach n1 before its next Ready: the commit moves to 5 ...
    net.process()
    assert net.raft("n1").log.commit == 5
    assert not [m for m in net.inflight if isinstance(m, AppendEntries)]  # ... nothing of its own
    net.propose("n1", b"e")
    net.process()
    appends = [m for m in net.inflight if isinstance(m, AppendEntries)]
    # ... the next proposal's AppendEntries carries it ...
    assert sorted((m.dst, m.commit, len(m.entries)) for m in appends) == [
        ("n2", 5, 1),
        ("n3", 5, 1),
    ]
    net.stabilize()
    assert net.raft("n1").log.commit == 6 and net.raft("n2").log.commit == 5
    net.raft("n1").tick()  # ... or, at the latest, the next tick's heartbeat, once per follower
    net.process()
    heartbeats = [m for m in net.inflight if isinstance(m, AppendEntries)]
    assert sorted((m.dst, m.commit, len(m.entries)) for m in heartbeats) == [
        ("n2", 6, 0),
        ("n3", 6, 0),
    ]
    net.stabilize()
    assert all(net.nodes[n].applied[-5:] == [*values, b"e"] for n in N3)


# --- 12. a group id named again: the incarnation is part of the group's identity ----------


def _old_group_disk() -> tuple[HardState, list[Entry]]:
    """n3's disk after incarnation 1 of group GROUP: 20 entries, in a term raised by two
    elections after its leaders crashed."""
    net = Network.bootstrap(N3, incarnation=1)
    net.run_until(lambda: net.leader() == "n1")
    propose_all(net, "n1", [b"old-%d" % i for i in range(20)])
    for leader in ("n1", "n2"):
        net.crash(leader)
        net.run_until(lambda gone=leader: net.leader() not in (None, gone))  # type: ignore[misc]
        net.restart(leader)
        net.stabilize()
    net.run_until(lambda: net.raft("n3").log.commit == net.raft("n3").log.last_index())
    disk = net.nodes["n3"].disk
    return disk.hard_state, list(disk.entries)


@pytest.mark.parametrize("stale", [1, 2], ids=["its own incarnation", "taken for the new"])
def test_a_deleted_groups_replica_never_takes_part_in_the_group_named_again(stale: int) -> None:
    """A table deleted and created again under its name reuses its group ids. n3 was down
    through both: it comes back with incarnation 1's replica (a longer log, a higher term)
    while incarnation 2 committed "new" on n1 and n2, and n1 is down. Taken for a replica of
    incarnation 2 (as before incarnations travelled in messages: ``stale`` 2), it wins the
    election (its log is more up to date) and n2 takes its log: where n2's "new" (acknowledged)
    and n3's entry have the same index and term, as a match (the deleted table's items then
    follow "new" in n2's log), else in place of n2's (lost). Of incarnation 1, none of its
    messages counts and it takes none of n2's: n2 keeps "new", and n3 learns that its group
    was named again (``superseded_by``)."""
    hard_state, entries = _old_group_disk()
    assert hard_state.term >= 3 and len(entries) >= 22
    net = Network(CONFIG)
    members = Membership(frozenset(N3))
    for k, node in enumerate(["n1", "n2"]):
        net.add(node, membership=members, offset=3 * k, incarnation=2)
    net.add("n3", membership=members, offset=6, hard_state=hard_state, entries=entries,
            incarnation=stale)  # fmt: skip
    net.crash("n3")
    net.run_until(lambda: net.leader() == "n1")
    index, _ = net.propose("n1", b"new")
    net.run_until(lambda: net.raft("n2").log.commit >= index)  # acknowledged: on n1 and n2
    assert net.raft("n2").term < hard_state.term
    net.crash("n1")
    net.restart("n3")
    leaders: set[str] = set()
    for _ in range(20 * ELECTION):
        net.tick()
        leaders |= set(net.leaders())
    kept = [e.data for e in net.nodes["n2"].disk.entries]
    if stale == 2:  # the hazard this guards against: n3 led, and n2 took its log
        assert leaders == {"n3"} and any(d.startswith(b"old") for d in kept)
        return
    assert not leaders  # n2 cannot win without n3's vote; n3 never counts
    assert b"new" in kept and not any(d.startswith(b"old") for d in kept)
    assert net.raft("n3").superseded_by == 2 and net.raft("n2").superseded_by == 0
    assert all(m.incarnation == (2 if m.src == "n2" else 1) for m in net.sent if m.src != "n1")
