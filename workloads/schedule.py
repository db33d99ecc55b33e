"""Open-loop pacing: when each of a client's operations is *intended* to start. Pure; no I/O.

A closed-loop client sends its next request only after the previous one answered, so when the
service stalls it simply stops asking, and a success ratio over the requests it did send looks
fine (coordinated omission). An open-loop client has a schedule fixed in advance, one op every
``1 / rate`` seconds, independent of how the service answers. Each op carries its intended start;
its latency counts from there (as wrk2 and HdrHistogram's correction do) and an op not answered
within ``deadline`` of its intended start counts as unavailable, whether it was sent late, never
sent (a client that falls behind drops slots more than ``max_lag`` late), or answered too late.

    pacer = Pacer(rate=12.5, first=3.2, deadline=6.0)
    slot = pacer.next_slot(now=3.0)   # Slot(intended=3.2, skipped=0): sleep 0.2 s, then send
    slot = pacer.next_slot(now=12.0)  # 3.28 .. 10.96 are over 1 s late: skipped, counted as
                                      # unavailable by the checker from the schedule record
    record = schedule_record("host-41-u0", pacer)   # one line of schedule.jsonl

The schedule record (``{"type": "schedule", "process", "rate", "first", "deadline"}``, and a
``{"type": "schedule_end", "process", "time"}`` when the client stops) lets the availability
checker count every intended op, including those of a client that stalled and recorded nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SCHEDULE = "schedule"
SCHEDULE_END = "schedule_end"
SCHEDULE_FILE = "schedule.jsonl"


@dataclass(frozen=True, slots=True)
class Slot:
    """The next op's intended start (run seconds) and how many earlier slots were skipped."""

    intended: float
    skipped: int


class Pacer:
    """One client's open-loop schedule: intended starts at ``first + k / rate``, k = 0, 1, ...

    ``next_slot(now)`` hands out the slots in order. A slot more than ``max_lag`` behind ``now``
    when the client gets to it is skipped, never sent: the client drops its backlog and goes on
    with current work, as a caller whose own deadline passed would. Without that, a client
    slightly slower than its schedule would work through an ever older backlog and every op it
    sent would arrive at its deadline's edge. Skipped slots are still intended: the checker
    counts them from the schedule record, as unavailable. ``max_lag`` defaults to half the
    deadline, at most 1 s.
    """

    def __init__(
        self, rate: float, first: float, deadline: float, max_lag: float | None = None
    ) -> None:
        if rate <= 0 or deadline <= 0:
            raise ValueError("rate and deadline must be positive")
        self.rate = rate
        self.period = 1.0 / rate
        self.first = first
        self.deadline = deadline
        self.max_lag = min(1.0, deadline / 2) if max_lag is None else min(max_lag, deadline)
        self.k = 0

    def next_slot(self, now: float) -> Slot:
        intended = self.first + self.k * self.period
        skipped = 0
        if now - intended > self.max_lag:
            # the first slot still within the lag: first + j * period >= now - max_lag
            j = math.ceil((now - self.max_lag - self.first) / self.period)
            skipped = max(0, j - self.k)
            self.k += skipped
            intended = self.first + self.k * self.period
        self.k += 1
        return Slot(intended, skipped)


def schedule_record(process: str, pacer: Pacer) -> dict[str, Any]:
    return {
        "type": SCHEDULE,
        "process": process,
        "rate": pacer.rate,
        "first": round(pacer.first, 6),
        "deadline": pacer.deadline,
    }


def schedule_end_record(process: str, time: float) -> dict[str, Any]:
    return {"type": SCHEDULE_END, "process": process, "time": round(time, 6)}
