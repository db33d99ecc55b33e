"""The run directory as the checkers see it: recorded artifacts only, loaded lazily and once.

Checks never talk to a cluster; everything comes from the files a run left behind, so any run can
be re-checked offline:

    >>> run = RunDir(Path("runs/20240101-120000-az-power-off"))   # doctest: +SKIP
    >>> run.slos().during_faults, [w.label for w in run.fault_windows()]   # doctest: +SKIP
    (0.95, ['power_off_az az-a'])

A missing file reads as None (the checker decides what that means, usually "unknown"); a malformed
one raises, which the checker's guard turns into "unknown" with the error text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from checks.history import JsonDict, Operation, load_operations, read_jsonl

SCENARIO = "scenario.json"
HISTORY = "history.jsonl"
CANARY = "canary.jsonl"
EVENTS = "events.jsonl"
FINAL_READS = "final_reads.json"
DIGESTS = "digests.json"
SCHEDULE = "schedule.jsonl"


@dataclass(frozen=True, slots=True)
class Slos:
    """The service-level objectives a run is judged against: the scenario's ``steady_state``
    (chaos/scenario.py), field for field with the same meanings, plus its ``alarm``.

    `availability` applies outside every fault window; `fault_availability` within each fault
    window (and to recovery), `availability` when unset. A None p99 or recovery: not judged.
    """

    availability: float = 0.99
    p99_ms: float | None = 500.0
    recovery_seconds: float | None = 30.0
    alarm_error_rate: float = 0.05
    alarm_window_seconds: float = 5.0
    fault_availability: float | None = None

    @property
    def during_faults(self) -> float:
        return self.availability if self.fault_availability is None else self.fault_availability


@dataclass(frozen=True, slots=True)
class ClientSchedule:
    """An open-loop client's intended op starts: ``first + k / rate`` until ``end`` (None: it
    never said it stopped; count until the run ends). ``deadline``: seconds from an intended
    start within which an answer counts."""

    client: str
    rate: float
    first: float
    deadline: float
    end: float | None = None

    @property
    def period(self) -> float:
        return 1.0 / self.rate

    def slot_of(self, intended: float) -> float:
        """The schedule's own float for the slot nearest ``intended`` (recorded times are
        rounded), so that ops and slot counts agree on which side of a boundary a slot is."""
        return self.first + round((intended - self.first) * self.rate) * self.period

    def slots(self, lo: float, hi: float, run_end: float) -> int:
        """How many intended starts fall in [lo, hi) (and before the client stopped)."""
        hi = min(hi, run_end if self.end is None else self.end)
        if hi <= lo:
            return 0
        return max(0, self._first_at_or_after(hi) - self._first_at_or_after(lo))

    def _first_at_or_after(self, t: float) -> int:
        if t <= self.first:
            return 0
        k = math.ceil((t - self.first) * self.rate)
        while k > 0 and self.first + (k - 1) * self.period >= t:
            k -= 1
        while self.first + k * self.period < t:
            k += 1
        return k


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault's span, from its fault_start to its fault_end (or the end of the run)."""

    fault_id: str
    fault: str
    targets: tuple[str, ...]
    start: float
    end: float
    ended: bool  # it ended while the load ran: the recovery after it can be measured

    @property
    def label(self) -> str:
        return f"{self.fault} {','.join(self.targets)}".strip()

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def contains_op(self, op: Operation) -> bool:
        """Whether the op was invoked inside the window."""
        return self.start <= op.invoke_time < self.end


class RunDir:
    """Lazy, cached access to one run directory's artifacts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _json(self, name: str) -> Any:
        file = self.path / name
        if not file.exists():
            return None
        return json.loads(file.read_text(encoding="utf-8"))

    @cached_property
    def scenario(self) -> JsonDict:
        data = self._json(SCENARIO)
        return data if isinstance(data, dict) else {}

    @property
    def name(self) -> str:
        return str(self.scenario.get("name") or self.path.name)

    @property
    def workload(self) -> str | None:
        """The scenario's workload name ("register", "bank", ...), None if not recorded."""
        workload = self.scenario.get("workload")
        name = workload.get("name") if isinstance(workload, dict) else None
        return str(name) if name is not None else None

    @cached_property
    def history(self) -> list[Operation] | None:
        file = self.path / HISTORY
        return load_operations(file) if file.exists() else None

    @cached_property
    def canary(self) -> list[Operation] | None:
        file = self.path / CANARY
        return load_operations(file) if file.exists() else None

    @cached_property
    def schedules(self) -> list[ClientSchedule] | None:
        """The open-loop clients' schedules (schedule.jsonl); None for a closed-loop run."""
        file = self.path / SCHEDULE
        if not file.exists():
            return None
        ends: dict[str, float] = {}
        starts: list[JsonDict] = []
        for record in read_jsonl(file):
            if record.get("type") == "schedule_end":
                ends[str(record["process"])] = float(record["time"])
            elif record.get("type") == "schedule":
                starts.append(record)
        return [
            ClientSchedule(
                client=str(r["process"]),
                rate=float(r["rate"]),
                first=float(r["first"]),
                deadline=float(r["deadline"]),
                end=ends.get(str(r["process"])),
            )
            for r in starts
        ]

    @cached_property
    def events(self) -> list[JsonDict]:
        file = self.path / EVENTS
        return sorted(read_jsonl(file), key=_event_time) if file.exists() else []

    @cached_property
    def final_reads(self) -> dict[str, Any] | None:
        return self._json_object(FINAL_READS, "key -> value")

    @cached_property
    def digests(self) -> dict[str, Any] | None:
        return self._json_object(DIGESTS, "group -> node -> digest")

    def _json_object(self, name: str, shape: str) -> dict[str, Any] | None:
        """The JSON object in ``name`` (None when the run has no such file)."""
        data = self._json(name)
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{name}: expected an object of {shape}")
        return data

    def slos(self) -> Slos:
        """The scenario's SLOs: its ``steady_state`` and ``alarm``; missing keys take the
        defaults, explicit nulls disable. Run directories written before ``steady_state`` was
        read here carry a derived ``slos`` block whose ``availability`` is the fault windows'
        SLO and ``steady_availability`` the steady one; it is read with those meanings."""
        alarm = self.scenario.get("alarm") or {}
        default = Slos()
        steady = self.scenario.get("steady_state")
        if isinstance(steady, dict):
            availability = float(steady.get("availability", default.availability))
            fault = _opt_float(steady, "fault_availability", None)
        else:
            steady = self.scenario.get("slos") or {}
            fault = float(steady.get("availability", default.availability))
            legacy_steady = _opt_float(steady, "steady_availability", None)
            availability = fault if legacy_steady is None else legacy_steady
        return Slos(
            availability=availability,
            fault_availability=fault,
            p99_ms=_opt_float(steady, "p99_ms", default.p99_ms),
            recovery_seconds=_opt_float(steady, "recovery_seconds", default.recovery_seconds),
            alarm_error_rate=float(alarm.get("error_rate", default.alarm_error_rate)),
            alarm_window_seconds=float(alarm.get("window_seconds", default.alarm_window_seconds)),
        )

    def span(self) -> tuple[float, float]:
        """(start, end) of the run: run_start/run_end events, else the first and last records."""
        times = [_event_time(e) for e in self.events]
        for ops in (self.history or [], self.canary or []):
            for op in ops:
                times.append(op.invoke_time)
                if op.complete_time is not None:
                    times.append(op.complete_time)
        start = next((_event_time(e) for e in self.events if e.get("event") == "run_start"), None)
        end = next((_event_time(e) for e in self.events if e.get("event") == "run_end"), None)
        lo = start if start is not None else min(times, default=0.0)
        hi = end if end is not None else max(times, default=lo)
        return lo, max(lo, hi)

    def fault_windows(self) -> list[FaultWindow]:
        """Every fault's window, in start order. A fault without fault_end lasts until its heal
        event, else until the end of the run. A fault healed after the workload stopped (the
        run's end heals what is still active once ``load_stop`` stopped the load) lasts until
        its heal too, but did not end while anyone measured: ``ended`` is False."""
        starts: dict[str, JsonDict] = {}
        ends: dict[str, float] = {}
        heals: dict[str, float] = {}
        load_stop = math.inf
        for event in self.events:
            if event.get("event") == "load_stop":
                load_stop = min(load_stop, _event_time(event))
            fault_id = event.get("fault_id")
            if fault_id is None:
                continue
            kind = event.get("event")
            if kind == "fault_start":
                starts.setdefault(str(fault_id), event)
            elif kind == "fault_end":
                ends.setdefault(str(fault_id), _event_time(event))
            elif kind == "heal":
                heals.setdefault(str(fault_id), _event_time(event))
        run_end = self.span()[1]
        windows = []
        for fault_id, event in starts.items():
            start = _event_time(event)
            end = ends.get(fault_id, heals.get(fault_id))
            windows.append(
                FaultWindow(
                    fault_id=fault_id,
                    fault=str(event.get("fault", "fault")),
                    targets=tuple(str(t) for t in event.get("targets") or ()),
                    start=start,
                    end=max(start, end if end is not None else run_end),
                    ended=end is not None and end < load_stop,
                )
            )
        windows.sort(key=lambda w: (w.start, w.fault_id))
        return windows


def _event_time(event: JsonDict) -> float:
    value = event.get("time", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _opt_float(data: JsonDict, key: str, default: float | None) -> float | None:
    if key not in data:
        return default
    value = data[key]
    return None if value is None else float(value)
