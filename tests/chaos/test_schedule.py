"""Schedules: explicit timelines resolve in order; random ones are seeded, bounded and safe."""

from __future__ import annotations

import json
import textwrap
from itertools import pairwise
from typing import Any

import pytest

from chaos.faults import (
    CATALOG,
    BlastRadiusExceeded,
    PowerOffAz,
    PowerOffNode,
    Split,
    check_blast_radius,
    plan,
)
from chaos.scenario import Scenario, parse_scenario
from chaos.schedule import (
    DRAWERS,
    ScheduleError,
    TimedFault,
    assumed_view,
    build_timeline,
    timeline_from_json,
    timeline_to_json,
)


def scenario_with(random: dict[str, Any], duration: str = "3m", **extra: Any) -> Scenario:
    data: dict[str, Any] = {"name": "s", "duration": duration, "method": {"random": random}}
    return Scenario.model_validate({**data, **extra})


MIXED_KINDS = {"power_off_node": 3, "power_off_rack": 2, "power_off_az": 2, "split": 1,
               "isolate_node": 1, "pause_node": 1, "leader_isolation": 1, "latency": 1}  # fmt: skip
MIXED = {
    "seed": 1,
    "faults": MIXED_KINDS,
    "min_duration": "5s",
    "max_duration": "20s",
    "min_gap": "2s",
    "max_gap": "10s",
}  # fmt: skip


def test_explicit_timeline_in_start_order() -> None:
    scenario = parse_scenario(
        textwrap.dedent("""\
        name: e
        duration: 90s
        method:
          timeline:
            - {at: 50s, duration: 10s, fault: split, sides: "az-a|*"}
            - {at: 10s, duration: 20s, fault: power_off_az, target: az-b}
        """)
    )

    timeline = build_timeline(scenario, scenario.topology())

    assert [(t.fault_id, t.at_s, t.duration_s, t.fault) for t in timeline] == [
        ("f1", 10.0, 20.0, PowerOffAz("az-b")),
        ("f2", 50.0, 10.0, Split("az-a|*")),
    ]
    assert build_timeline(scenario) == timeline  # plan seeds included


def test_explicit_timeline_errors_point_at_the_entry() -> None:
    scenario = Scenario.model_validate(
        {
            "name": "e",
            "duration": 60,
            "method": {"timeline": [{"at": 1, "duration": 5, "fault": "split", "sides": "az-a|q"}]},
        }
    )

    with pytest.raises(ScheduleError) as err:
        build_timeline(scenario)

    assert err.value.loc == ("method", "timeline", 0, "sides")
    assert str(err.value).startswith("method.timeline[0].sides: split sides: 'q' is not")


@pytest.mark.parametrize("seed", range(5))
def test_same_seed_same_timeline(seed: int) -> None:
    a = build_timeline(scenario_with({**MIXED, "seed": seed}))
    b = build_timeline(scenario_with({**MIXED, "seed": seed}))

    assert a == b and a


def test_different_seeds_differ() -> None:
    timelines = {
        timeline_to_json(build_timeline(scenario_with({**MIXED, "seed": s}))) for s in range(10)
    }

    assert len(timelines) == 10


@pytest.mark.parametrize("max_concurrent", [1, 2, 3])
def test_random_timelines_respect_bounds_and_blast_radius(max_concurrent: int) -> None:
    """Over many seeds: durations, gaps, the end of the run, concurrency and the blast radius."""
    for seed in range(60):
        spec = {**MIXED, "seed": seed, "max_concurrent": max_concurrent}
        scenario = scenario_with(spec, blast_radius={"max_azs": 1, "max_nodes": 2})
        topology = scenario.topology()
        timeline = build_timeline(scenario, topology)

        assert timeline, seed
        assert [t.fault_id for t in timeline] == [f"f{i}" for i in range(1, len(timeline) + 1)]
        assert all(5 <= t.duration_s <= 20 for t in timeline)
        assert all(t.end_s <= scenario.duration - 2 for t in timeline)  # quiet tail of min_gap
        assert timeline[0].at_s >= 2
        assert all(a.at_s <= b.at_s for a, b in pairwise(timeline))
        if max_concurrent == 1:
            assert all(b.at_s - a.end_s >= 2 for a, b in pairwise(timeline))
        plans = [plan(t.fault, assumed_view(scenario, topology, t.plan_seed)) for t in timeline]
        for i, t in enumerate(timeline):
            overlapping = [plans[j] for j in range(i) if timeline[j].overlaps(t.at_s, t.end_s)]
            assert len(overlapping) < max_concurrent
            check_blast_radius(overlapping, plans[i], scenario.blast_radius.to_radius(), topology)


def test_the_blast_radius_makes_a_difference() -> None:
    """Without limits, overlapping draws would take down two AZs; with max_azs=1, never."""
    spec = {**MIXED, "faults": {"power_off_az": 1}, "max_concurrent": 2, "min_gap": 0, "max_gap": 1}

    unlimited = build_timeline(scenario_with(spec, blast_radius={"max_azs": None}))
    limited = build_timeline(scenario_with(spec, blast_radius={"max_azs": 1}))

    def two_azs_at_once(timeline: list[TimedFault]) -> bool:
        return any(
            a.overlaps(b.at_s, b.end_s) and a.fault != b.fault
            for i, a in enumerate(timeline)
            for b in timeline[i + 1 :]
        )

    assert two_azs_at_once(unlimited)
    assert not two_azs_at_once(limited)
    for a, b in pairwise(limited):
        if a.fault == b.fault:
            continue
        assert not a.overlaps(b.at_s, b.end_s)


def test_a_radius_nothing_fits_in_gives_an_empty_timeline() -> None:
    spec = {**MIXED, "faults": {"power_off_az": 1}}

    assert build_timeline(scenario_with(spec, blast_radius={"max_azs": 0})) == []


def test_only_weighted_kinds_are_drawn() -> None:
    kinds = {
        t.fault.kind for s in range(20) for t in build_timeline(scenario_with({**MIXED, "seed": s}))
    }

    assert kinds == set(MIXED_KINDS)


def test_targets_restrict_what_random_faults_hit() -> None:
    spec = {**MIXED, "faults": {"power_off_node": 1, "power_off_rack": 1, "power_off_az": 1},
            "targets": ["az-b", "az-c/r1"]}  # fmt: skip

    for seed in range(20):
        for t in build_timeline(scenario_with({**spec, "seed": seed})):
            target = t.fault.params()["target"]
            assert target in {"az-b", "az-b/r1", "az-b/r2", "sn-b1", "sn-b2", "az-c/r1", "sn-c1"}


def test_unknown_random_target() -> None:
    with pytest.raises(ScheduleError) as err:
        build_timeline(scenario_with({**MIXED, "targets": ["az-b", "rack-9"]}))

    assert err.value.loc == ("method", "random", "targets", 1)
    assert "'rack-9' is not an AZ, rack or storage node" in str(err.value)


def test_fixed_parameters_override_draws() -> None:
    spec = {
        **MIXED,
        "faults": {"latency": 1},
        "parameters": {"latency": {"ms": 333, "to_side": "az-c"}},
    }

    timeline = build_timeline(scenario_with(spec))

    assert timeline
    assert all(t.fault.params()["ms"] == 333 for t in timeline)
    assert all(t.fault.params()["to_side"] == "az-c" for t in timeline)


def test_bad_fixed_parameter_is_reported_where_it_was_written() -> None:
    spec = {**MIXED, "faults": {"latency": 1}, "parameters": {"latency": {"to_side": "az-q"}}}

    with pytest.raises(ScheduleError) as err:
        build_timeline(scenario_with(spec))

    assert err.value.loc == ("method", "random", "parameters", "latency", "to_side")


@pytest.mark.parametrize("kind", sorted(CATALOG))
def test_every_kind_can_be_drawn(kind: str) -> None:
    assert kind in DRAWERS
    unlimited = {"max_azs": None}
    timeline = build_timeline(scenario_with({**MIXED, "faults": {kind: 1}}, blast_radius=unlimited))

    assert timeline and all(t.fault.kind == kind for t in timeline)


def test_a_fault_that_fits_nowhere_ends_the_schedule() -> None:
    spec = {**MIXED, "min_duration": "50s", "max_duration": "50s", "min_gap": "5s", "max_gap": "5s"}

    timeline = build_timeline(scenario_with(spec, duration="100s"))

    # a second fault would run from 60 s to 110 s: past the end less the quiet tail (95 s)
    assert [(t.at_s, t.end_s) for t in timeline] == [(5.0, 55.0)]


# --- JSON ----------------------------------------------------------------------------------


def test_timeline_round_trips_through_json() -> None:
    timeline = build_timeline(scenario_with(MIXED))

    text = timeline_to_json(timeline)

    assert timeline_from_json(text) == timeline
    first = json.loads(text)[0]
    assert set(first) == {"id", "at", "duration", "fault", "params", "plan_seed"}


def test_timed_fault_dict_form() -> None:
    tf = TimedFault(30.0, PowerOffNode("sn-a1"), 20.0, "f1", 7)

    assert tf.to_dict() == {
        "id": "f1", "at": 30.0, "duration": 20.0, "fault": "power_off_node",
        "params": {"target": "sn-a1"}, "plan_seed": 7,
    }  # fmt: skip
    assert TimedFault.from_dict(tf.to_dict()) == tf
    assert tf.end_s == 50.0
    assert tf.plan_rng().random() == TimedFault.from_dict(tf.to_dict()).plan_rng().random()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"id": "f1", "at": 1, "duration": 2, "fault": "nope"}, "unknown fault kind 'nope'"),
        ({"id": "f1", "at": 1, "fault": "bridge"}, "lacks 'duration'"),
        ({"id": "f1", "at": 1, "duration": 2, "fault": "split", "params": {}}, "needs parameter"),
    ],
)
def test_timed_fault_from_bad_dict(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TimedFault.from_dict(data)


def test_timeline_json_must_be_a_list() -> None:
    with pytest.raises(ValueError, match="JSON list"):
        timeline_from_json("{}")


def test_blast_radius_refusal_is_an_exception_not_a_skip_for_explicit_timelines() -> None:
    scenario = Scenario.model_validate(
        {
            "name": "e",
            "duration": 60,
            "blast_radius": {"max_nodes": 1},
            "method": {
                "timeline": [{"at": 1, "duration": 5, "fault": "power_off_az", "target": "az-a"}]
            },
        }
    )

    with pytest.raises(ScheduleError, match="more than max_nodes=1") as err:
        build_timeline(scenario)
    assert err.value.loc == ("method", "timeline", 0)
    assert not isinstance(err.value, BlastRadiusExceeded)
