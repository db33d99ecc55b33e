"""RaftConfig.spread_first_leaders: a brand-new group's voters first campaign in turns rotated
by the group's number, so that the first leaders of many groups spread over the members
instead of all going to the member that started (and so timed out) first. Liveness only:
a member that is down delays the first election, never stops it.
"""

from __future__ import annotations

import pytest

from cluster.consensus.raft import RaftConfig

from . import network
from .network import Network

SPREAD = RaftConfig(spread_first_leaders=True)
N3 = ["n1", "n2", "n3"]


@pytest.mark.parametrize(
    ("group", "first"),
    [("t.p0", "n1"), ("t.p1", "n2"), ("t.p2", "n3"), ("t.p3", "n1"), ("p11", "n3")],
)
def test_partition_i_is_first_led_by_the_i_th_member_whoever_starts_first(
    monkeypatch: pytest.MonkeyPatch, group: str, first: str
) -> None:
    monkeypatch.setattr(network, "GROUP", group)
    net = Network.bootstrap(N3, SPREAD)  # n1 times out first, n3 last (scripted offsets)
    net.run_until(lambda: net.leader() is not None, max_ticks=300)
    assert net.leader() == first
    assert net.raft(first).term == 1  # one election, no duel


def test_without_it_the_member_that_times_out_first_leads_every_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for group in ("t.p0", "t.p1", "t.p2"):
        monkeypatch.setattr(network, "GROUP", group)
        net = Network.bootstrap(N3)
        net.run_until(lambda: net.leader() is not None)  # noqa: B023 (run at once)
        assert net.leader() == "n1"


def test_a_first_member_that_is_down_only_delays_the_first_election(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(network, "GROUP", "t.p1")  # n2's turn first
    net = Network.bootstrap(N3, SPREAD)
    net.down.add("n2")
    ticks = net.run_until(lambda: net.leader() is not None, max_ticks=300)
    assert net.leader() in {"n1", "n3"}
    assert ticks <= 4 * SPREAD.election_ticks + 10  # the next turn, about two timeouts later


def test_only_a_brand_new_group_takes_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a term has begun (a restart, a later election), timeouts are the usual ones."""
    monkeypatch.setattr(network, "GROUP", "t.p2")  # n3's turn first
    net = Network.bootstrap(N3, SPREAD)
    net.run_until(lambda: net.leader() == "n3", max_ticks=300)
    net.down.add("n3")  # the leader goes: the next election is the first to time out's
    ticks = net.run_until(lambda: net.leader() in {"n1", "n2"}, max_ticks=100)
    # Within the usual timeouts (at most two election timeouts and a vote round), not after a
    # turn (n1's would come two election timeouts later than that).
    assert ticks <= 2 * SPREAD.election_ticks + 5, ticks


def test_a_log_replica_takes_no_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turns go round the members that may lead: a log replica never campaigns on its own, so
    a turn of its own would only hold the first election back."""
    monkeypatch.setattr(network, "GROUP", "t.p0")  # n1's turn, were it a full member
    net = Network.bootstrap(N3, SPREAD, log_only=["n1"])
    ticks = net.run_until(lambda: net.leader() is not None, max_ticks=300)
    assert net.leader() == "n2"
    assert ticks <= 2 * SPREAD.election_ticks + 10  # n2's turn is the first, not the second
