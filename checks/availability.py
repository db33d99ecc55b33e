"""Availability as the clients saw it: success ratio per second, per fault window and per AZ,
time to recover, customer-facing alarms and latency percentiles, judged against the scenario SLOs.

    >>> result = check(RunDir(path))                      # doctest: +SKIP
    >>> [(w["label"], w["ratio"]) for w in result.details["windows"]]   # doctest: +SKIP
    [('steady', 1.0), ('power_off_az az-a', 0.981)]

Definitions (all from history.jsonl, canary.jsonl and events.jsonl):

- A request counts in the second (and windows) of its *invoke*: that is when the client needed
  the service. It succeeded if it is ok, or a fail with ConditionalCheckFailed (the service
  answered correctly); other fails and info (unknown, timed out) are failures. Ratio =
  successes / requests.
- Windows: one per fault, [fault_start, fault_end), and "steady" for requests outside every fault
  window. Fault windows are judged against `slos.availability`, steady against
  `slos.steady_availability` when set. Latency percentiles are over successful requests, in ms.
- Recovery after a fault starts: if some second overlapping the window dips below the (fault
  window) availability SLO, the time from fault_start to the first later second back at or above it
  (0 when it never dipped). Recovery after it ends: from fault_end to the first non-empty second
  at or after it that meets the SLO. None: never recovered within the run.
- Alarms: at the end of every second, the error rate over the trailing `window_seconds`; an alarm
  fires when it exceeds `error_rate` and clears when it no longer does.
- Canaries (per AZ, per router) are reported, not judged: an AZ that is powered off is expected to
  fail its own probes.

Valid iff every window meets the availability SLO, the p99 latency SLO (if set) and the recovery
SLO (if set); unknown when the history has no requests.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from checks.history import Operation
from checks.result import UNKNOWN, CheckResult, Validity
from checks.rundir import FaultWindow, RunDir, Slos

NAME = "availability"
STEADY = "steady"


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _latency_ms(op: Operation) -> float | None:
    return None if op.latency is None else op.latency * 1000.0


def summarise(ops: Sequence[Operation]) -> dict[str, Any]:
    """Counts, success ratio and latency percentiles of a set of requests."""
    success = sum(1 for op in ops if op.succeeded)
    latencies = [ms for op in ops if op.succeeded and (ms := _latency_ms(op)) is not None]
    return {
        "requests": len(ops),
        "success": success,
        "ok": sum(1 for op in ops if op.type == "ok"),
        "fail": sum(1 for op in ops if op.type == "fail"),
        "info": sum(1 for op in ops if op.type == "info"),
        "ratio": success / len(ops) if ops else None,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
    }


def per_second(ops: Sequence[Operation], start: float, end: float) -> list[dict[str, Any]]:
    """One entry per whole second, from the one holding `start` to the last one that begins
    before `end` (or holds a request)."""
    buckets: dict[int, list[Operation]] = defaultdict(list)
    for op in ops:
        buckets[math.floor(op.invoke_time)].append(op)
    first = min([math.floor(start), *buckets], default=0)
    last = max([math.ceil(end) - 1, *buckets], default=first)
    return [{"t": s, **summarise(buckets.get(s, []))} for s in range(first, last + 1)]


def recovery_after_start(
    series: Sequence[dict[str, Any]], window: FaultWindow, slo: float
) -> float | None:
    """Seconds from the fault's start until availability is back to `slo` after dipping."""
    dipped = False
    for second in series:
        t, ratio = second["t"], second["ratio"]
        if t + 1 <= window.start or ratio is None:
            continue
        if not dipped:
            if t >= window.end:
                return 0.0
            dipped = ratio < slo
        elif ratio >= slo:
            return max(0.0, float(t) - window.start)
    return None if dipped else 0.0


def recovery_after_end(
    series: Sequence[dict[str, Any]], window: FaultWindow, slo: float
) -> float | None:
    """Seconds from the fault's end until the first second at or after it meeting `slo`."""
    for second in series:
        ratio = second["ratio"]
        if second["t"] + 1 > window.end and ratio is not None and ratio >= slo:
            return max(0.0, float(second["t"]) - window.end)
    return None


def alarms(
    series: Sequence[dict[str, Any]], slos: Slos, windows: Sequence[FaultWindow]
) -> list[dict[str, Any]]:
    """Customer-facing alarms: trailing-window error rate above the threshold."""
    width = max(1, round(slos.alarm_window_seconds))
    fired: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i, second in enumerate(series):
        recent = series[max(0, i - width + 1) : i + 1]
        total = sum(s["requests"] for s in recent)
        if not total:
            continue
        rate = 1.0 - sum(s["success"] for s in recent) / total
        at = float(second["t"] + 1)
        if rate > slos.alarm_error_rate:
            if current is None:
                current = {"start": at, "end": None, "peak_error_rate": rate}
                fired.append(current)
            current["peak_error_rate"] = max(current["peak_error_rate"], rate)
        elif current is not None:
            current["end"] = at
            current = None
    for alarm in fired:
        end = math.inf if alarm["end"] is None else alarm["end"]
        alarm["faults"] = [
            w.fault_id
            for w in windows
            if w.start < end and alarm["start"] <= w.end + slos.alarm_window_seconds + 1
        ]
    return fired


def canaries(
    ops: Sequence[Operation], windows: Sequence[FaultWindow], start: float, end: float
) -> dict[str, Any]:
    """Canary availability per AZ (overall, per window, per second) and per AZ x router."""
    per_az: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        per_az[op.az or "?"].append(op)
    out: dict[str, Any] = {}
    for az, az_ops in sorted(per_az.items()):
        routers: dict[str, list[Operation]] = defaultdict(list)
        for op in az_ops:
            routers[op.router or "?"].append(op)
        out[az] = {
            **summarise(az_ops),
            "windows": {
                w.fault_id: summarise([op for op in az_ops if w.contains(op.invoke_time)])["ratio"]
                for w in windows
            },
            "routers": {r: summarise(rops)["ratio"] for r, rops in sorted(routers.items())},
            "series": [[s["t"], s["ratio"]] for s in per_second(az_ops, start, end)],
        }
    return out


def _window_entry(
    label: str,
    window: FaultWindow | None,
    ops: Sequence[Operation],
    keep: Callable[[Operation], bool],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": window.fault_id if window else STEADY,
        "label": label,
        "fault": window.fault if window else None,
        "targets": list(window.targets) if window else [],
        "start": window.start if window else None,
        "end": window.end if window else None,
        "ended": window.ended if window else None,
    }
    entry.update(summarise([op for op in ops if keep(op)]))
    return entry


def judge(entry: dict[str, Any], slos: Slos) -> list[str]:
    """The SLO violations of one window entry (empty when it meets them all)."""
    problems = []
    label = entry["label"]
    target = slos.steady if entry["id"] == STEADY else slos.availability
    if entry["ratio"] is not None and entry["ratio"] < target:
        problems.append(f"{label}: availability {entry['ratio']:.2%} < {target:.2%}")
    p99 = entry["p99_ms"]
    if slos.p99_ms is not None and p99 is not None and p99 > slos.p99_ms:
        problems.append(f"{label}: p99 {p99:.0f} ms > {slos.p99_ms:g} ms")
    if slos.recovery_seconds is not None and entry["id"] != STEADY:
        for when in ("start", "end"):
            if when == "end" and not entry["ended"]:
                continue
            took = entry[f"recovery_after_{when}"]
            if took is None:
                problems.append(f"{label}: did not recover after the fault {when}ed")
            elif took > slos.recovery_seconds:
                problems.append(
                    f"{label}: recovery after fault {when} {took:.1f} s"
                    f" > {slos.recovery_seconds:g} s"
                )
    return problems


def check_availability(
    ops: Sequence[Operation],
    windows: Sequence[FaultWindow],
    slos: Slos,
    *,
    span: tuple[float, float] | None = None,
    canary_ops: Sequence[Operation] = (),
) -> CheckResult:
    """Availability of `ops` overall, per fault window and steady, against `slos`."""
    start, end = span or (
        min((op.invoke_time for op in ops), default=0.0),
        max((op.invoke_time for op in ops), default=0.0),
    )
    series = per_second(ops, start, end)
    entries = [
        _window_entry(
            STEADY, None, ops, lambda op: not any(w.contains(op.invoke_time) for w in windows)
        )
    ]
    for w in windows:
        entry = _window_entry(w.label, w, ops, w.contains_op)
        entry["recovery_after_start"] = recovery_after_start(series, w, slos.availability)
        entry["recovery_after_end"] = (
            recovery_after_end(series, w, slos.availability) if w.ended else None
        )
        entries.append(entry)
    fired = alarms(series, slos, windows)
    for entry in entries[1:]:
        delays = [a["start"] - entry["start"] for a in fired if entry["id"] in a["faults"]]
        entry["alarm_delay"] = min(delays) if delays else None
    violations = [p for entry in entries for p in judge(entry, slos)]
    for entry in entries:
        entry["meets_slo"] = not judge(entry, slos)
    overall = summarise(ops)
    details: dict[str, Any] = {
        "slos": {
            "availability": slos.availability,
            "steady_availability": slos.steady,
            "p99_ms": slos.p99_ms,
            "recovery_seconds": slos.recovery_seconds,
            "alarm_error_rate": slos.alarm_error_rate,
            "alarm_window_seconds": slos.alarm_window_seconds,
        },
        "span": [start, end],
        "overall": overall,
        "windows": entries,
        "violations": violations,
        "alarms": fired,
        "canaries": canaries(canary_ops, windows, start, end),
        "series": series,
    }
    valid: Validity
    if not ops:
        valid, summary = UNKNOWN, "no requests in the history"
    elif violations:
        valid = False
        summary = f"{len(violations)} SLO violations: " + "; ".join(violations[:3])
    else:
        valid = True
        judged = [e for e in entries if e["ratio"] is not None]
        worst = min(judged, key=lambda e: e["ratio"])
        summary = (
            f"all {len(judged)} windows met the SLOs (overall {overall['ratio']:.2%},"
            f" worst {worst['label']} {worst['ratio']:.2%}; {len(fired)} alarms)"
        )
    return CheckResult(NAME, valid, summary, details)


def check(run: RunDir) -> CheckResult:
    """The availability check of a run directory."""
    if run.history is None:
        return CheckResult(NAME, UNKNOWN, "no history.jsonl in the run directory")
    return check_availability(
        run.history,
        run.fault_windows(),
        run.slos(),
        span=run.span(),
        canary_ops=run.canary or [],
    )
