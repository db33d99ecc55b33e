"""Availability math: windows, success ratios, recovery times, alarms, latency SLOs, canaries."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from checks.availability import check, check_availability, percentile
from checks.history import Operation, pair_operations
from checks.result import UNKNOWN
from checks.rundir import ClientSchedule, FaultWindow, RunDir, Slos
from tests.checks.helpers import event, history, op, write_jsonl
from workloads.schedule import Pacer

Outcome = Callable[[float], tuple[str, str | None]]


def ok_always(t: float) -> tuple[str, str | None]:
    return "ok", None


def failing(*spans: tuple[float, float]) -> Outcome:
    """Requests invoked inside any span time out (info); others succeed."""

    def outcome(t: float) -> tuple[str, str | None]:
        return ("info", "timeout") if any(a <= t < b for a, b in spans) else ("ok", None)

    return outcome


def traffic(
    seconds: int = 60,
    rate: int = 10,
    outcome: Outcome = ok_always,
    latency: float = 0.01,
    **kw: Any,
) -> list[Operation]:
    records = []
    for i in range(seconds * rate):
        t = i / rate
        kind, error = outcome(t)
        records += op(f"p{i % 7}", "get", None, t, t + latency, kind, error=error, result=1, **kw)
    return pair_operations(sorted(records, key=lambda rec: rec["time"]))


FAULT = FaultWindow("f1", "power_off_az", ("az-a",), 20.0, 30.0, True)
SLOS = Slos(availability=0.99, p99_ms=500.0, recovery_seconds=30.0)


def windows_of(result_details: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in result_details["windows"]}


def test_percentile_nearest_rank() -> None:
    assert percentile([], 99) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([float(i) for i in range(1, 101)], 100) == 100.0


def test_window_boundaries_are_half_open_on_invoke_time() -> None:
    ops = pair_operations(
        op("a", "get", None, 19.99, 20.5, result=1)
        + op("b", "get", None, 20.0, 20.1, result=1)
        + op("c", "get", None, 29.99, 30.2, result=1)
        + op("d", "get", None, 30.0, 30.1, result=1)
    )
    result = check_availability(ops, [FAULT], SLOS)
    windows = windows_of(result.details)
    assert windows["steady"]["requests"] == 2
    assert windows["f1"]["requests"] == 2


def test_ratios_and_conditional_failures_count_as_success() -> None:
    ops = pair_operations(
        op("a", "cas", [1, 2], 0, 0.1, "fail", error="ConditionalCheckFailedException")
        + op("a", "put", 1, 1, 1.1, "fail", error="ThrottlingException")
        + op("a", "put", 1, 2, 2.1)
        + op("a", "put", 1, 3, 3.1, "info")
    )
    overall = check_availability(ops, [], SLOS).details["overall"]
    assert (overall["requests"], overall["success"], overall["ratio"]) == (4, 2, 0.5)
    assert (overall["ok"], overall["fail"], overall["info"]) == (1, 2, 1)


def test_recovery_after_start_and_end() -> None:
    result = check_availability(traffic(outcome=failing((20, 25))), [FAULT], SLOS)
    f1 = windows_of(result.details)["f1"]
    assert f1["recovery_after_start"] == 5.0
    assert f1["recovery_after_end"] == 0.0
    assert f1["ratio"] == 0.5
    assert result.valid is False  # 50% < 99% in the fault window
    assert windows_of(result.details)["steady"]["ratio"] == 1.0


def test_recovery_is_zero_without_a_dip_and_measured_from_a_fractional_start() -> None:
    assert (
        windows_of(check_availability(traffic(), [FAULT], SLOS).details)["f1"][
            "recovery_after_start"
        ]
        == 0.0
    )
    late = FaultWindow("f1", "pause", ("sn-a1",), 20.5, 30.0, True)
    w = windows_of(check_availability(traffic(outcome=failing((20.5, 25))), [late], SLOS).details)
    assert w["f1"]["recovery_after_start"] == 4.5


def test_recovery_after_the_fault_ends() -> None:
    w = windows_of(check_availability(traffic(outcome=failing((22, 34))), [FAULT], SLOS).details)
    assert w["f1"]["recovery_after_start"] == 14.0  # from the fault start at 20 to second 34
    assert w["f1"]["recovery_after_end"] == 4.0


def test_never_recovering_violates_the_recovery_slo() -> None:
    result = check_availability(traffic(outcome=failing((22, 60))), [FAULT], SLOS)
    f1 = windows_of(result.details)["f1"]
    assert f1["recovery_after_start"] is None and f1["recovery_after_end"] is None
    assert any("did not recover" in v for v in result.details["violations"])


def test_slow_recovery_violates_a_tight_recovery_slo() -> None:
    ops = traffic(outcome=failing((20, 25)))
    lenient = Slos(availability=0.4, p99_ms=None, recovery_seconds=10.0)
    assert check_availability(ops, [FAULT], lenient).valid is True
    strict = Slos(availability=0.4, p99_ms=None, recovery_seconds=3.0)
    result = check_availability(ops, [FAULT], strict)
    assert result.valid is False
    assert "recovery after fault start 5.0 s > 3 s" in result.summary
    assert check_availability(ops, [FAULT], Slos(0.4, None, None)).valid is True


def test_alarm_fires_and_clears_on_the_trailing_window() -> None:
    result = check_availability(traffic(outcome=failing((20, 25))), [FAULT], SLOS)
    [alarm] = result.details["alarms"]
    assert alarm["start"] == 21.0  # end of the first failing second
    assert alarm["end"] == 30.0  # trailing 5 s window [25, 30) is clean again
    assert alarm["peak_error_rate"] == 1.0
    assert alarm["faults"] == ["f1"]
    assert windows_of(result.details)["f1"]["alarm_delay"] == 1.0
    # a blip below the threshold raises no alarm
    quiet = check_availability(traffic(outcome=failing((40, 40.1))), [], SLOS)
    assert quiet.details["alarms"] == []


def test_latency_percentiles_and_the_p99_slo() -> None:
    slow = traffic(latency=0.6)
    result = check_availability(slow, [], SLOS)
    steady = windows_of(result.details)["steady"]
    assert steady["p50_ms"] == pytest.approx(600.0) and steady["p99_ms"] == pytest.approx(600.0)
    assert result.valid is False and "p99 600 ms > 500 ms" in result.summary
    assert check_availability(slow, [], Slos(0.99, None, 30.0)).valid is True


def test_latency_percentiles_ignore_failed_requests() -> None:
    result = check_availability(traffic(outcome=failing((20, 21)), latency=0.02), [], SLOS)
    assert result.details["overall"]["p99_ms"] == pytest.approx(20.0)


def test_every_window_meeting_the_slos_is_valid() -> None:
    result = check_availability(traffic(outcome=failing((20, 20.1))), [FAULT], SLOS)
    assert result.valid is True
    assert "windows met the SLOs" in result.summary


def test_steady_window_has_its_own_availability_slo() -> None:
    ops = traffic(outcome=failing((5, 6), (20, 20.5)))  # steady 98.2%, fault window 95%
    lenient = Slos(availability=0.9, p99_ms=None, recovery_seconds=None)
    assert check_availability(ops, [FAULT], lenient).valid is True
    strict_steady = Slos(0.99, None, None, fault_availability=0.9)
    result = check_availability(ops, [FAULT], strict_steady)
    assert result.valid is False
    assert result.details["violations"] == ["steady: availability 98.00% < 99.00%"]


def test_no_requests_is_unknown() -> None:
    assert check_availability([], [FAULT], SLOS).valid == UNKNOWN


def test_canaries_per_az_and_router() -> None:
    canary = sorted(
        [
            *traffic(outcome=failing((20, 30)), az="az-a", router="rt-a"),
            *traffic(az="az-b", router="rt-a"),
        ],
        key=lambda o: o.invoke_time,
    )
    result = check_availability(traffic(), [FAULT], SLOS, canary_ops=canary)
    azs = result.details["canaries"]
    assert azs["az-a"]["windows"]["f1"] == 0.0
    assert azs["az-b"]["windows"]["f1"] == 1.0
    assert azs["az-a"]["ratio"] == pytest.approx(50 / 60)
    assert azs["az-a"]["routers"] == {"rt-a": pytest.approx(50 / 60)}
    assert result.valid is True  # canaries are reported, not judged


def test_check_reads_slos_and_windows_from_the_run_dir(tmp_path: Path) -> None:
    slos = {"availability": 0.4, "steady_availability": 0.9, "p99_ms": None}
    scenario = {"name": "az", "slos": slos, "alarm": {}}
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    write_jsonl(
        tmp_path / "events.jsonl",
        [
            event(0.0, "run_start"),
            event(20.0, "fault_start", "f1", fault="power_off_az", targets=["az-a"]),
            event(20.4, "fault_confirmed", "f1", fault="power_off_az", targets=["az-a"]),
            event(30.0, "fault_end", "f1", fault="power_off_az", targets=["az-a"]),
            event(40.0, "fault_start", "f2", fault="partition", targets=["az-b", "az-c"]),
            event(60.0, "run_end"),
        ],
    )
    records = []
    for i in range(600):
        t = i / 10
        kind = "info" if 20 <= t < 24 else "ok"
        records += op(f"p{i % 5}", "put", i, t, t + 0.01, kind)
    write_jsonl(tmp_path / "history.jsonl", sorted(records, key=lambda r: r["time"]))
    result = check(RunDir(tmp_path))
    windows = windows_of(result.details)
    assert list(windows) == ["steady", "f1", "f2"]
    assert windows["f1"]["label"] == "power_off_az az-a"
    assert windows["f2"]["end"] == 60.0 and windows["f2"]["ended"] is False
    assert result.details["slos"]["p99_ms"] is None
    assert result.details["slos"]["recovery_seconds"] == 30.0
    # a run directory from before steady_state was read: its derived "slos" block keeps its
    # meanings (availability: the fault windows', steady_availability: the steady one)
    assert result.details["slos"]["availability"] == 0.9
    assert result.details["slos"]["fault_availability"] == 0.4
    assert result.valid is True


def test_old_histories_without_a_schedule_are_judged_closed_loop_and_say_so() -> None:
    result = check_availability(traffic(), [FAULT], SLOS)
    assert result.details["loop"] == "closed"
    assert "coordinated omission" in result.details["note"]
    steady = windows_of(result.details)["steady"]
    assert steady["intended"] == steady["requests"] and steady["not_sent"] == 0


def open_loop(stall: tuple[float, float], deadline: float = 1.0) -> list[Operation]:
    """Two clients paced at 10 ops/s each from t=0 to 60 by the real Pacer, 10 ms per answer,
    except that an op sent in `stall` is answered only when the stall ends."""
    records = []
    for client in ("c0", "c1"):
        pacer, now = Pacer(10.0, 0.0, deadline), 0.0
        for _ in range(1000):
            slot = pacer.next_slot(now)
            if slot.intended >= 60:
                break
            sent = max(now, slot.intended)
            now = stall[1] if stall[0] <= sent < stall[1] else sent + 0.01
            records += op(f"{client}.0", "get", None, sent, now, result=1, intended=slot.intended)
    return pair_operations(sorted(records, key=lambda rec: rec["time"]))


def schedules(deadline: float = 1.0) -> list[ClientSchedule]:
    return [ClientSchedule(c, 10.0, 0.0, deadline, 60.0) for c in ("c0", "c1")]


def test_a_stalled_client_is_unavailable_for_every_op_it_intended() -> None:
    ops = open_loop(stall=(22.0, 27.0))
    result = check_availability(ops, [FAULT], SLOS, span=(0.0, 60.0), schedules=schedules())
    f1 = windows_of(result.details)["f1"]
    assert result.details["loop"] == "open"
    assert f1["intended"] == 200  # 2 clients x 10 ops/s x 10 s, whatever they managed to send
    # 22.1 .. 26.4 were dropped (over half the deadline late when the client got back); the op
    # due at 22.0 was answered 5 s later: too late
    assert f1["not_sent"] == 2 * 44 and f1["late"] == 2
    assert f1["ratio"] == pytest.approx((200 - 88 - 2) / 200)
    assert f1["ratio"] <= f1["served"] / f1["intended"]
    assert f1["throughput_ratio"] == pytest.approx(f1["served"] / 200)
    assert f1["client_time"] == pytest.approx(5 / 10)  # seconds 22 .. 26 bad for both clients
    assert f1["p99_ms"] == pytest.approx(5000.0)  # the stalled op, from its intended start
    # judged closed loop, the same history hides most of the stall
    closed = check_availability(ops, [FAULT], SLOS, span=(0.0, 60.0))
    assert windows_of(closed.details)["f1"]["ratio"] == 1.0


def test_answers_after_the_deadline_are_served_but_not_available() -> None:
    ops = open_loop(stall=(22.0, 22.5))  # 0.5 s late: within a 1 s deadline, not a 0.2 s one
    lenient = check_availability(ops, [FAULT], SLOS, span=(0.0, 60.0), schedules=schedules(1.0))
    strict = check_availability(ops, [FAULT], SLOS, span=(0.0, 60.0), schedules=schedules(0.2))
    assert windows_of(lenient.details)["f1"]["ratio"] == 1.0
    f1 = windows_of(strict.details)["f1"]
    assert f1["late"] == 8 and f1["served_ratio"] == 1.0
    assert f1["ratio"] == pytest.approx(0.96)


def test_a_zero_fault_availability_slo_is_kept(tmp_path: Path) -> None:
    from chaos.run import scenario_json
    from chaos.scenario import parse_scenario

    scenario = parse_scenario(
        "name: zero\nduration: 10s\nsteady_state: {availability: 0.99, fault_availability: 0.0}\n"
        "method: {timeline: []}\n"
    )
    (tmp_path / "scenario.json").write_text(scenario_json(scenario, tmp_path / "zero.yaml"))
    slos = RunDir(tmp_path).slos()
    assert slos.during_faults == 0.0 and slos.availability == 0.99


def test_retries_are_judged_with_their_first_attempt() -> None:
    records = history(
        # the first attempt times out (unknown), the retry is throttled, the third one succeeds
        op("c0.0", "put", "v1", 21.0, 21.5, "info", error="TimeoutError", intended=21.0),
        op(
            "c0.1",
            "put",
            "v2",
            21.6,
            21.7,
            "fail",
            error="ThrottlingException",
            intended=21.0,
            attempt=2,
        ),
        op("c0.1", "put", "v3", 21.8, 21.9, intended=21.0, attempt=3),
        # another op: its only attempt answered, after the 1 s deadline
        op("c0.1", "put", "v4", 23.0, 24.5, intended=23.0),
    )
    schedule = [ClientSchedule("c0", 0.5, 21.0, 1.0, 25.0)]  # ops due at 21, 23
    result = check_availability(
        pair_operations(records), [FAULT], SLOS, span=(20.0, 25.0), schedules=schedule
    )
    f1 = windows_of(result.details)["f1"]
    assert (f1["intended"], f1["requests"], f1["retried"]) == (2, 2, 1)
    assert (f1["served"], f1["success"], f1["late"]) == (2, 1, 1)
    assert f1["p50_ms"] == pytest.approx(900.0)  # 21.0 -> 21.9, from the first attempt's start
    closed = check_availability(pair_operations(records), [FAULT], SLOS, span=(20.0, 25.0))
    assert windows_of(closed.details)["f1"]["ratio"] == 1.0  # closed loop: both answered
