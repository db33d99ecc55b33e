"""The healing timeline: every step a node's admin takes, as immutable events with timestamps.

Events are kept in memory (the newest ``capacity``), appended to ``healing-events.jsonl`` in the
node's data directory, served on the admin endpoint ``GET /admin/events`` and counted in
Prometheus metrics (``healing_events_total{kind}``, ``healing_last_event_timestamp_seconds``).

    log = EventLog(path=Path("data/n1/healing-events.jsonl"))
    log.record(EventKind.NODE_SUSPECTED, node="sn-a1", groups=["t.p0"], down_seconds=1.0)
    log.since(0.0)    # -> [HealingEvent(...)]
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
# One line per healing event even when the process logs WARNING (a suspected node, an action
# started or done): with the Raft role lines (storage/rolelog.py) they tell a run's story.
log.setLevel(logging.INFO)


class EventKind(enum.StrEnum):
    NODE_SUSPECTED = "node_suspected"  # a member's node stopped answering
    NODE_RECOVERED = "node_recovered"  # ... and answers again
    MEMBER_REMOVED = "member_removed"
    LOG_REPLICA_ADDED = "log_replica_added"
    FULL_REPLICA_BUILDING = "full_replica_building"
    FULL_REPLICA_READY = "full_replica_ready"
    REPLICA_RECREATED = "replica_recreated"  # a member whose node lost its copy
    REPLICA_LOST_DATA = "replica_lost_data"  # a member no longer holds what it acknowledged
    REPLICA_REFILLED = "replica_refilled"  # ... and holds everything committed again
    ORPHAN_DROPPED = "orphan_dropped"  # a copy on a node that is no longer a member
    LEADERSHIP_TRANSFERRED = "leadership_transferred"
    MAP_UPDATED = "map_updated"  # partition map now lists the group's members
    ACTION_FAILED = "action_failed"
    SCRUB_PASSED = "scrub_passed"
    SCRUB_ALARM = "scrub_alarm"  # divergence or a checksum failure: names the replica
    SCRUB_INCOMPLETE = "scrub_incomplete"  # a member sent no report: names it and why
    REPLICA_QUARANTINED = "replica_quarantined"
    REPLICA_REPAIRED = "replica_repaired"


ALARMS = frozenset(
    {EventKind.SCRUB_ALARM, EventKind.SCRUB_INCOMPLETE, EventKind.REPLICA_QUARANTINED}
)


@dataclass(frozen=True, slots=True)
class HealingEvent:
    seq: int
    time: float  # Unix time (seconds)
    kind: EventKind
    reporter: str  # the node whose admin recorded it
    group: str | None = None
    node: str | None = None  # the node the event is about
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind.value,
            "reporter": self.reporter,
            "group": self.group,
            "node": self.node,
            "detail": self.detail,
        }


class EventLog:
    def __init__(self, reporter: str, path: Path | None = None, capacity: int = 2000) -> None:
        self.reporter = reporter
        self.path = path
        self.events: deque[HealingEvent] = deque(maxlen=capacity)
        self.counts: dict[EventKind, int] = {}
        self.last_at: dict[EventKind, float] = {}
        self._seq = itertools.count(1)

    def record(
        self, kind: EventKind, group: str | None = None, node: str | None = None, **detail: Any
    ) -> HealingEvent:
        event = HealingEvent(next(self._seq), time.time(), kind, self.reporter, group, node, detail)
        self.events.append(event)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.last_at[kind] = event.time
        loud = kind in ALARMS or kind is EventKind.ACTION_FAILED
        level = logging.WARNING if loud else logging.INFO
        log.log(level, "healing: %s group=%s node=%s %s", kind.value, group, node, detail)
        if self.path is not None:
            try:
                with self.path.open("a") as f:
                    f.write(json.dumps(event.to_dict(), default=str) + "\n")
            except OSError as exc:  # the timeline is best effort; healing goes on
                log.warning("cannot append to %s: %s", self.path, exc)
        return event

    def since(self, after: float = 0.0, kind: str | None = None) -> list[HealingEvent]:
        return [e for e in self.events if e.time > after and (kind is None or e.kind == kind)]


class EventCollector(Collector):
    """Prometheus view of an EventLog (read at scrape time)."""

    def __init__(self, events: EventLog) -> None:
        self.log = events

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        total = CounterMetricFamily("healing_events", "Healing steps recorded", labels=["kind"])
        last = GaugeMetricFamily(
            "healing_last_event_timestamp_seconds", "When a step last happened", labels=["kind"]
        )
        for kind in EventKind:
            total.add_metric([kind.value], self.log.counts.get(kind, 0))
            if kind in self.log.last_at:
                last.add_metric([kind.value], self.log.last_at[kind])
        yield total
        yield last
