"""The nemesis: applies fault plans to a backend, confirms they landed, and heals them exactly.

Plans are data (chaos/faults/); this module carries them out through the backend
(chaos/backends/base.py) only: SIGKILL / restart for power (and, for a power loss, the backend
discarding what each storage node did not fsync), SIGSTOP / SIGCONT for pauses, the
backend's link faults (Toxiproxy toxics named after the fault) for links, bytes flipped in the
files cluster/storage/layout.py names for bit rot. Several faults may overlap: healing one
restarts, resumes or reconnects only what no other active fault still holds down. Active
faults are also written to ``<state_dir>/faults.json`` so that another process (``gameday
fault list``, ``gameday heal``, the dead-man's switch) can see and undo them.

    nemesis = Nemesis(backend)
    evidence = nemesis.inject("f1", plan, description="power off az-b")
    nemesis.heal("f1")
    nemesis.heal_all()       # from any state: toxics gone, every process running and healthy
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.backends.base import Backend
from chaos.faults import Degradation, FaultPlan
from cluster.storage import layout

log = logging.getLogger(__name__)


class FaultNotLanded(RuntimeError):
    """The fault was applied but its effect could not be observed: the run must not trust it."""


class FaultRefused(RuntimeError):
    """The fault was not applied at all (the orchestrator no longer holds its lease)."""


@dataclass
class ActiveFault:
    fault_id: str
    description: str
    plan: FaultPlan
    started: float = field(default_factory=time.time)


class Nemesis:
    def __init__(
        self,
        backend: Backend,
        rng: random.Random | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        self.backend = backend
        # The dead-man's switch waits this long for the lock, then heals anyway: an owner that
        # was stopped (SIGSTOP) while holding it would otherwise block the heal forever.
        self.lock_timeout = lock_timeout
        self.rng = rng or random.Random(0)
        self.active: dict[str, ActiveFault] = {}
        self.applied_at: dict[str, float] = {}  # fault id -> when its last action landed

    @property
    def state_file(self) -> Path:
        return self.backend.state_dir / "faults.json"

    # --- inject --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One nemesis at a time per cluster, across processes: the orchestrator and the
        dead-man's switch never start the same process twice or heal under an injection."""
        self.backend.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.backend.state_dir / "nemesis.lock").open("a") as lock:
            if self.lock_timeout is None:
                fcntl.flock(lock, fcntl.LOCK_EX)
                locked = True
            else:
                locked = _lock_within(lock.fileno(), self.lock_timeout)
                if not locked:
                    log.warning("nemesis lock held by a stalled owner: healing without it")
            try:
                yield
            finally:
                if locked:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def inject(
        self,
        fault_id: str,
        plan: FaultPlan,
        description: str = "",
        allowed: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Apply ``plan``; returns the evidence that it landed (raises FaultNotLanded if not).

        ``allowed`` is asked once the nemesis is ours: False (a lapsed lease) refuses the fault.
        """
        with self.exclusive():
            if allowed is not None and not allowed():
                raise FaultRefused(f"{fault_id} not injected: the orchestrator lost its lease")
            if plan.power_losses and not self.backend.supports_power_loss:
                raise FaultNotLanded(
                    f"{fault_id} not injected: power loss needs the storage nodes on the "
                    f"power-loss layer, which this {self.backend.name} cluster does not have"
                )
            try:
                lost = self._apply(fault_id, plan, description)
            finally:
                self.applied_at[fault_id] = time.time()
        evidence = self.confirm(plan)  # outside the lock: observing takes seconds, heals must not
        if lost:
            evidence["lost_unsynced"] = lost
        return evidence

    def _apply(self, fault_id: str, plan: FaultPlan, description: str) -> dict[str, Any]:
        """Carry ``plan`` out; returns what each power loss discarded, by node."""
        fault = ActiveFault(fault_id, description or plan.describe(), plan)
        self.active[fault_id] = fault
        self._record(fault_id, {"description": fault.description, "started": fault.started})
        backend = self.backend
        for process_id in sorted(plan.kills):
            self.backend.kill(process_id)
        lost: dict[str, Any] = {}
        for node in sorted(plan.power_losses):  # every process is dead first, as in a blackout
            seed = self.rng.randrange(2**31)
            lost[node] = backend.lose_unsynced(node, torn=plan.torn, seed=seed)
        for process_id in sorted(plan.pauses):
            self.backend.pause(process_id)
        if plan.cuts or plan.degradations or plan.resets or plan.disabled:
            if not backend.has_mesh:
                raise FaultNotLanded("network faults need the Toxiproxy mesh (cluster up with it)")
            if plan.cuts:
                backend.cut_links(plan.cuts, fault_id=fault_id)
            for n, d in enumerate(plan.degradations):
                _degrade(backend, d, f"{fault_id}-d{n}")
            if plan.resets:
                backend.reset_links(plan.resets, fault_id=fault_id)
            if plan.disabled:
                backend.disable_links(plan.disabled)
        for rot in plan.bitrot:
            self._flip_bytes(rot.node, rot.group, rot.target, rot.flips)
        for process_id in plan.rolling:
            self._restart_and_wait(process_id)
        return lost

    def confirm(self, plan: FaultPlan) -> dict[str, Any]:
        """Observe the fault's effect: processes down or stopped, links unreachable."""
        evidence: dict[str, Any] = {}
        if plan.kills:
            alive = [p for p in sorted(plan.kills) if self.backend.alive(p)]
            if alive:
                raise FaultNotLanded(f"still running after SIGKILL: {', '.join(alive)}")
            evidence["down"] = sorted(plan.kills)
        if plan.pauses:
            evidence["paused"] = sorted(plan.pauses)
        if plan.cuts:
            evidence["probes"] = self._probe_cuts(plan)
            seen = self._peer_silence(plan)
            if seen is not None:
                evidence["node_metrics"] = seen
        return evidence

    def _peer_silence(self, plan: FaultPlan, timeout: float = 3.0) -> dict[str, Any] | None:
        """The nodes' own view: a storage node stops hearing a peer whose link to it is cut.

        Evidence, not a requirement (a node that is itself down reports nothing): returns what
        the receiving node said, or None when no storage-to-storage link was cut.
        """
        storage = set(self.backend.process_ids("storage"))
        pairs = sorted((a, b) for a, b in plan.cuts if a in storage and b in storage)
        if not pairs:
            return None
        src, dst = pairs[0]
        deadline = time.monotonic() + timeout
        heard: float | None = None
        while time.monotonic() < deadline:
            status = self.backend.storage_status(dst) or {}
            heard = (status.get("peers", {}).get(src) or {}).get("heard_seconds_ago")
            if heard is not None and heard > 1.0:
                break
            time.sleep(0.2)
        return {"node": dst, "peer": src, "heard_seconds_ago": heard}

    def _probe_cuts(self, plan: FaultPlan) -> list[dict[str, Any]]:
        sample = sorted(plan.cuts)[:: max(1, len(plan.cuts) // 3)][:3]
        results = []
        for pair in sample:
            result = self.backend.probe_link(pair, timeout=1.0)
            if result.reachable:
                raise FaultNotLanded(f"link {pair[0]} -> {pair[1]} still answers after the cut")
            results.append(
                {"link": f"{pair[0]}>{pair[1]}", "reachable": False, "detail": result.detail}
            )
        return results

    # --- heal ----------------------------------------------------------------------------------

    def heal(self, fault_id: str) -> None:
        """Undo one fault, leaving whatever other active faults hold down in place."""
        with self.exclusive():
            self._heal(fault_id)

    def _heal(self, fault_id: str) -> None:
        fault = self.active.pop(fault_id, None)
        if fault is None:
            return
        plan = fault.plan
        still = [f.plan for f in self.active.values()]
        held_kills = set().union(*(p.kills for p in still)) if still else set()
        held_pauses = set().union(*(p.pauses for p in still)) if still else set()
        backend = self.backend
        others = set(recorded_faults(backend.state_dir)) - {fault_id} - set(self.active)
        lone = _on_links(plan) and not others and not any(_on_links(p) for p in still)
        if backend.has_mesh and lone:
            # The only fault on the mesh: one Toxiproxy call ends it at once (removing a cut's
            # toxics link by link takes seconds on a busy machine: each closes connections).
            backend.heal_network()
        elif backend.has_mesh:
            if plan.cuts:
                backend.remove_link_faults(plan.cuts, fault_id=fault_id)
            for n, d in enumerate(plan.degradations):
                backend.remove_link_faults(d.links, fault_id=f"{fault_id}-d{n}")
            if plan.resets:
                backend.remove_link_faults(plan.resets, fault_id=fault_id)
            held_disabled = set().union(*(p.disabled for p in still)) if still else set()
            if plan.disabled:
                backend.enable_links(set(plan.disabled) - held_disabled)
        for process_id in sorted(plan.pauses - held_pauses):
            self.backend.resume(process_id)
        for process_id in sorted(plan.kills - held_kills):
            self.backend.start(process_id)
        self._record(fault_id, None)

    def heal_all(self, timeout: float = 60.0) -> None:
        """From any state: every toxic removed, every proxy enabled, every process running."""
        with self.exclusive():
            self._heal_all()
        self.backend.wait_healthy(timeout)

    def _heal_all(self) -> None:
        self.backend.heal_network()
        for process_id in self.backend.process_ids():
            if self.backend.alive(process_id):
                self.backend.resume(process_id)
            else:
                self.backend.start(process_id)
        self.active.clear()
        self._write({})

    # --- helpers -------------------------------------------------------------------------------

    def _restart_and_wait(self, process_id: str) -> None:
        self.backend.kill(process_id)
        self.backend.start(process_id)
        self.backend.wait_healthy(60.0)
        time.sleep(1.0)  # let the node's groups elect or catch up before the next one goes

    def _flip_bytes(self, node: str, group: str, target: str, flips: int) -> None:
        replica = self.backend.replica_dir(node, group)
        files = [layout.items_file(replica)] if target == "data" else layout.wal_segments(replica)
        files = [f for f in files if f.exists() and f.stat().st_size > 64]
        if not files:
            raise FaultNotLanded(f"no {target} file to rot for {group} on {node}")
        path = files[0]
        with path.open("r+b") as fh:
            size = path.stat().st_size
            for _ in range(flips):
                offset = self.rng.randrange(size // 4, size)  # spare the headers
                fh.seek(offset)
                byte = fh.read(1)
                fh.seek(offset)
                fh.write(bytes([byte[0] ^ 0xFF]))
        log.warning("flipped %d byte(s) in %s", flips, path)

    def _record(self, fault_id: str, entry: dict[str, Any] | None) -> None:
        """Add or drop one fault in the shared file, keeping other processes' entries."""
        state = recorded_faults(self.backend.state_dir)
        if entry is None:
            state.pop(fault_id, None)
        else:
            state[fault_id] = entry
        self._write(state)

    def _write(self, state: dict[str, Any]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)


def forget_faults(state_dir: Path) -> None:
    """Drop the record of active faults of a cluster that was torn down: none of its processes
    runs any more, so nothing of it is faulted (`gameday fault list` and a campaign's leftover
    check would otherwise list faults of a cluster that is gone)."""
    (state_dir / "faults.json").unlink(missing_ok=True)


def recorded_faults(state_dir: Path) -> dict[str, Any]:
    """The active faults another process recorded (for `gameday fault list`)."""
    path = state_dir / "faults.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def _degrade(backend: Backend, d: Degradation, fault_id: str) -> None:
    # Faults speak kilobits/s; Toxiproxy's bandwidth rate is in kilobytes/s.
    kbytes = None if d.bandwidth_kbps is None else max(1, d.bandwidth_kbps // 8)
    backend.degrade_links(
        d.links,
        fault_id=fault_id,
        latency_ms=round(d.latency_ms),
        jitter_ms=round(d.jitter_ms),
        bandwidth_kbytes=kbytes,
        slicer=d.slicer,
        slow_close_ms=round(d.slow_close_ms),
    )


def _lock_within(fd: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def _on_links(plan: FaultPlan) -> bool:
    return bool(plan.cuts or plan.degradations or plan.resets or plan.disabled)


def _links(links: dict[tuple[str, str], Any], pairs: Any) -> list[Any]:
    return [links[pair] for pair in sorted(pairs) if pair in links]
