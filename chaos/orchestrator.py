"""The orchestrator: runs a fault timeline against a backend, and always heals.

One interpreter owns time and concurrency (STYLE.md): the timeline is data (chaos/schedule.py),
each fault is planned against the cluster as it is at that moment (who leads what), checked
against the blast radius, injected and confirmed by the nemesis, then healed after its
duration. Everything that happens is appended to ``events.jsonl``. Whatever ends the run — its
end, a stop condition, Ctrl-C, SIGTERM, an exception — heals everything before returning, and a
dead-man's switch heals it if this process is SIGKILLed.

    orch = Orchestrator(backend, timeline, run_dir, radius)
    outcome = await orch.run(duration_s=90)     # RunOutcome(stopped_by=None, faults=[...])
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.backends.base import Backend
from chaos.deadman import Lease, spawn_watchdog
from chaos.faults import (
    BlastRadius,
    BlastRadiusExceeded,
    ClusterView,
    FaultPlan,
    check_blast_radius,
    groups_from_status,
)
from chaos.faults import plan as plan_fault
from chaos.nemesis import FaultNotLanded, Nemesis
from chaos.schedule import TimedFault

log = logging.getLogger(__name__)


class EventLog:
    """``events.jsonl``: one JSON object per line, ``time`` in seconds from the run's start."""

    def __init__(self, path: Path, run_start: float) -> None:
        self.path = path
        self.run_start = run_start
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"time": round(time.time() - self.run_start, 4), "event": event, **fields}
        with self.path.open("a") as out:
            out.write(json.dumps(record, default=str) + "\n")
        for listener in self.listeners:
            listener(record)
        return record


@dataclass
class FaultRecord:
    fault_id: str
    kind: str
    description: str
    targets: list[str]
    started: float | None = None
    ended: float | None = None
    error: str | None = None


@dataclass
class RunOutcome:
    stopped_by: str | None = None  # a stop condition, a signal, or an error; None: ran to end
    faults: list[FaultRecord] = field(default_factory=list)
    failed_faults: list[str] = field(default_factory=list)


StopCheck = Callable[[], str | None]  # returns a reason to stop the run, or None


class Orchestrator:
    def __init__(
        self,
        backend: Backend,
        timeline: list[TimedFault],
        run_dir: Path,
        radius: BlastRadius | None = None,
        stop_check: StopCheck | None = None,
        run_start: float | None = None,
        seed: int = 0,
    ) -> None:
        self.backend = backend
        self.timeline = sorted(timeline, key=lambda t: t.at_s)
        self.run_dir = run_dir
        self.radius = radius
        self.stop_check = stop_check
        self.run_start = run_start if run_start is not None else time.time()
        self.events = EventLog(run_dir / "events.jsonl", self.run_start)
        self.nemesis = Nemesis(backend, random.Random(seed))
        self.active_plans: dict[str, FaultPlan] = {}
        self.outcome = RunOutcome()

    # --- the run -----------------------------------------------------------------------------

    async def run(self, duration_s: float) -> RunOutcome:
        lease = Lease(self.backend.state_dir / "deadman.lease")
        watchdog = spawn_watchdog(self.backend, lease)
        self.events.write("run_start", duration=duration_s, faults=len(self.timeline))
        try:
            await self._run_timeline(duration_s)
        except asyncio.CancelledError:
            self.outcome.stopped_by = self.outcome.stopped_by or "interrupted"
            raise
        except Exception as exc:  # an infrastructure error must still heal, then surface
            self.outcome.stopped_by = f"error: {exc}"
            raise
        finally:
            await asyncio.shield(self._heal_everything())
            lease.release()
            self.events.write("run_end", stopped_by=self.outcome.stopped_by)
            try:
                watchdog.wait(timeout=5)
            except Exception:
                watchdog.kill()
        return self.outcome

    async def _run_timeline(self, duration_s: float) -> None:
        tasks = [asyncio.create_task(self._one_fault(tf)) for tf in self.timeline]
        deadline = self.run_start + duration_s
        try:
            while time.time() < deadline:
                reason = self.stop_check() if self.stop_check else None
                if reason is not None:
                    self.outcome.stopped_by = reason
                    self.events.write("stop_condition", reason=reason)
                    break
                await asyncio.sleep(min(0.25, max(0.0, deadline - time.time())))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one_fault(self, tf: TimedFault) -> None:
        await asyncio.sleep(max(0.0, self.run_start + tf.at_s - time.time()))
        record = FaultRecord(tf.fault_id, tf.fault.kind, tf.fault.describe(), [])
        self.outcome.faults.append(record)
        try:
            plan = await asyncio.to_thread(self._plan, tf)
        except (BlastRadiusExceeded, ValueError) as exc:
            record.error = str(exc)
            self.events.write(
                "fault_refused", fault_id=tf.fault_id, fault=tf.fault.kind, reason=str(exc)
            )
            return
        record.targets = sorted(plan.affected_storage_nodes() | plan.kills | plan.pauses)
        record.description = plan.describe()
        self.active_plans[tf.fault_id] = plan
        self.events.write(
            "fault_start",
            fault_id=tf.fault_id,
            fault=tf.fault.kind,
            targets=record.targets,
            detail={"plan": plan.describe(), "params": tf.fault.params()},
        )
        record.started = time.time() - self.run_start
        try:
            evidence = await asyncio.to_thread(
                self.nemesis.inject, tf.fault_id, plan, plan.describe()
            )
            self.events.write(
                "fault_confirmed", fault_id=tf.fault_id, fault=tf.fault.kind, detail=evidence
            )
        except FaultNotLanded as exc:
            record.error = str(exc)
            self.outcome.failed_faults.append(tf.fault_id)
            self.events.write(
                "fault_not_landed", fault_id=tf.fault_id, fault=tf.fault.kind, reason=str(exc)
            )
        try:
            await asyncio.sleep(tf.duration_s)
        finally:
            await asyncio.shield(asyncio.to_thread(self._heal_one, tf, record))

    def _plan(self, tf: TimedFault) -> FaultPlan:
        statuses = {n: self.backend.storage_status(n) for n in self.backend.process_ids("storage")}
        # The fault's own seed: randomized shapes come out the same when the run is replayed.
        view = ClusterView.from_config(
            self.backend.config, groups_from_status(statuses), tf.plan_rng()
        )
        plan = plan_fault(tf.fault, view)
        if self.radius is not None:
            check_blast_radius(list(self.active_plans.values()), plan, self.radius, view.topology)
        return plan

    def _heal_one(self, tf: TimedFault, record: FaultRecord) -> None:
        if tf.fault_id not in self.active_plans:
            return
        self.nemesis.heal(tf.fault_id)
        del self.active_plans[tf.fault_id]
        record.ended = time.time() - self.run_start
        self.events.write(
            "fault_end", fault_id=tf.fault_id, fault=tf.fault.kind, targets=record.targets
        )

    async def _heal_everything(self) -> None:
        for fault_id in list(self.active_plans):
            self.events.write("fault_end", fault_id=fault_id, reason="run ending")
        self.active_plans.clear()
        await asyncio.to_thread(self.nemesis.heal_all)
        self.events.write("heal")
