"""The fault catalog: every kind plans the right kills, pauses, cuts and toxics; blast radius."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from chaos.backends.local import build_config
from chaos.faults import (
    CATALOG,
    BitRotFault,
    BlastRadius,
    BlastRadiusExceeded,
    Bridge,
    ClusterView,
    DisableLinks,
    FaultPlan,
    IsolateAz,
    IsolateNode,
    Latency,
    LeaderIsolation,
    Leaders,
    MajoritiesRing,
    MajorityOf,
    MinorityOf,
    NoLeader,
    OneWay,
    PauseNode,
    PlanError,
    PowerLossAz,
    PowerLossNode,
    PowerLossRack,
    PowerOffAz,
    PowerOffNode,
    PowerOffRack,
    RandomHalves,
    ReplicaGroup,
    ResetPeer,
    RollingRestart,
    Split,
    TargetFault,
    UnknownFaultKind,
    UnknownTarget,
    check_blast_radius,
    describe_catalog,
    fault_params,
    groups_from_status,
    make_fault,
    plan,
)
from cluster.topology import parse_topology

SHAPES = ["3x2x1", "3x2x2"]


def view_of(shape: str = "3x2x1", seed: int = 0) -> ClusterView:
    return ClusterView.assumed(parse_topology(shape), rng=random.Random(seed))


def az(view: ClusterView, process: str) -> str:
    return view.process_azs[process]


def crossing(view: ClusterView, sides: list[set[str]]) -> frozenset[tuple[str, str]]:
    """The links a partition into ``sides`` should cut, computed the obvious way."""
    side_of = {p: i for i, s in enumerate(sides) for p in s}
    return frozenset(
        (a, b)
        for a, b in view.links()
        if a in side_of and b in side_of and side_of[a] != side_of[b]
    )


def touching(view: ClusterView, nodes: set[str]) -> frozenset[tuple[str, str]]:
    return frozenset((a, b) for a, b in view.links() if a in nodes or b in nodes)


# --- the view ------------------------------------------------------------------------------


def test_links_cover_the_processes_that_talk() -> None:
    view = view_of()
    links = view.links()

    assert ("sn-a1", "sn-b1") in links and ("sn-b1", "sn-a1") in links
    assert ("rt-a", "sn-c2") in links and ("rt-a", "md-b") in links and ("rt-b", "gac") in links
    assert ("md-a", "sn-b1") in links and ("sn-b1", "md-a") in links
    assert ("sn-a1", "sn-a1") not in links
    assert ("sn-a1", "rt-a") not in links  # a router's requests are answered on its connection
    assert ("rt-a", "rt-b") not in links and ("gac", "rt-a") not in links
    # 6*5 storage pairs + 3 routers * (6+3+1) + 3 MemDS * 6 * 2 directions
    assert len(links) == 30 + 30 + 36


def test_assumed_view_matches_a_deployed_cluster(tmp_path: Path) -> None:
    topo = parse_topology("3x2x1")
    deployed = ClusterView.from_config(build_config("3x2x1", tmp_path))
    assumed = ClusterView.assumed(topo)

    assert dict(deployed.process_azs) == dict(assumed.process_azs)
    assert {r: set(ids) for r, ids in deployed.roles.items()} == {
        r: set(ids) for r, ids in assumed.roles.items()
    }
    assert deployed.links() == assumed.links()


def test_groups_from_status_takes_the_highest_term() -> None:
    statuses = {
        "sn-a1": {
            "replicas": [
                {"group": "t.p0", "role": "follower", "term": 3, "leader": "sn-b1",
                 "members": ["sn-a1", "sn-b1", "sn-c1"]},
            ]
        },
        "sn-b1": {
            "replicas": [
                {"group": "t.p0", "role": "leader", "term": 4, "leader": "sn-b1",
                 "members": ["sn-a1", "sn-b1", "sn-c1"]},
            ]
        },
        "sn-c1": None,  # down
    }  # fmt: skip

    groups = groups_from_status(statuses)

    assert groups == {"t.p0": ReplicaGroup("t.p0", ("sn-a1", "sn-b1", "sn-c1"), "sn-b1")}


# --- power and processes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("3x2x1", {"sn-b1", "sn-b2", "rt-b", "md-b"}),
        ("3x2x2", {"sn-b1", "sn-b2", "sn-b3", "sn-b4", "rt-b", "md-b"}),
    ],
)
def test_power_off_az_kills_everything_in_the_az(shape: str, expected: set[str]) -> None:
    p = plan(PowerOffAz("az-b"), view_of(shape))

    assert p.kills == expected
    assert not p.cuts and not p.pauses
    assert p.affected_azs() == {"az-b"}
    assert p.affected_storage_nodes() == {n for n in expected if n.startswith("sn-")}


def test_power_off_az_takes_gac_along_where_it_lives() -> None:
    p = plan(PowerOffAz("az-a"), view_of())

    assert p.kills == {"sn-a1", "sn-a2", "rt-a", "md-a", "gac"}


@pytest.mark.parametrize(
    ("shape", "expected"), [("3x2x1", {"sn-a2"}), ("3x2x2", {"sn-a3", "sn-a4"})]
)
def test_power_off_rack_kills_only_its_storage_nodes(shape: str, expected: set[str]) -> None:
    p = plan(PowerOffRack("az-a/r2"), view_of(shape))

    assert p.kills == expected
    assert p.footprint.racks == {"az-a/r2"}


@pytest.mark.parametrize("shape", SHAPES)
def test_power_off_node_and_pause_node_touch_one_process(shape: str) -> None:
    view = view_of(shape)

    off = plan(PowerOffNode("sn-c1"), view)
    paused = plan(PauseNode("sn-c1"), view)

    assert off.kills == {"sn-c1"} and not off.pauses and not off.cuts
    assert paused.pauses == {"sn-c1"} and not paused.kills and not paused.cuts
    assert off.affected_storage_nodes() == paused.affected_storage_nodes() == {"sn-c1"}


def test_power_loss_kills_like_power_off_and_loses_only_storage_nodes_data() -> None:
    view = view_of()
    az = plan(PowerLossAz("az-b"), view)
    rack = plan(PowerLossRack("az-a/r1", torn=True), view)
    router = plan(PowerLossNode("rt-c"), view)

    assert az.kills == plan(PowerOffAz("az-b"), view).kills
    assert az.power_losses == {"sn-b1", "sn-b2"} and not az.torn
    assert rack.kills == rack.power_losses == {"sn-a1"} and rack.torn
    assert router.kills == {"rt-c"} and not router.power_losses  # a router has no data
    assert not plan(PowerOffAz("az-b"), view).power_losses
    assert "lose unsynced writes of sn-a1 (last write torn)" in rack.describe()


def test_power_off_node_accepts_other_processes() -> None:
    assert plan(PowerOffNode("gac"), view_of()).kills == {"gac"}


@pytest.mark.parametrize("shape", SHAPES)
def test_rolling_restart_lists_processes_in_order(shape: str) -> None:
    view = view_of(shape)

    storage = plan(RollingRestart("storage"), view)
    routers = plan(RollingRestart("router"), view)
    everything = plan(RollingRestart("all"), view)

    assert storage.rolling == view.roles["storage"]
    assert routers.rolling == ("rt-a", "rt-b", "rt-c")
    assert set(everything.rolling) == set(view.processes())
    assert everything.rolling[: len(view.storage)] == view.storage
    assert not storage.kills and not storage.footprint.nodes  # down one at a time, not at once
    assert storage.affected_storage_nodes() == set(view.storage)


# --- partitions ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_split_cuts_every_crossing_link_both_ways_and_none_inside(shape: str) -> None:
    view = view_of(shape)
    side_a = view.in_az("az-a")
    side_bc = view.in_az("az-b") | view.in_az("az-c")

    p = plan(Split("az-a|az-b,az-c"), view)

    assert p.cuts == crossing(view, [set(side_a), set(side_bc)])
    assert ("sn-a1", "sn-b1") in p.cuts and ("sn-b1", "sn-a1") in p.cuts
    assert ("rt-b", "gac") in p.cuts  # gac lives in az-a
    assert ("rt-a", "sn-a1") not in p.cuts
    assert all((az(view, a) == "az-a") != (az(view, b) == "az-a") for a, b in p.cuts)
    assert p.affected_azs() == {"az-a"}  # the smaller side is the one taken down


def test_split_with_node_sides_leaves_other_processes_alone() -> None:
    view = view_of()

    p = plan(Split("sn-a1,sn-b1|sn-c1"), view)

    assert p.cuts == {
        ("sn-a1", "sn-c1"), ("sn-c1", "sn-a1"), ("sn-b1", "sn-c1"), ("sn-c1", "sn-b1")
    }  # fmt: skip


def test_split_with_everyone_else() -> None:
    view = view_of("3x2x2")

    p = plan(Split("az-a/r1|*"), view)

    rack = {"sn-a1", "sn-a2"}
    assert p.cuts == crossing(view, [rack, set(view.processes()) - rack])
    assert p.affected_storage_nodes() == rack


def test_split_of_three_sides() -> None:
    view = view_of()

    p = plan(Split("az-a|az-b|az-c"), view)

    assert p.cuts == crossing(view, [set(view.in_az(a)) for a in ("az-a", "az-b", "az-c")])


@pytest.mark.parametrize("shape", SHAPES)
def test_one_way_cuts_one_direction_only(shape: str) -> None:
    view = view_of(shape)
    src, dst = set(view.in_az("az-a")), set(view.in_az("az-b"))

    p = plan(OneWay("az-a", "az-b"), view)

    assert p.cuts == {(a, b) for a, b in view.links() if a in src and b in dst}
    assert ("sn-a1", "sn-b1") in p.cuts
    assert not any(a in dst and b in src for a, b in p.cuts)


def test_one_way_out_of_an_az_takes_it_down_but_not_gac() -> None:
    """az-a's nodes cannot send to anyone; rt-b still calls gac and hears its answers."""
    p = plan(OneWay("az-a", "*"), view_of())

    assert p.footprint.processes == {"sn-a1", "sn-a2", "rt-a", "md-a"}


@pytest.mark.parametrize("shape", SHAPES)
def test_isolate_node_cuts_exactly_its_links(shape: str) -> None:
    view = view_of(shape)

    p = plan(IsolateNode("sn-b1"), view)

    assert p.cuts == touching(view, {"sn-b1"})
    assert ("rt-a", "sn-b1") in p.cuts and ("sn-b1", "md-b") in p.cuts
    assert p.affected_storage_nodes() == {"sn-b1"}


@pytest.mark.parametrize("shape", SHAPES)
def test_isolate_az_is_a_split_of_the_az_from_everyone_else(shape: str) -> None:
    view = view_of(shape)

    assert plan(IsolateAz("az-c"), view).cuts == plan(Split("az-c|*"), view).cuts


@pytest.mark.parametrize("shape", SHAPES)
def test_bridge_keeps_one_node_connected_to_both_halves(shape: str) -> None:
    view = view_of(shape, seed=3)

    p = plan(Bridge(), view)

    storage = set(view.storage)
    cut_nodes = {a for a, _ in p.cuts}
    bridges = storage - cut_nodes
    assert len(bridges) == 1
    rest = sorted(storage - bridges)
    # the rest falls into two halves: connected within, cut across
    first = {rest[0]} | {b for b in rest if (rest[0], b) not in p.cuts and b != rest[0]}
    second = set(rest) - first
    assert p.cuts == crossing(view, [first, second])
    assert abs(len(first) - len(second)) <= 1
    assert plan(Bridge(), view_of(shape, seed=3)) == p  # the rng decides, deterministically


@pytest.mark.parametrize("shape", SHAPES)
def test_majorities_ring_gives_each_node_a_different_majority(shape: str) -> None:
    view = view_of(shape, seed=5)

    p = plan(MajoritiesRing(), view)

    storage = view.storage
    sees = {
        n: frozenset({n} | {m for m in storage if m != n and (n, m) not in p.cuts}) for n in storage
    }
    assert all(len(s) > len(storage) // 2 for s in sees.values())
    assert len(set(sees.values())) == len(storage)
    assert all(((a, b) in p.cuts) == ((b, a) in p.cuts) for a, b in p.cuts)
    assert all(a in storage and b in storage for a, b in p.cuts)


@pytest.mark.parametrize("shape", SHAPES)
def test_random_halves_splits_the_storage_nodes(shape: str) -> None:
    view = view_of(shape, seed=11)

    p = plan(RandomHalves(), view)

    n = len(view.storage)
    minority = p.affected_storage_nodes()
    assert len(minority) == n // 2
    assert p.cuts == crossing(view, [set(minority), set(view.storage) - minority])
    assert plan(RandomHalves(), view_of(shape, seed=11)) == p
    assert len({plan(RandomHalves(), view_of(shape, s)).cuts for s in range(20)}) > 1


# --- targeted at groups --------------------------------------------------------------------

GROUPS = {
    "t.p0": ReplicaGroup("t.p0", ("sn-a1", "sn-b2", "sn-c1"), "sn-b2"),
    "t.p1": ReplicaGroup("t.p1", ("sn-a2", "sn-b1", "sn-c2"), "sn-c2"),
    "t.p2": ReplicaGroup("t.p2", ("sn-a1", "sn-b1", "sn-c2"), None),
}


def group_view(shape: str = "3x2x1") -> ClusterView:
    return view_of(shape).with_groups(GROUPS)


@pytest.mark.parametrize("shape", SHAPES)
def test_leader_isolation_isolates_exactly_the_leaders_links(shape: str) -> None:
    view = group_view(shape)

    p = plan(LeaderIsolation("t.p0"), view)

    assert p.cuts == touching(view, {"sn-b2"})
    assert p.affected_storage_nodes() == {"sn-b2"}


def test_leader_isolation_of_an_unknown_group_lists_the_groups() -> None:
    with pytest.raises(UnknownTarget, match=r"'t\.p9' is not a replication group.*t\.p0, t\.p1"):
        plan(LeaderIsolation("t.p9"), group_view())


def test_leader_isolation_without_a_leader_says_so() -> None:
    with pytest.raises(NoLeader, match=r"t\.p2 has no leader"):
        plan(LeaderIsolation("t.p2"), group_view())


def test_any_group_picks_one_with_a_leader() -> None:
    for seed in range(10):
        p = plan(LeaderIsolation("any"), group_view().with_rng(random.Random(seed)))
        assert p.affected_storage_nodes() in ({"sn-b2"}, {"sn-c2"})


@pytest.mark.parametrize(("fault", "size"), [(MinorityOf("t.p1"), 1), (MajorityOf("t.p1"), 2)])
def test_minority_and_majority_of_isolate_that_many_replicas(
    fault: MinorityOf | MajorityOf, size: int
) -> None:
    view = group_view()

    p = plan(fault, view)

    chosen = p.affected_storage_nodes()
    assert len(chosen) == size and chosen <= set(GROUPS["t.p1"].members)
    assert p.cuts == crossing(view, [set(chosen), set(view.processes()) - chosen])


def test_leaders_isolates_every_leader() -> None:
    view = group_view()

    p = plan(Leaders(), view)

    assert p.cuts == touching(view, {"sn-b2", "sn-c2"})


def test_leaders_with_no_leader_at_all() -> None:
    with pytest.raises(NoLeader):
        plan(Leaders(), view_of().with_groups({}))


def test_bit_rot_targets_one_replica() -> None:
    p = plan(BitRotFault("sn-b2", "t.p0", "wal", 3), group_view())

    assert [(b.node, b.group, b.target, b.flips) for b in p.bitrot] == [("sn-b2", "t.p0", "wal", 3)]
    assert not p.kills and not p.cuts and not p.affected_storage_nodes()


def test_bit_rot_any_group_picks_one_on_the_node() -> None:
    p = plan(BitRotFault("sn-a2", "any"), group_view())

    assert p.bitrot[0].group == "t.p1"


def test_bit_rot_on_a_node_without_that_group() -> None:
    with pytest.raises(
        UnknownTarget, match=r"sn-a2 holds no replica of t\.p0.*groups on sn-a2: t\.p1"
    ):
        plan(BitRotFault("sn-a2", "t.p0"), group_view())


# --- link degradation ----------------------------------------------------------------------


def test_latency_degrades_from_to_links_only() -> None:
    view = view_of()

    p = plan(Latency("sn-a1", "sn-b1,sn-c1", 100, jitter_ms=20), view)

    (d,) = p.degradations
    assert d.links == {("sn-a1", "sn-b1"), ("sn-a1", "sn-c1")}
    assert (d.latency_ms, d.jitter_ms, d.bandwidth_kbps, d.slicer) == (100, 20, None, False)
    assert not p.cuts and not p.footprint.processes


def test_latency_both_ways() -> None:
    p = plan(Latency("sn-a1", "sn-b1", 50, both_ways=True), view_of())

    assert p.degradations[0].links == {("sn-a1", "sn-b1"), ("sn-b1", "sn-a1")}


@pytest.mark.parametrize(
    ("kind", "extra", "check"),
    [
        ("bandwidth", {"kbps": 64}, lambda p: p.degradations[0].bandwidth_kbps == 64),
        ("slicer", {}, lambda p: p.degradations[0].slicer),
        ("slow_close", {"ms": 500}, lambda p: p.degradations[0].slow_close_ms == 500),
        ("reset_peer", {}, lambda p: p.resets and not p.cuts),
        ("disable_links", {}, lambda p: p.disabled and not p.cuts),
    ],
)
def test_link_faults_land_in_their_field(kind: str, extra: dict[str, int], check) -> None:  # type: ignore[no-untyped-def]
    view = view_of()
    fault = make_fault(kind, {"from_side": "az-a", "to_side": "az-b", **extra})

    p = plan(fault, view)

    expected = {(a, b) for a, b in view.links() if az(view, a) == "az-a" and az(view, b) == "az-b"}
    links = p.degradations[0].links if p.degradations else (p.resets or p.disabled)
    assert links == expected
    assert check(p)


def test_reset_and_disable_count_as_broken_links_for_the_blast_radius() -> None:
    view = view_of()

    for fault in (
        ResetPeer("sn-a1", "*", both_ways=True),
        DisableLinks("sn-a1", "*", both_ways=True),
    ):
        assert plan(fault, view).affected_storage_nodes() == {"sn-a1"}


@pytest.mark.parametrize(
    ("kind", "params", "problem"),
    [
        ("latency", {"from_side": "az-a", "to_side": "*", "ms": -1}, "ms must be >= 0"),
        ("bandwidth", {"from_side": "az-a", "to_side": "*", "kbps": 0}, "kbps must be >= 1"),
        ("bit_rot", {"node": "sn-a1", "group": "any", "flips": 0}, "flips must be >= 1"),
        ("bit_rot", {"node": "sn-a1", "group": "any", "target": "disk"}, "target must be one of"),
        ("rolling_restart", {"role": "gac"}, "role must be one of storage, router, memds, all"),
    ],
)
def test_fault_parameters_are_checked(kind: str, params: dict[str, object], problem: str) -> None:
    with pytest.raises(PlanError, match=problem) as err:
        make_fault(kind, params)
    assert err.value.param in params


# --- unknown targets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            PowerOffAz("az-q"),
            "'az-q' is not an AZ of this 3x2x1 cluster; AZs: az-a, az-b, az-c",
        ),
        (
            PowerOffRack("az-a/r3"),
            "'az-a/r3' is not a rack of this 3x2x1 cluster; racks: az-a/r1, az-a/r2, az-b/r1",
        ),
        (
            PowerOffNode("sn-a3"),
            "'sn-a3' is not a process of this 3x2x1 cluster; storage nodes: sn-a1, sn-a2, sn-b1",
        ),
        (IsolateAz("az-d"), "'az-d' is not an AZ"),
        (Split("az-a|az-x"), "'az-x' is not an AZ, rack or process of this 3x2x1 cluster; AZs:"),
        (OneWay("sn-z1", "*"), "'sn-z1' is not an AZ, rack or process"),
        (Latency("az-a", "rt-q", 10), "'rt-q' is not an AZ, rack or process"),
        (BitRotFault("rt-a", "any"), "'rt-a' is not a storage node of this 3x2x1 cluster"),
    ],
)
def test_unknown_targets_say_what_exists(fault: object, message: str) -> None:
    with pytest.raises(UnknownTarget) as err:
        plan(fault, view_of())  # type: ignore[arg-type]

    assert message in str(err.value)
    assert str(err.value).startswith(fault.kind)  # type: ignore[attr-defined]
    assert err.value.param is not None


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        (Split("az-a"), "needs at least two sides"),
        (Split("az-a|az-a,az-b"), "is on two sides"),
        (Split("az-a|sn-a1"), "sn-a1 is on two sides"),
        (Split("*|*"), "only one side may be '*'"),
        (Split("az-a,|az-b"), "empty name"),
    ],
)
def test_malformed_sides(fault: Split, problem: str) -> None:
    with pytest.raises(PlanError, match=problem):
        plan(fault, view_of())


# --- blast radius --------------------------------------------------------------------------


def test_one_az_down_is_within_one_az() -> None:
    view = view_of()

    check_blast_radius([], plan(PowerOffAz("az-b"), view), BlastRadius(max_azs=1), view.topology)


def test_a_second_az_is_refused_with_a_clear_message() -> None:
    view = view_of()
    active = [plan(PowerOffAz("az-b"), view)]

    with pytest.raises(BlastRadiusExceeded) as err:
        check_blast_radius(active, plan(PowerOffNode("sn-a1"), view), BlastRadius(1), view.topology)

    text = str(err.value)
    assert "power_off_node(target=sn-a1)" in text and "power_off_az(target=az-b)" in text
    assert "2 of 3 AZs down (az-a, az-b), more than max_azs=1" in text


def test_same_az_twice_stays_within_one_az() -> None:
    view = view_of()
    active = [plan(PowerOffAz("az-b"), view)]

    check_blast_radius(
        active, plan(IsolateNode("sn-b1"), view), BlastRadius(1, 2, 2), view.topology
    )


def test_node_and_rack_limits() -> None:
    view = view_of("3x2x2")
    radius = BlastRadius(max_azs=None, max_nodes=2, max_racks=1)

    check_blast_radius([], plan(PowerOffRack("az-a/r1"), view), radius, view.topology)
    with pytest.raises(BlastRadiusExceeded, match="3 of 12 storage nodes down"):
        check_blast_radius(
            [plan(PowerOffRack("az-a/r1"), view)], plan(PauseNode("sn-a3"), view), radius,
            view.topology,
        )  # fmt: skip
    with pytest.raises(BlastRadiusExceeded, match=r"2 of 6 racks down.*max_racks=1"):
        check_blast_radius(
            [plan(PowerOffNode("sn-a1"), view)], plan(PowerOffNode("sn-b1"), view), radius,
            view.topology,
        )  # fmt: skip


def test_a_partition_counts_its_smaller_side() -> None:
    view = view_of()
    split = plan(Split("az-a|az-b,az-c"), view)

    check_blast_radius([], split, BlastRadius(max_azs=1, max_nodes=2), view.topology)
    with pytest.raises(BlastRadiusExceeded, match=r"az-a, az-c"):
        check_blast_radius(
            [split], plan(PowerOffNode("sn-c1"), view), BlastRadius(1), view.topology
        )


def test_degradations_take_nothing_down() -> None:
    view = view_of()
    active = [plan(PowerOffAz("az-b"), view)]

    check_blast_radius(active, plan(Latency("az-a", "*", 300), view), BlastRadius(1), view.topology)


def test_a_rolling_restart_counts_one_more_node_at_a_time() -> None:
    view = view_of()
    rolling = plan(RollingRestart("storage"), view)

    check_blast_radius([], rolling, BlastRadius(max_azs=1, max_nodes=1), view.topology)
    with pytest.raises(BlastRadiusExceeded, match="rolling restart"):
        check_blast_radius(
            [plan(PowerOffAz("az-b"), view)], rolling, BlastRadius(max_azs=1), view.topology
        )


def test_no_limits_allow_anything() -> None:
    view = view_of()
    active = [plan(PowerOffAz(a), view) for a in ("az-a", "az-b")]

    check_blast_radius(active, plan(PowerOffAz("az-c"), view), BlastRadius(), view.topology)


# --- plans as values, and the catalog ------------------------------------------------------


def test_planning_is_pure_given_the_seed() -> None:
    for fault in (Bridge(), MajoritiesRing(), RandomHalves(), MajorityOf("any")):
        assert plan(fault, view_of(seed=9)) == plan(fault, view_of(seed=9))


def test_plan_describe_reads_as_one_line() -> None:
    view = view_of()

    text = plan(PowerOffAz("az-b"), view).describe()
    cut = plan(Split("az-a|az-b,az-c"), view).describe()

    assert text.startswith("power_off_az(target=az-b): kill md-b, rt-b, sn-b1, sn-b2")
    assert "\n" not in cut and "cut 46 links" in cut and "+42 more" in cut
    assert FaultPlan().describe() == "no change"


def test_catalog_describes_every_fault() -> None:
    entries = describe_catalog()

    assert [e.kind for e in entries] == list(CATALOG)
    assert len(CATALOG) == 26
    for kind, description, parameters in entries:
        assert description and "\n" not in description, kind
        assert all(p.help for p in parameters), kind
    params = {e.kind: {p.name: p for p in e.parameters} for e in entries}
    assert params["power_off_az"]["target"].required
    assert params["latency"]["jitter_ms"].default == 0.0
    assert params["bit_rot"]["target"].type == "data|wal"
    assert params["bridge"] == {}
    # `gameday faults` tells power off from power loss by the page cache
    described = {e.kind: e.description for e in entries}
    assert "page cache survives" in described["power_off_node"]
    assert "unsynced writes are kept" in described["power_off_node"]
    assert "page cache dies" in described["power_loss_node"]
    assert "every byte not fsynced" in described["power_loss_node"]


def test_make_fault_names_missing_and_extra_parameters() -> None:
    assert make_fault("split", {"sides": "az-a|*"}) == Split("az-a|*")
    with pytest.raises(ValueError, match="power_off_az needs parameter target"):
        make_fault("power_off_az", {})
    with pytest.raises(ValueError, match="power_off_az has no parameter node; it takes: target"):
        make_fault("power_off_az", {"target": "az-a", "node": "sn-a1"})
    with pytest.raises(UnknownFaultKind, match="known kinds: power_off_node, power_off_rack"):
        make_fault("power_cut", {})


def test_make_fault_parses_command_line_strings() -> None:
    fault = make_fault(
        "latency", {"from_side": "az-a", "to_side": "*", "ms": "150", "both_ways": "yes"}
    )

    assert fault == Latency("az-a", "*", 150.0, both_ways=True)
    assert (
        make_fault("bit_rot", {"node": "sn-a1", "group": "any", "flips": "3"}).params()["flips"]
        == 3
    )
    cases: list[tuple[dict[str, object], str]] = [
        ({"ms": "fast"}, "latency parameter ms must be float, got 'fast'"),
        ({"ms": 10, "both_ways": "maybe"}, "both_ways must be bool"),
        ({"ms": True}, "ms must be float"),
        ({"ms": 10, "to_side": 5}, "to_side must be str"),
    ]
    for params, problem in cases:
        with pytest.raises(ValueError, match=problem):
            make_fault("latency", {"from_side": "az-a", "to_side": "*", **params})
    with pytest.raises(ValueError, match=r"flips must be int, got 2\.5"):
        make_fault("bit_rot", {"node": "sn-a1", "group": "any", "flips": 2.5})


def test_faults_are_hashable_values() -> None:
    assert {PowerOffAz("az-a"), PowerOffAz("az-a")} == {PowerOffAz("az-a")}
    assert PowerOffAz("az-a").params() == {"target": "az-a"}
    assert Latency("az-a", "*", 5).describe() == (  # parameters take their declared type
        "latency(from_side=az-a, to_side=*, ms=5.0, jitter_ms=0.0, both_ways=False)"
    )


def test_a_target_fault_kind_is_a_name_a_scope_and_an_effect() -> None:
    view = view_of()
    kinds = {k: c for k, c in CATALOG.items() if issubclass(c, TargetFault)}
    assert set(kinds) == {
        "power_off_node",
        "power_off_rack",
        "power_off_az",
        "power_loss_node",
        "power_loss_rack",
        "power_loss_az",
        "pause_node",
        "isolate_node",
        "isolate_az",
    }
    helps = {k: fault_params(c)[0].help for k, c in kinds.items()}
    assert helps["power_off_rack"].startswith("the rack") and helps["isolate_az"].startswith(
        "the AZ"
    )
    assert helps["pause_node"].startswith("the process")
    # Isolating a node is cutting exactly the links that touch it.
    assert plan(IsolateNode("sn-b1"), view).cuts == frozenset(
        (a, b) for a, b in view.links() if "sn-b1" in (a, b)
    )
    # Errors still name the field, whatever the scope.
    with pytest.raises(UnknownTarget) as err:
        plan(PowerOffRack("az-a"), view)
    assert err.value.param == "target" and "power_off_rack target" in str(err.value)
