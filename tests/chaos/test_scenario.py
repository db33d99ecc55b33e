"""Scenario files: the shipped ones validate; broken ones say which file, field and problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chaos.faults import Latency, PowerOffAz
from chaos.scenario import (
    ALL_CHECKS,
    Scenario,
    ScenarioError,
    format_duration,
    load_scenario,
    parse_duration,
    parse_scenario,
)
from chaos.schedule import load_game_day

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.yaml"))
AZ_LEVEL = {"az-power-off", "az-partition", "demo", "random-power-off"}

GOOD = """\
name: small
duration: 60s
method:
  timeline:
    - {at: 10s, duration: 20s, fault: power_off_az, target: az-b}
    - {at: 40s, duration: 10s, fault: latency, from_side: az-a, to_side: "*", ms: 100}
"""


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    """The error of loading ``text`` as a game day: the document, then its schedule."""
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_game_day(path)
    assert str(path) in str(err.value)  # every error names the file
    return err.value


# --- the shipped scenarios -----------------------------------------------------------------


def test_the_expected_scenarios_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= {
        "node-power-off", "rack-power-off", "az-power-off", "az-partition", "leader-isolation",
        "gray-failure", "rolling-restart", "random-power-off", "demo",
    }  # fmt: skip


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_validates(path: Path) -> None:
    scenario = load_scenario(path)

    assert scenario.name == path.stem
    assert scenario.cluster.topology == "3x2x1"
    assert scenario.workload.name == ("bank" if path.stem.startswith("bank") else "register")
    assert tuple(scenario.checks) == ALL_CHECKS
    assert scenario.description
    if path.stem == "demo":
        assert 100 <= scenario.duration <= 150
    else:
        assert 40 <= scenario.duration <= 90, "short enough to run in CI"
    if path.stem in AZ_LEVEL:
        assert scenario.steady_state.fault_availability == 0.95
    assert scenario.stop_conditions
    assert Scenario.model_validate_json(scenario.to_json()) == scenario


def test_demo_powers_off_a_node_then_an_az_then_partitions_an_az() -> None:
    timeline = load_scenario(SCENARIOS / "demo.yaml").method.timeline or []

    assert [e.fault for e in timeline] == ["power_off_node", "power_off_az", "split"]
    ends = [e.at + e.duration for e in timeline]
    assert all(end <= nxt.at for end, nxt in zip(ends, timeline[1:], strict=False))  # healed


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0), (2.5, 2.5), ("30", 30.0), ("500ms", 0.5), ("30s", 30.0), ("2m", 120.0),
        ("1h", 3600.0), ("1m30s", 90.0), (" 45s ", 45.0), ("1.5m", 90.0), ("0s", 0.0),
    ],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3 mins", "s", "-5", "5d", "1m-3s", True, None, [1], "nan"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.5, 30, 90, 120, 0)] == [
        "500ms",
        "30s",
        "1m30s",
        "2m",
        "0s",
    ]


# --- a good file ---------------------------------------------------------------------------


def test_defaults_and_fault_objects(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD, "small.yaml"))

    assert scenario.duration == 60.0
    assert scenario.cluster.partitions == 4
    assert scenario.blast_radius.to_radius().max_azs == 1
    timeline = scenario.method.timeline or []
    assert [e.to_fault() for e in timeline] == [PowerOffAz("az-b"), Latency("az-a", "*", 100.0)]
    assert timeline[1].params() == {
        "from_side": "az-a", "to_side": "*", "ms": 100.0, "jitter_ms": 0.0, "both_ways": False
    }  # fmt: skip


def test_workload_names_and_table() -> None:
    scenario = parse_scenario(GOOD + "workload: {name: read-heavy}\n")

    assert scenario.workload.name == "read_heavy"
    assert scenario.workload.table_name() == "gameday-read-heavy"
    named = parse_scenario(GOOD + "workload: {name: rmw, table: mine}\n")
    assert named.workload.table_name() == "mine"


def test_slos_is_another_name_for_steady_state() -> None:
    a = parse_scenario(GOOD + "slos: {availability: 0.9, p99_ms: 200}\n")
    b = parse_scenario(GOOD + "steady_state: {availability: 0.9, p99_ms: 200}\n")

    assert a == b and a.steady_state.p99_ms == 200


def test_random_method(tmp_path: Path) -> None:
    scenario = parse_scenario(
        textwrap.dedent("""\
        name: r
        duration: 2m
        method:
          random:
            seed: 3
            faults: {power_off_node: 2, split: 1}
            min_duration: 5s
            max_duration: 10s
            min_gap: 1s
            max_gap: 2s
            targets: [az-a, az-b/r1]
        """)
    )

    spec = scenario.method.random
    assert spec is not None and spec.faults == {"power_off_node": 2, "split": 1}
    assert Scenario.model_validate_json(scenario.to_json()) == scenario


# --- malformed files: each names the file, the field and the problem -----------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    err = error_of(tmp_path, "name: x\nduration: 60s\nmethod:\n  timeline: [\n  bad: : :\n")

    assert "YAML syntax error" in str(err)
    assert err.problems[0].line is not None and err.problems[0].column is not None
    assert f"line {err.problems[0].line}, column {err.problems[0].column}" in str(err)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "duration: 90s\n")

    assert "duplicate key 'duration'" in str(err) and "line 7" in str(err)


def test_wrong_type(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "workload: {users: lots}\n")

    assert "workload.users (line 7): input should be a valid integer" in str(err)
    assert "'lots'" in str(err)


def test_unknown_field_lists_the_known_ones(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "workload: {colour: red}\n")

    assert "workload.colour" in str(err)
    assert "unknown field 'colour'; expected one of: name, users, keys" in str(err)


def test_unknown_fault_kind_lists_the_kinds(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        """\
        name: x
        duration: 60s
        method:
          timeline:
            - {at: 10s, duration: 5s, fault: power_cut, target: az-b}
        """,
    )

    assert "method.timeline[0].fault (line 5): unknown fault kind 'power_cut'" in str(err)
    assert "known kinds: power_off_node, power_off_rack, power_off_az" in str(err)


def test_bad_duration(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        """\
        name: x
        duration: 60s
        method:
          timeline:
            - {at: 10s, duration: 5s, fault: power_off_node, target: sn-a1}
            - {at: 20s, duration: 5s, fault: power_off_node, target: sn-a1}
            - {at: 30s, duration: 5 minutes, fault: power_off_node, target: sn-a1}
        """,
    )

    assert len(err.problems) == 1
    assert "method.timeline[2].duration (line 7): bad duration '5 minutes'" in str(err)
    assert "500ms, 30s, 2m" in str(err)


def test_timeline_entry_missing_a_parameter(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        """\
        name: x
        duration: 60s
        method:
          timeline:
            - {at: 10s, duration: 5s, fault: split}
        """,
    )

    assert "method.timeline[0].sides (line 5): split needs parameter 'sides'" in str(err)


def test_timeline_entry_with_an_extra_parameter(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        """\
        name: x
        duration: 60s
        method:
          timeline:
            - {at: 10s, duration: 5s, fault: power_off_az, target: az-a, node: sn-a1}
        """,
    )

    assert "method.timeline[0].node" in str(err)
    assert "power_off_az has no parameter 'node'; it takes: target" in str(err)


def test_timeline_entry_missing_at(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace("at: 10s, ", ""))

    assert "method.timeline[0].at (line 5): required, but missing" in str(err)


def test_fault_parameter_out_of_range(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace("ms: 100", "ms: -5"))

    assert "method.timeline[1].ms (line 6): ms must be >= 0" in str(err)


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace("60s", "forever") + "workload: {name: chess}\n")

    assert len(err.problems) == 2
    assert "2 problems" in str(err)
    assert {p.field for p in err.problems} == {"duration", "workload.name"}


def test_unknown_target_is_found_at_load_time(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace("target: az-b", "target: az-q"))

    assert "method.timeline[0].target (line 5)" in str(err)
    assert "'az-q' is not an AZ of this 3x2x1 cluster; AZs: az-a, az-b, az-c" in str(err)


def test_unknown_group_is_found_at_load_time(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        GOOD.replace("fault: power_off_az, target: az-b", "fault: leader_isolation, group: t.p0"),
    )

    assert "method.timeline[0].group" in str(err)
    assert "'t.p0' is not a replication group of this cluster" in str(err)
    assert "groups: gameday-register.p0, gameday-register.p1, gameday-register.p2" in str(err)


def test_blast_radius_is_checked_at_load_time(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        """\
        name: x
        duration: 60s
        blast_radius: {max_azs: 1}
        method:
          timeline:
            - {at: 10s, duration: 20s, fault: power_off_az, target: az-b}
            - {at: 20s, duration: 20s, fault: power_off_node, target: sn-c1}
        """,
    )

    assert "method.timeline[1] (line 7): blast radius exceeded" in str(err)
    assert "2 of 3 AZs down (az-b, az-c), more than max_azs=1" in str(err)


def test_fault_ending_after_the_scenario(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD.replace("at: 40s, duration: 10s", "at: 50s, duration: 20s"))

    assert "method.timeline[1].duration (line 6): this fault ends at 1m10s" in str(err)
    assert "after the scenario (duration 1m)" in str(err)


@pytest.mark.parametrize(
    ("method", "problem"),
    [
        ("method: {}", "method (line 3): give exactly one of 'timeline'"),
        (
            "method: {timeline: [], random: {seed: 1, faults: {split: 1}}}",
            "give exactly one of 'timeline'",
        ),
        (
            "method: {random: {seed: 1, faults: {zap: 1}}}",
            "method.random.faults (line 3): unknown fault kind 'zap'",
        ),
        (
            "method: {random: {seed: 1, faults: {split: 0}}}",
            "the weight of split must be above zero",
        ),
        (
            "method: {random: {seed: 1, faults: {split: 1}, min_gap: 5s, max_gap: 1s}}",
            "method.random.max_gap (line 3): must not be shorter than min_gap",
        ),
        (
            "method: {random: {seed: 1, faults: {split: 1}, parameters: {split: {ms: 3}}}}",
            "split has no parameter ms; it takes: sides",
        ),
        (
            "method: {random: {seed: 1, faults: {split: 1}, targets: [az-a, az-z]}}",
            "method.random.targets[1] (line 3): 'az-z' is not an AZ, rack or storage node",
        ),
    ],
)
def test_method_problems(tmp_path: Path, method: str, problem: str) -> None:
    err = error_of(tmp_path, f"name: x\nduration: 60s\n{method}\n")

    assert problem in str(err)


def test_missing_required_fields(tmp_path: Path) -> None:
    err = error_of(tmp_path, "description: nothing else\n")

    assert {p.field for p in err.problems} == {"name", "duration", "method"}
    assert "required, but missing" in str(err)


def test_bad_topology(tmp_path: Path) -> None:
    err = error_of(tmp_path, GOOD + "cluster: {topology: 2x2x1}\n")

    assert "cluster.topology (line 7): topology '2x2x1': at least 3 AZs are needed" in str(err)


def test_timeline_entry_that_is_not_a_mapping(tmp_path: Path) -> None:
    err = error_of(tmp_path, "name: x\nduration: 60s\nmethod:\n  timeline:\n    - power_off_node\n")

    assert "method.timeline[0] (line 5): a timeline entry is a mapping" in str(err)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "the file is empty"), ("- a\n- b\n", "a scenario is a mapping")],
)
def test_not_a_scenario_at_all(tmp_path: Path, text: str, problem: str) -> None:
    assert problem in str(error_of(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read the file"):
        load_scenario(tmp_path / "nope.yaml")


def test_a_scenario_is_a_document_and_its_schedule_is_checked_once(tmp_path: Path) -> None:
    text = GOOD.replace("target: az-b", "target: az-q")
    path = write(tmp_path, text)

    assert load_scenario(path).name  # the document alone is fine: targets are the schedule's
    with pytest.raises(ScenarioError, match=r"method.timeline\[0\].target \(line 5\)"):
        load_game_day(path)
