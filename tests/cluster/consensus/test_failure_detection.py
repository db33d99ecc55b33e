"""Failure detection in the core: a crashed, paused or isolated leader is replaced within about
one election timeout, a new leader announces itself at once, an isolated leader steps down, and
leases stay exclusive throughout (thesis §6.2 check-quorum, §9.6 pre-vote, §6.4.1 leases).

Scripted cases use the hand-driven network (``network.py``); the timing cases run seeded
schedules through the simulator (``simulator.py``), which delays and reorders messages.
"""

from __future__ import annotations

import statistics

import pytest

from cluster.consensus.messages import AppendEntries, Membership, RequestVote, VoteResponse
from cluster.consensus.raft import RaftConfig, Role

from .network import Network
from .simulator import NODES, SimConfig, Simulation

CONFIG = RaftConfig()
ELECTION = CONFIG.election_ticks
HEARTBEAT = CONFIG.heartbeat_ticks
N3 = ["n1", "n2", "n3"]
# Scripted timeouts (network.py): n2 times out ELECTION + 3 ticks after it last heard a leader.
N2_TIMEOUT = ELECTION + 3


def stable_cluster() -> Network:
    """n1 leads term 1, its no-op is committed everywhere and it holds a lease."""
    net = Network.bootstrap(N3)
    net.run_until(lambda: net.leader() == "n1")
    net.run_until(
        lambda: (
            net.raft("n1").lease_read_index() is not None
            and all(net.raft(n).log.commit == 1 for n in N3)
        )
    )
    return net


def lease_holders(net: Network) -> list[str]:
    return [n for n in net.up() if net.raft(n).lease_read_index() is not None]


def serving_leader(net: Network, exclude: str) -> str | None:
    """A leader other than ``exclude`` that may serve lease reads (it is fully in office)."""
    for node in net.up():
        raft = net.raft(node)
        if node != exclude and raft.role is Role.LEADER and raft.lease_read_index() is not None:
            return node
    return None


# --- a new leader announces itself at once ---------------------------------------------------


def test_new_leader_announces_itself_without_waiting_for_a_heartbeat_tick() -> None:
    """The Ready that makes a candidate leader already carries AppendEntries to every follower,
    so followers know the leader (and routers get a hint) before its first heartbeat tick."""
    net = Network.bootstrap(N3)
    net.run_until(lambda: net.leader() == "n1")  # stops right after the winning vote arrives
    n1 = net.raft("n1")
    assert n1.role is Role.LEADER
    appends = [m for m in net.sent if isinstance(m, AppendEntries) and m.term == n1.term]
    assert {m.dst for m in appends} == {"n2", "n3"}
    assert net.raft("n2").leader == "n1" and net.raft("n3").leader == "n1"
    assert n1.heartbeat_elapsed == 0  # no heartbeat tick was needed for any of this
    assert n1.log.commit == 1  # and its no-op already committed


# --- a crashed or paused leader is replaced within about one election timeout ----------------


@pytest.mark.parametrize("phase", range(HEARTBEAT))
def test_crashed_leader_is_replaced_within_one_election_timeout(phase: int) -> None:
    net = stable_cluster()
    net.tick(times=phase)
    net.crash("n1")
    ticks = net.run_until(lambda: serving_leader(net, "n1") is not None, max_ticks=4 * ELECTION)
    assert ticks <= N2_TIMEOUT + 1, f"replaced after {ticks} ticks"
    assert serving_leader(net, "n1") == "n2"


def test_follower_that_lost_the_leader_first_wins_once_the_other_may_vote() -> None:
    """n2 stops hearing n1 a few ticks before n3 does. When n2 times out, n3 still honours n1
    (stickiness) and ignores n2's pre-vote; n2 asks again every heartbeat and wins as soon as
    n3's stickiness runs out, instead of waiting a whole new election timeout (or n3's own)."""
    net = stable_cluster()
    net.drop(lambda m: m.src == "n1" and m.dst == "n2")
    net.tick(times=N2_TIMEOUT - ELECTION + HEARTBEAT)  # n2 hears nothing; n3 still does
    net.recover()
    net.crash("n1")
    pre_votes_before = sum(1 for m in net.sent if isinstance(m, RequestVote) and m.pre)
    ticks = net.run_until(lambda: serving_leader(net, "n1") is not None, max_ticks=4 * ELECTION)
    # n3's stickiness lasts ELECTION ticks after it last heard n1; n2 asks again within a
    # heartbeat of that. n3's own timeout (ELECTION + 6) would come later.
    assert serving_leader(net, "n1") == "n2"
    assert ticks <= ELECTION + HEARTBEAT + 1, f"replaced after {ticks} ticks"
    pre_votes = sum(1 for m in net.sent if isinstance(m, RequestVote) and m.pre)
    assert pre_votes - pre_votes_before >= 2  # it asked n3 more than once


def test_paused_leader_resumes_as_a_follower_without_serving_a_stale_read() -> None:
    """A paused (SIGSTOP) leader neither ticks nor hears anything. The others replace it; on
    resume it first catches up on its ticks (as the node's tick loop does), which ends its
    lease and steps it down before it could serve a read. (While it is paused its frozen tick
    count makes its lease look valid: the driver refuses lease reads when ticks are late,
    ``Replica.read_consistent``.)"""
    net = stable_cluster()
    net.isolate("n1")
    paused = 0
    while serving_leader(net, "n1") is None:
        net.tick("n2", "n3")
        paused += 1
        assert paused <= 4 * ELECTION
    assert paused <= N2_TIMEOUT + 1
    net.propose("n2", b"after")
    net.stabilize()
    n1 = net.raft("n1")
    for _ in range(paused):  # resume: the missed ticks arrive at once
        n1.tick()
    assert n1.lease_read_index() is None and n1.role is not Role.LEADER
    net.recover()
    net.tick(times=2 * HEARTBEAT)
    assert n1.leader == "n2" and n1.term == net.raft("n2").term
    assert net.nodes["n1"].applied[-1:] == [b"after"]


def test_followers_timing_out_together_do_not_split_the_vote() -> None:
    """n2 and n3 time out in the same tick and ask each other for pre-votes at once. Were both
    granted, both would campaign in the same term, split the vote and lose another election
    timeout; the one with the higher id yields, so n2 wins in the first term it tries."""
    net = Network()
    members = Membership(frozenset(N3))
    for node, offset in (("n1", 0), ("n2", 3), ("n3", 3)):
        net.add(node, membership=members, offset=offset)
    net.run_until(lambda: net.leader() == "n1")
    net.tick(times=HEARTBEAT)
    term = net.raft("n1").term
    net.crash("n1")
    ticks = net.run_until(lambda: serving_leader(net, "n1") is not None, max_ticks=4 * ELECTION)
    assert serving_leader(net, "n1") == "n2"
    assert net.raft("n2").term == term + 1  # one election, no split vote
    assert ticks <= N2_TIMEOUT + 1
    refusals = [
        m
        for m in net.sent
        if isinstance(m, VoteResponse) and m.pre and (m.src, m.dst) == ("n2", "n3")
    ]
    assert refusals and not any(m.granted for m in refusals)  # n2 refused n3's pre-vote


# --- an isolated leader steps down; leases never overlap --------------------------------------


@pytest.mark.parametrize("phase", range(HEARTBEAT))
def test_isolated_leader_steps_down_and_is_replaced_with_exclusive_leases(phase: int) -> None:
    net = stable_cluster()
    net.tick(times=phase)
    net.isolate("n1")
    n1 = net.raft("n1")
    stepped_down_at = None
    for tick in range(1, 4 * ELECTION):
        net.tick()
        assert len(lease_holders(net)) <= 1, f"two leases at tick {tick}: {lease_holders(net)}"
        if stepped_down_at is None and n1.role is not Role.LEADER:
            stepped_down_at = tick
        if serving_leader(net, "n1") is not None:
            break
    assert stepped_down_at is not None and stepped_down_at <= ELECTION
    assert serving_leader(net, "n1") == "n2"
    assert tick <= N2_TIMEOUT + 1
    net.recover()
    net.tick(times=2 * HEARTBEAT)
    assert net.leaders() == ["n2"] and n1.leader == "n2"


# --- timing over seeded schedules (random delays and election timeouts) ----------------------


def failover_ticks(seed: int, fault: str) -> int:
    """Ticks from a fault at a quiet group's leader until another replica may serve reads."""
    # A message takes at most one tick (in a node, ~1 ms against a 50 ms tick).
    config = SimConfig(
        groups=1, max_delay=1, loss=0.0, duplicate=0.0, crash_rate=0.0, partition_rate=0.0
    )
    sim = Simulation(seed, config)
    group = sim.groups[0]

    def serving(exclude: str | None) -> str | None:
        for node in NODES:
            raft = sim.replicas[(node, group)].raft
            if node != exclude and node not in sim.down_until and raft.lease_read_index():
                return node
        return None

    for _ in range(20 * ELECTION):
        sim.step(chaos=False)
        if serving(None) is not None:
            break
    for _ in range(sim.rng.randrange(4 * HEARTBEAT)):  # any phase of the heartbeat cycle
        sim.step(chaos=False)
    old = serving(None)
    assert old is not None, f"SEED={seed}: no leader to start from"
    if fault == "crash":
        sim.down_until[old] = 10**9
    else:
        sim.cut = {(a, b) for a in NODES for b in NODES if a != b and old in (a, b)}
    for ticks in range(1, 10 * ELECTION):
        sim.step(chaos=False)  # checks safety (one leader per term, no stale lease read)
        holders = [n for n in NODES if n not in sim.down_until and serving(n) == n]
        assert len(set(holders)) <= 1
        if serving(old) is not None:
            return ticks
    raise AssertionError(f"SEED={seed}: {fault} of {old}: no new leader")


@pytest.mark.parametrize("fault", ["crash", "isolate"])
def test_leader_loss_is_repaired_in_about_one_election_timeout(fault: str) -> None:
    """Over seeded schedules: the median failover (fault to a new leader that may serve reads)
    is one election timeout plus the six message hops of pre-vote, vote and the no-op's commit
    (each a tick in the simulator), and even a split vote is resolved by one more timeout."""
    ticks = [failover_ticks(seed, fault) for seed in range(60)]
    hops = 6
    assert statistics.median(ticks) <= 1.25 * ELECTION + hops, sorted(ticks)
    assert max(ticks) <= 2.5 * ELECTION + 2 * hops, sorted(ticks)
