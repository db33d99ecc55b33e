"""Power and process faults: power off a node, a rack or an AZ, pause a process, roll restarts.

plan(PowerOffAz("az-b"), view).kills        # every process in az-b: SIGKILL, then power on
plan(PauseNode("sn-b1"), view).pauses       # SIGSTOP; heal is SIGCONT
plan(RollingRestart("storage"), view).rolling   # one at a time, healthy in between
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic.dataclasses import dataclass

from .catalog import FAULT_CONFIG, Fault, param, register
from .plans import FaultPlan, make_plan
from .targets import resolve_az, resolve_process, resolve_rack
from .view import ClusterView


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class PowerOffNode(Fault):
    """Power off one process (normally a storage node): SIGKILL; power-on restarts it."""

    kind: ClassVar[str] = "power_off_node"
    target: str = param("the process to power off, e.g. sn-a1 (rt-a, md-a and gac work too)")

    def plan(self, view: ClusterView) -> FaultPlan:
        node = resolve_process(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), kills=frozenset({node}))


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class PowerOffRack(Fault):
    """Power off a rack: SIGKILL every storage node on it (routers and MemDS are on no rack)."""

    kind: ClassVar[str] = "power_off_rack"
    target: str = param("the rack, e.g. az-a/r1")

    def plan(self, view: ClusterView) -> FaultPlan:
        nodes = resolve_rack(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), kills=nodes)


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class PowerOffAz(Fault):
    """Power off an AZ: SIGKILL its storage nodes, routers, MemDS servers, and gac if there."""

    kind: ClassVar[str] = "power_off_az"
    target: str = param("the AZ, e.g. az-b")

    def plan(self, view: ClusterView) -> FaultPlan:
        procs = resolve_az(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), kills=procs)


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class PauseNode(Fault):
    """Gray failure: SIGSTOP a process so it holds its connections but answers nothing."""

    kind: ClassVar[str] = "pause_node"
    target: str = param("the process to pause, e.g. sn-b1")

    def plan(self, view: ClusterView) -> FaultPlan:
        node = resolve_process(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), pauses=frozenset({node}))


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class RollingRestart(Fault):
    """Restart processes one at a time (an upgrade), each after the previous is healthy again."""

    kind: ClassVar[str] = "rolling_restart"
    role: Literal["storage", "router", "memds", "all"] = param(
        "which processes: storage, router, memds or all", default="storage"
    )

    def plan(self, view: ClusterView) -> FaultPlan:
        roles = ("storage", "gac", "memds", "router") if self.role == "all" else (self.role,)
        order = tuple(p for r in roles for p in view.roles.get(r, ()))
        return make_plan(view, self.describe(), rolling=order)
