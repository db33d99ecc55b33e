"""Open-loop pacing: slots on a fixed schedule; slots past their deadline are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workloads.history import HistoryWriter, OpRecorder, OpType, RunClock, merge_histories
from workloads.schedule import Pacer, schedule_end_record, schedule_record


def test_slots_follow_the_schedule_whatever_the_answers_took() -> None:
    pacer = Pacer(rate=10.0, first=1.0, deadline=2.0)
    assert pacer.next_slot(now=0.5).intended == pytest.approx(1.0)  # early: wait for it
    assert pacer.next_slot(now=1.05).intended == pytest.approx(1.1)
    slot = pacer.next_slot(now=1.9)  # behind, but within the lag: no skip, send at once
    assert (slot.intended, slot.skipped) == (pytest.approx(1.2), 0)


def test_a_backlog_older_than_the_lag_is_skipped_and_counted() -> None:
    pacer = Pacer(rate=10.0, first=0.0, deadline=1.0)  # max_lag: half the deadline
    pacer.next_slot(now=0.0)
    slot = pacer.next_slot(now=5.0)  # stalled for 5 s: slots 0.1 .. 4.4 are dropped
    assert slot.intended == pytest.approx(4.5) and slot.skipped == 44
    assert pacer.next_slot(now=5.0).intended == pytest.approx(4.6)
    assert Pacer(rate=10.0, first=0.0, deadline=6.0).max_lag == 1.0


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        Pacer(rate=0.0, first=0.0, deadline=1.0)


def test_schedules_are_merged_beside_the_history(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "history-h-1.jsonl")
    pacer = Pacer(rate=5.0, first=0.25, deadline=2.0)
    writer.append_record(schedule_record("h-1-u0", pacer))
    rec = OpRecorder(writer, RunClock(), "h-1-u0")
    pending = rec.invoke("write", "k", "v", intended=0.25)
    rec.complete(pending, OpType.OK, "v")
    writer.append_record(schedule_end_record("h-1-u0", 9.5))
    writer.flush()
    history = merge_histories(tmp_path)
    ops = [json.loads(line) for line in history.read_text().splitlines()]
    assert [op["type"] for op in ops] == ["invoke", "ok"]
    assert ops[0]["intended"] == 0.25 and "intended" not in ops[1]
    schedule = [json.loads(line) for line in (tmp_path / "schedule.jsonl").read_text().split()]
    assert [s["type"] for s in schedule] == ["schedule", "schedule_end"]
    assert schedule[0]["rate"] == 5.0 and schedule[1]["time"] == 9.5
