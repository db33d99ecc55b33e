"""The orchestrator: runs a fault timeline against a backend, and always heals.

One interpreter owns time and concurrency (STYLE.md): the timeline is data (chaos/schedule.py),
each fault is planned against the cluster as it is at that moment (who leads what), checked
against the blast radius, injected and confirmed by the nemesis, then healed after its
duration. Everything that happens is appended to ``events.jsonl``. Whatever ends the run — its
end, a stop condition, Ctrl-C, SIGTERM, an exception — heals everything before returning, and a
dead-man's switch heals it if this process is SIGKILLed.

The run's end stops the workload (``stop_load``, event ``load_stop``) before it heals anything:
a fault due to end with the run is healed by the run's end, not by its own timer, so no write
made after the cluster came back (a slow power-on beside CPU hogs) can overwrite, and hide from
the final reads, a value that the fault lost.

    orch = Orchestrator(backend, timeline, run_dir, radius)
    outcome = await orch.run(duration_s=90)     # RunOutcome(stopped_by=None, faults=[...])
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.backends.base import Backend
from chaos.deadman import DEFAULT_TTL, Guard, Lease, spawn_watchdog
from chaos.faults import (
    BlastRadius,
    BlastRadiusExceeded,
    ClusterView,
    FaultPlan,
    check_blast_radius,
    groups_from_status,
)
from chaos.faults import plan as plan_fault
from chaos.nemesis import FaultNotLanded, FaultRefused, Nemesis
from chaos.schedule import TimedFault

log = logging.getLogger(__name__)


class RunEvents:
    """``events.jsonl``: one JSON object per line, ``time`` in seconds from the run's start."""

    def __init__(self, path: Path, run_start: float) -> None:
        self.path = path
        self.run_start = run_start
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()  # heals write from worker threads

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; ``time`` defaults to now (a fault's own instant can be given)."""
        now = fields.pop("time", None)
        now = round(time.time() - self.run_start, 4) if now is None else now
        record = {"time": now, "event": event, **fields}
        with self._lock, self.path.open("a") as out:
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
    planned_start: float = 0.0
    planned_end: float = 0.0
    started: float | None = None
    ended: float | None = None
    error: str | None = None


@dataclass
class RunOutcome:
    stopped_by: str | None = None  # a stop condition, a signal, or an error; None: ran to end
    faults: list[FaultRecord] = field(default_factory=list)
    failed_faults: list[str] = field(default_factory=list)
    aborted: str | None = None  # why the plan did not fully execute; None: it did
    lease_lapsed: str | None = None


PLAN_AHEAD_S = 2.0  # plan each fault this long before it is due
CUT_SHORT_S = 0.5  # a fault healed earlier than this before its planned end was cut short

StopCheck = Callable[[], str | None]  # returns a reason to stop the run, or None
StopLoad = Callable[[], Awaitable[object]]  # stops the workload and closes its history


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
        lease_ttl: float = DEFAULT_TTL,
        guard: Guard | None = None,
        stop_load: StopLoad | None = None,
    ) -> None:
        self.backend = backend
        self.timeline = sorted(timeline, key=lambda t: t.at_s)
        self.run_dir = run_dir
        self.radius = radius
        self.stop_check = stop_check
        self.run_start = run_start if run_start is not None else time.time()
        self.events = RunEvents(run_dir / "events.jsonl", self.run_start)
        self.nemesis = Nemesis(backend, random.Random(seed))
        self.active_plans: dict[str, FaultPlan] = {}
        self.outcome = RunOutcome()
        self.lease_ttl = lease_ttl
        self.guard = guard  # the run's watchdog, if it has one; else the run spawns its own
        self.lease: Lease | None = None
        self._stop_reason: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._finished = False
        self.stop_load = stop_load  # the run's end calls it once, before any heal of the end
        self._load_stopped = False
        self._end_s = float("inf")  # the run's planned end, from its start

    def add_fault(self, tf: TimedFault) -> asyncio.Task[None]:
        """Run one more fault on the live run (an inject from the web UI's Game day tab): it is
        planned, checked against the blast radius, injected, confirmed and healed exactly as the
        timeline's faults are; cancelling the task heals it early. Call on the run's event loop
        while ``run`` is under way; it is not part of the plan that ``RunOutcome`` accounts for.
        """
        task = asyncio.create_task(self._one_fault(tf))
        self._tasks.append(task)
        return task

    def finish(self) -> None:
        """End the run now as if its duration were over (an open-ended session that is done,
        not an abort): every active fault is healed and ``run`` returns."""
        self._finished = True

    def accepting(self) -> bool:
        """Whether ``add_fault`` may still inject: the lease is held and no stop was asked."""
        return not self._finished and self._allowed()

    def request_stop(self, reason: str) -> None:
        """End the timeline early (a signal): heal, record why, and end the run as aborted."""
        self._stop_reason = self._stop_reason or reason

    # --- the run -----------------------------------------------------------------------------

    async def run(self, duration_s: float) -> RunOutcome:
        self._end_s = duration_s
        lease = Lease(self.backend.state_dir / "deadman.lease", ttl=self.lease_ttl)
        self.lease = lease
        watchdog = None
        if self.guard is not None:
            self.guard.update(lease=str(lease.path))
        else:
            watchdog = spawn_watchdog(self.backend, lease)
        self.events.write(
            "run_start", duration=duration_s, faults=len(self.timeline), lease_ttl=lease.ttl
        )
        try:
            await self._run_timeline(duration_s)
        except asyncio.CancelledError:
            self._abort(self.outcome.stopped_by or self._stop_reason or "interrupted")
            raise
        except Exception as exc:  # an infrastructure error must still heal, then surface
            self._abort(f"error: {exc}")
            raise
        finally:
            if self.outcome.aborted is None and not lease.held():  # stalled past the deadline
                self._abort(f"lease lapsed: {lease.lapsed}; the watchdog healed the cluster")
                self.events.write("lease_lapsed", reason=lease.lapsed)
            await asyncio.shield(self._stop_the_load())  # if the timeline did not get to it
            await asyncio.shield(self._heal_everything())
            self._account_for_the_plan(duration_s)
            if lease.lapsed is not None:
                self.outcome.lease_lapsed = lease.lapsed
            lease.release()
            self.events.write(
                "run_end",
                stopped_by=self.outcome.stopped_by,
                aborted=self.outcome.aborted,
                planned=len(self.timeline),
                executed=sum(1 for f in self.outcome.faults if f.ended is not None),
            )
            if watchdog is not None:
                try:
                    await asyncio.to_thread(watchdog.wait, 10)
                except Exception:
                    watchdog.kill()
        return self.outcome

    def _abort(self, reason: str) -> None:
        self.outcome.stopped_by = self.outcome.stopped_by or reason
        self.outcome.aborted = self.outcome.aborted or reason

    def _account_for_the_plan(self, duration_s: float) -> None:
        """A plan that did not fully execute makes the run aborted, whatever else happened."""
        if self.outcome.aborted is not None:
            return
        ran = {f.fault_id: f for f in self.outcome.faults}
        problems = []
        for tf in self.timeline:
            record = ran.get(tf.fault_id)
            if record is None or record.started is None:
                why = record.error if record is not None and record.error else "never started"
                problems.append(f"{tf.fault_id} ({tf.fault.kind}) {why}")
            elif record.error:
                problems.append(f"{tf.fault_id} ({tf.fault.kind}): {record.error}")
        if problems:
            self.outcome.aborted = (
                f"{len(problems)} of {len(self.timeline)} planned faults did not run as "
                f"planned: " + "; ".join(problems)
            )

    async def _run_timeline(self, duration_s: float) -> None:
        self._tasks += [asyncio.create_task(self._one_fault(tf)) for tf in self.timeline]
        deadline = self.run_start + duration_s
        try:
            while time.time() < deadline and not self._finished:
                reason = self._why_stop()
                if reason is not None:
                    break
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.time())))
        finally:
            try:  # the load stops first: the faults still active are healed below, and after
                await asyncio.shield(self._stop_the_load())
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stop_the_load(self) -> None:
        """Stop the workload once, before the run's end heals anything; ``load_stop`` records
        when it was asked and ``load_stopped`` when the workload had stopped."""
        if self._load_stopped or self.stop_load is None:
            return
        self._load_stopped = True
        self.events.write("load_stop")
        try:
            await self.stop_load()
        except Exception as exc:  # the heal must still run; the run directory says why
            log.exception("stopping the workload failed")
            self.events.write("load_stopped", error=str(exc))
        else:
            self.events.write("load_stopped")

    def _why_stop(self) -> str | None:
        """A reason to end the timeline now (recorded as the run's abort), or None."""
        assert self.lease is not None
        if self._stop_reason is not None:
            self._abort(self._stop_reason)
            self.events.write("interrupted", reason=self._stop_reason)
            return self._stop_reason
        if not self.lease.held():
            lapsed = f"lease lapsed: {self.lease.lapsed}; the watchdog healed the cluster"
            self._abort(lapsed)
            self.events.write("lease_lapsed", reason=self.lease.lapsed)
            return lapsed
        condition = self.stop_check() if self.stop_check else None
        if condition is not None:
            self._abort(condition)
            self.events.write("stop_condition", reason=condition)
        return condition

    def _allowed(self) -> bool:
        return self.lease is not None and self.lease.held() and self._stop_reason is None

    async def _one_fault(self, tf: TimedFault) -> None:
        planned_start = tf.at_s
        planned_end = tf.at_s + tf.duration_s
        # Plan a little ahead (asking every node who leads what takes time on a busy machine),
        # so that the fault itself lands on schedule.
        await asyncio.sleep(max(0.0, self.run_start + planned_start - PLAN_AHEAD_S - time.time()))
        record = FaultRecord(
            tf.fault_id, tf.fault.kind, tf.fault.describe(), [], planned_start, planned_end
        )
        self.outcome.faults.append(record)
        if not self._allowed():
            record.error = "not injected: the run was stopping"
            return
        try:
            plan = await asyncio.to_thread(self._plan, tf)
        except (BlastRadiusExceeded, ValueError) as exc:
            record.error = f"refused: {exc}"
            self.events.write(
                "fault_refused", fault_id=tf.fault_id, fault=tf.fault.kind, reason=str(exc)
            )
            return
        await asyncio.sleep(max(0.0, self.run_start + planned_start - time.time()))
        if not self._allowed():
            record.error = "not injected: the run was stopping"
            return
        record.targets = sorted(plan.affected_storage_nodes() | plan.kills | plan.pauses)
        record.description = plan.describe()
        self.active_plans[tf.fault_id] = plan
        try:
            evidence = await asyncio.to_thread(
                self.nemesis.inject, tf.fault_id, plan, plan.describe(), self._allowed
            )
        except FaultRefused as exc:
            del self.active_plans[tf.fault_id]
            record.error = str(exc)
            self.events.write(
                "fault_refused", fault_id=tf.fault_id, fault=tf.fault.kind, reason=str(exc)
            )
            return
        except FaultNotLanded as exc:
            record.error = f"not landed: {exc}"
            self.outcome.failed_faults.append(tf.fault_id)
            evidence = None
            self.events.write(
                "fault_not_landed", fault_id=tf.fault_id, fault=tf.fault.kind, reason=str(exc)
            )
        except Exception as exc:  # half applied, perhaps: it stays active and is healed below
            record.error = f"failed: {exc}"
            self.outcome.failed_faults.append(tf.fault_id)
            evidence = None
            self.events.write(
                "fault_failed", fault_id=tf.fault_id, fault=tf.fault.kind, reason=str(exc)
            )
        finally:
            # The fault is in effect from the moment the nemesis applied it (the confirmation
            # only observes): that instant is its actual start.
            applied = self.nemesis.applied_at.get(tf.fault_id)
            if applied is not None and tf.fault_id in self.active_plans:
                record.started = applied - self.run_start
                self._fault_event(
                    "fault_start",
                    record,
                    record.started,
                    planned_start,
                    drift=round(record.started - planned_start, 4),
                    detail={"plan": plan.describe(), "params": tf.fault.params()},
                )
        if evidence is not None:
            self.events.write(
                "fault_confirmed", fault_id=tf.fault_id, fault=tf.fault.kind, detail=evidence
            )
        # A fault due to end with the run (or after it) is the run's end's to heal, once the
        # load has stopped: its own heal at the same instant would let writes after power-on
        # overwrite what it lost. Cancelling this task heals it below.
        own_heal = planned_end < self._end_s - CUT_SHORT_S
        try:
            if own_heal:
                await asyncio.sleep(max(0.0, self.run_start + planned_end - time.time()))
            else:
                await asyncio.get_running_loop().create_future()  # until the run's end
        finally:
            await asyncio.shield(asyncio.to_thread(self._heal_one, tf, record))

    def _plan(self, tf: TimedFault) -> FaultPlan:
        nodes = self.backend.process_ids("storage")
        # In parallel: a node that is down or paused costs its whole timeout, and the fault is due.
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            statuses = dict(zip(nodes, pool.map(self.backend.storage_status, nodes), strict=True))
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
        # The run's end may have healed everything meanwhile (a fault due then, a heal slow
        # beside CPU hogs): it took the plan and writes the fault's end, once.
        if self.active_plans.pop(tf.fault_id, None) is None:
            return
        record.ended = time.time() - self.run_start
        self._fault_event("fault_end", record, record.ended, record.planned_end)

    def _fault_event(
        self, event: str, record: FaultRecord, at: float, planned: float, **fields: Any
    ) -> None:
        """A fault's start or end in events.jsonl, at ``at`` (an end says how it kept time)."""
        if event == "fault_end":
            fields = {**self._end_timing(record), **fields}
        self.events.write(
            event,
            time=round(at, 4),
            fault_id=record.fault_id,
            fault=record.kind,
            targets=record.targets,
            planned=planned,
            **fields,
        )

    def _end_timing(self, record: FaultRecord) -> dict[str, Any]:
        """How a fault's end relates to its plan: its ``drift`` (late, or on time), or, for a
        fault the run ended before its planned end (an abort, a signal, the run's end), how
        long it was ``cut_short`` and by what; an early end is not drift."""
        assert record.ended is not None
        early = record.planned_end - record.ended
        if early <= CUT_SHORT_S:
            return {"drift": round(record.ended - record.planned_end, 4)}
        by = self.outcome.aborted or self._stop_reason or "the run's end"
        return {"cut_short": round(early, 4), "cut_short_by": by}

    async def _heal_everything(self) -> None:
        ending = list(self.active_plans)
        self.active_plans.clear()
        await asyncio.to_thread(self.nemesis.heal_all)
        now = time.time() - self.run_start
        for record in self.outcome.faults:
            if record.fault_id in ending:
                record.ended = now
                self._fault_event("fault_end", record, now, record.planned_end, reason="run ending")
        self.events.write("heal")
