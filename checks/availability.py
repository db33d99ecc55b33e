"""Availability as the clients saw it: per fault window, per second and per AZ, intended against
served, time to recover, customer-facing alarms and latency percentiles, judged against the SLOs.

    >>> result = check(RunDir(path))                      # doctest: +SKIP
    >>> [(w["label"], w["ratio"]) for w in result.details["windows"]]   # doctest: +SKIP
    [('steady', 1.0), ('power_off_az az-a', 0.981)]

Definitions (from history.jsonl, schedule.jsonl, canary.jsonl and events.jsonl):

- Open loop (the run has schedule.jsonl, workloads/schedule.py): every client had a fixed
  schedule of intended op starts. *Intended* ops of a window are the schedule's slots in it,
  whether or not the client managed to send them; an op belongs to the window of its intended
  start, and its latency counts from there (no coordinated omission). *Served*: ok, or a fail
  with ConditionalCheckFailed (the service answered correctly). An op is *available* when it was
  served within its deadline (the schedule's, from the intended start). Availability (`ratio`)
  = available / intended, so an op never sent, sent late, failed, unknown or answered after its
  deadline all count against it, and `ratio <= served / intended` always.
- Closed loop (older runs, or `rate: null`): there is no schedule; intended = the requests the
  clients sent, counted at their invoke, and availability = served / sent. A client blocked on a
  hung request sends nothing, so stalls hide from this ratio; the report says so.
- Retries: an invoke with ``attempt`` 2, 3, ... retries the client's previous op; the op is
  judged by its last attempt, from the first attempt's start (the SDK's caller sees only that).
- Throughput ratio: served per second in a window against served per second in steady state
  (outside every fault), both over the time the load ran.
- Client-time availability: the share of client-seconds (one client, one second of the window)
  in which every op that client intended was available.
- Windows: one per fault, [fault_start, fault_end), and "steady" for everything outside every
  fault window. Steady is judged against `slos.availability`, fault windows against
  `slos.fault_availability` (`availability` when unset), as the scenario's `steady_state`
  says. Latency percentiles are over served ops, in ms.
- Recovery after a fault starts: if some second overlapping the window dips below the (fault
  window) availability SLO, the time from fault_start to the first later second back at or above it
  (0 when it never dipped). Recovery after it ends: from fault_end to the first non-empty second
  at or after it that meets the SLO. None: never recovered within the run.
- Alarms: at the end of every second, the error rate (1 - available / intended) over the trailing
  `window_seconds`; an alarm fires when it exceeds `error_rate` and clears when it no longer does.
- Canaries (per AZ, per router) are reported, not judged: an AZ that is powered off is expected to
  fail its own probes.

Valid iff every window meets the availability SLO, the p99 latency SLO (if set) and the recovery
SLO (if set); unknown when nothing was intended.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from checks.history import Operation
from checks.result import UNKNOWN, CheckResult, Validity
from checks.rundir import ClientSchedule, FaultWindow, RunDir, Slos

NAME = "availability"
STEADY = "steady"
OPEN_LOOP = "open"
CLOSED_LOOP = "closed"
CLOSED_LOOP_NOTE = (
    "closed loop: no intended schedule was recorded, so availability is served / sent requests;"
    " a client stuck on a hung request sends nothing, which hides stalls (coordinated omission)"
)
OPEN_LOOP_NOTE = (
    "open loop: availability is ops served within their deadline / ops intended by the clients'"
    " schedules; latency counts from the intended start"
)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Request:
    """One sent op as availability sees it: when it was needed and how it was answered."""

    start: float  # the intended start (open loop) or the invoke time
    client: str
    type: str  # ok / fail / info
    served: bool  # ok, or a correctly refused condition
    available: bool  # served within the deadline
    done: float | None  # completion time (of the last attempt)
    latency_ms: float | None  # from `start`, when served
    attempts: int = 1


def requests_of(ops: Sequence[Operation], schedules: Sequence[ClientSchedule]) -> list[Request]:
    """The history's client ops, each with its retries (invokes with ``attempt`` 2, 3, ...)
    folded in, intended starts snapped to their client's schedule. An op is served if one of
    its attempts was, available if that happened within the deadline from its start."""
    by_client = {s.client: s for s in schedules}
    out: list[Request] = []
    last: dict[str, int] = {}  # client -> index in `out` of its latest op
    for op in sorted(ops, key=lambda o: o.index):
        schedule = by_client.get(op.client) if op.intended is not None else None
        retry = op.attempt is not None and op.attempt > 1 and op.client in last
        first = out[last[op.client]] if retry else None
        start = (
            first.start
            if first is not None
            else schedule.slot_of(op.start)
            if schedule is not None
            else op.start
        )
        done = op.complete_time
        took = None if done is None else max(0.0, done - start)
        if took is not None and schedule is None and first is None and op.latency is not None:
            took = op.latency  # closed loop, first attempt: the recorded service time
        in_time = took is not None and (schedule is None or took <= schedule.deadline)
        request = Request(
            start=start,
            client=op.client,
            type=op.type,
            served=op.succeeded,
            available=op.succeeded and in_time,
            done=done,
            latency_ms=None if took is None or not op.succeeded else took * 1000.0,
            attempts=1 if first is None else first.attempts + 1,
        )
        if first is not None:
            out[last[op.client]] = request
        else:
            last[op.client] = len(out)
            out.append(request)
    return out


class Intent:
    """How many ops the clients intended in a time range: schedule slots, plus (for clients
    without a schedule) the requests they sent."""

    def __init__(
        self, schedules: Sequence[ClientSchedule], requests: Sequence[Request], run_end: float
    ) -> None:
        self.schedules = list(schedules)
        self.run_end = run_end
        scheduled = {s.client for s in schedules}
        self.unscheduled = sorted(r.start for r in requests if r.client not in scheduled)
        self.scheduled = scheduled

    def count(self, lo: float, hi: float) -> int:
        slots = sum(s.slots(lo, hi, self.run_end) for s in self.schedules)
        return slots + bisect_left(self.unscheduled, hi) - bisect_left(self.unscheduled, lo)

    def per_client(self, lo: float, hi: float) -> dict[str, int]:
        return {s.client: n for s in self.schedules if (n := s.slots(lo, hi, self.run_end))}


def summarise(requests: Sequence[Request], intended: int | None = None) -> dict[str, Any]:
    """Counts, availability and latency percentiles of the requests of one window.

    `intended` defaults to the requests sent (closed loop)."""
    sent = len(requests)
    intended = sent if intended is None else max(intended, sent)
    served = sum(1 for r in requests if r.served)
    available = sum(1 for r in requests if r.available)
    latencies = [r.latency_ms for r in requests if r.latency_ms is not None]
    return {
        "intended": intended,
        "requests": sent,
        "not_sent": intended - sent,
        "served": served,
        "success": available,
        "late": served - available,
        "retried": sum(1 for r in requests if r.attempts > 1),
        "ok": sum(1 for r in requests if r.type == "ok"),
        "fail": sum(1 for r in requests if r.type == "fail"),
        "info": sum(1 for r in requests if r.type == "info"),
        "ratio": available / intended if intended else None,
        "served_ratio": served / intended if intended else None,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
    }


def per_second(
    requests: Sequence[Request], start: float, end: float, intent: Intent | None = None
) -> list[dict[str, Any]]:
    """One entry per whole second, from the one holding `start` to the last one that begins
    before `end` (or holds a request): intended, sent, available and served (by completion
    second, what the service actually delivered then)."""
    buckets: dict[int, list[Request]] = defaultdict(list)
    delivered: dict[int, int] = defaultdict(int)
    for r in requests:
        buckets[math.floor(r.start)].append(r)
        if r.served and r.done is not None:
            delivered[math.floor(r.done)] += 1
    first = min([math.floor(start), *buckets], default=0)
    last = max([math.ceil(end) - 1, *buckets], default=first)
    series = []
    for s in range(first, last + 1):
        in_second = buckets.get(s, [])
        entry = summarise(in_second, intent.count(s, s + 1) if intent else None)
        series.append({"t": s, **entry, "delivered": delivered.get(s, 0)})
    return series


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
    """Customer-facing alarms: trailing-window error rate (1 - available / intended) above the
    threshold."""
    width = max(1, round(slos.alarm_window_seconds))
    fired: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i, second in enumerate(series):
        recent = series[max(0, i - width + 1) : i + 1]
        total = sum(s["intended"] for s in recent)
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
        probes = requests_of(az_ops, ())
        out[az] = {
            **summarise(probes),
            "windows": {
                w.fault_id: summarise([r for r in probes if w.contains(r.start)])["ratio"]
                for w in windows
            },
            "routers": {
                router: summarise(requests_of(rops, ()))["ratio"]
                for router, rops in sorted(routers.items())
            },
            "series": [[s["t"], s["ratio"]] for s in per_second(probes, start, end)],
        }
    return out


def outside(windows: Sequence[FaultWindow], lo: float, hi: float) -> list[tuple[float, float]]:
    """The parts of [lo, hi) outside every window."""
    parts, at = [], lo
    for w in sorted(windows, key=lambda w: w.start):
        if w.start > at:
            parts.append((at, min(w.start, hi)))
        at = max(at, w.end)
        if at >= hi:
            break
    if at < hi:
        parts.append((at, hi))
    return [(a, b) for a, b in parts if b > a]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def client_time(
    requests: Sequence[Request], intent: Intent, ranges: Sequence[tuple[float, float]]
) -> float | None:
    """The share of client-seconds in `ranges` in which every op the client intended was
    available (seconds counted from each range's start; a last partial second counts too)."""
    good = total = 0
    ordered = sorted(requests, key=lambda r: r.start)
    starts = [r.start for r in ordered]
    for lo, hi in ranges:
        for i in range(math.ceil(hi - lo)):
            a, b = lo + i, min(lo + i + 1, hi)
            wanted = intent.per_client(a, b)
            got: dict[str, int] = defaultdict(int)
            sent: dict[str, int] = defaultdict(int)
            for r in ordered[bisect_left(starts, a) : bisect_left(starts, b)]:
                if a <= r.start < b:
                    sent[r.client] += 1
                    got[r.client] += r.available
            for client in set(wanted) | {c for c in sent if c not in intent.scheduled}:
                need = wanted.get(client, sent[client])
                if need:
                    total += 1
                    good += got[client] >= need
    return good / total if total else None


def judge(entry: dict[str, Any], slos: Slos) -> list[str]:
    """The SLO violations of one window entry (empty when it meets them all)."""
    problems = []
    label = entry["label"]
    target = slos.availability if entry["id"] == STEADY else slos.during_faults
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
    schedules: Sequence[ClientSchedule] | None = None,
) -> CheckResult:
    """Availability of `ops` overall, per fault window and steady, against `slos`.

    With `schedules` (open loop) every intended op counts; without, only the requests sent."""
    loop = CLOSED_LOOP if schedules is None else OPEN_LOOP
    schedules = schedules or []
    requests = requests_of(ops, schedules)
    start, end = span or (
        min((r.start for r in requests), default=0.0),
        max((r.start for r in requests), default=0.0),
    )
    # where the load ran: the schedules' extent, else the requests'
    load_lo = min([*(s.first for s in schedules), *(r.start for r in requests)], default=start)
    load_hi = max(
        [
            end,
            *(s.end for s in schedules if s.end is not None),
            *(r.start for r in requests),
        ],
        default=end,
    )
    if not schedules:
        load_hi = max((r.start for r in requests), default=load_hi)
    intent = Intent(schedules, requests, max(end, load_hi))
    series = per_second(requests, start, end, intent)
    steady_ranges = outside(windows, min(start, load_lo), load_hi + 1e-9)
    steady_requests = [r for r in requests if not any(w.contains(r.start) for w in windows)]
    steady = summarise(steady_requests, sum(intent.count(a, b) for a, b in steady_ranges))
    steady_active = sum(_overlap(rng, (load_lo, load_hi)) for rng in steady_ranges)
    steady_rate = steady["served"] / steady_active if steady_active > 0 else None
    steady.update(
        {
            "id": STEADY,
            "label": STEADY,
            "fault": None,
            "targets": [],
            "start": None,
            "end": None,
            "ended": None,
            "throughput_ratio": 1.0 if steady_rate else None,
            "client_time": client_time(
                steady_requests, intent, [(math.ceil(a), math.floor(b)) for a, b in steady_ranges]
            ),
        }
    )
    entries = [steady]
    for w in windows:
        inside = [r for r in requests if w.contains(r.start)]
        entry: dict[str, Any] = {
            "id": w.fault_id,
            "label": w.label,
            "fault": w.fault,
            "targets": list(w.targets),
            "start": w.start,
            "end": w.end,
            "ended": w.ended,
            **summarise(inside, intent.count(w.start, w.end)),
        }
        active = _overlap((w.start, w.end), (load_lo, load_hi))
        entry["throughput_ratio"] = (
            entry["served"] / active / steady_rate if steady_rate and active > 0 else None
        )
        entry["client_time"] = client_time(inside, intent, [(w.start, w.end)])
        entry["recovery_after_start"] = recovery_after_start(series, w, slos.during_faults)
        entry["recovery_after_end"] = (
            recovery_after_end(series, w, slos.during_faults) if w.ended else None
        )
        entries.append(entry)
    fired = alarms(series, slos, windows)
    for entry in entries[1:]:
        delays = [a["start"] - entry["start"] for a in fired if entry["id"] in a["faults"]]
        entry["alarm_delay"] = min(delays) if delays else None
    violations = [p for entry in entries for p in judge(entry, slos)]
    for entry in entries:
        entry["meets_slo"] = not judge(entry, slos)
    overall = summarise(requests, sum(intent.count(a, b) for a, b in [(load_lo, load_hi + 1e-9)]))
    details: dict[str, Any] = {
        "loop": loop,
        "note": OPEN_LOOP_NOTE if loop == OPEN_LOOP else CLOSED_LOOP_NOTE,
        "slos": {
            "availability": slos.availability,
            "fault_availability": slos.during_faults,
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
    if not overall["intended"]:
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
            f" worst {worst['label']} {worst['ratio']:.2%}; {len(fired)} alarms; {loop} loop)"
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
        schedules=run.schedules,
    )
