"""The orchestrator's run's end, on fakes (no cluster): the workload stops before any heal of
the run's end, so no write after a slow power-on can overwrite what a fault lost (issue #12)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from chaos.faults import make_fault
from chaos.orchestrator import Orchestrator
from chaos.schedule import TimedFault
from checks.rundir import RunDir


class Plan:
    kills: frozenset[str] = frozenset({"sn-a1"})
    pauses: frozenset[str] = frozenset()

    def affected_storage_nodes(self) -> set[str]:
        return {"sn-a1"}

    def describe(self) -> str:
        return "power loss sn-a1"


class Nemesis:
    """Injects at once; heals slowly (a power-on beside CPU hogs), noting what ran meanwhile."""

    def __init__(self, log: list[str]) -> None:
        self.applied_at: dict[str, float] = {}
        self.log = log
        self.lock = threading.Lock()

    def inject(self, fault_id: str, plan: Plan, describe: str, allowed: Any) -> dict[str, str]:
        self.applied_at[fault_id] = time.time()
        return {"landed": fault_id}

    def heal(self, fault_id: str) -> None:
        with self.lock:
            self.log.append(f"heal {fault_id}")
        time.sleep(0.3)

    def heal_all(self) -> None:
        with self.lock:
            self.log.append("heal_all")


class Backend:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir


class Guard:
    def update(self, **fields: Any) -> None:
        pass


def run(tmp_path: Path, timeline: list[TimedFault], duration: float) -> tuple[list[str], Path]:
    """Run ``timeline`` with a fake load whose stop takes a while; what happened, in order."""
    log: list[str] = []

    async def stop_load() -> None:
        log.append("stop load")
        await asyncio.sleep(0.3)  # Locust lets the requests in flight finish
        log.append("load stopped")

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    orch = Orchestrator(
        Backend(tmp_path / "state"),  # type: ignore[arg-type]
        timeline,
        run_dir,
        guard=Guard(),  # type: ignore[arg-type]
        stop_load=stop_load,
    )
    orch.nemesis = Nemesis(log)  # type: ignore[assignment]
    orch._plan = lambda tf: Plan()  # type: ignore[assignment, method-assign, return-value]
    outcome = asyncio.run(orch.run(duration))
    assert outcome.aborted is None, outcome
    return log, run_dir


def fault(at: float, duration: float, fault_id: str) -> TimedFault:
    return TimedFault(at, make_fault("power_loss_az", {"target": "az-a"}), duration, fault_id)


def events_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_the_load_stops_before_the_run_end_heals_a_fault_due_with_it(tmp_path: Path) -> None:
    """A fault due to end with the run is healed by the run's end after the load stopped, not
    by its own timer beside it; a fault that ended earlier healed on its own, load running."""
    log, run_dir = run(tmp_path, [fault(0.2, 0.3, "f1"), fault(0.8, 2.2, "f2")], duration=3.0)
    assert log == ["heal f1", "stop load", "load stopped", "heal f2", "heal_all"], log
    events = events_of(run_dir)
    names = [(e["event"], e.get("fault_id")) for e in events]
    load_stop = names.index(("load_stop", None))
    assert names.index(("fault_end", "f1")) < load_stop
    assert load_stop < names.index(("load_stopped", None)) < names.index(("fault_end", "f2"))
    assert names[-2:] == [("heal", None), ("run_end", None)]
    # f1 ended while the load ran (its recovery counts); f2 after the load stopped
    ended = {w.fault_id: w.ended for w in RunDir(run_dir).fault_windows()}
    assert ended == {"f1": True, "f2": False}


def test_a_fault_past_the_run_end_is_healed_after_the_load_stops(tmp_path: Path) -> None:
    log, run_dir = run(tmp_path, [fault(0.2, 30.0, "f1")], duration=1.0)
    assert log == ["stop load", "load stopped", "heal f1", "heal_all"], log
    [end] = [e for e in events_of(run_dir) if e["event"] == "fault_end"]
    assert end["cut_short_by"] == "the run's end"
