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
from .target_fault import TargetFault
from .view import ClusterView


class PowerOffNode(TargetFault, kind="power_off_node", scope="process", effect="kill"):
    """Power off one process (normally a storage node): SIGKILL; power-on restarts it."""


class PowerOffRack(TargetFault, kind="power_off_rack", scope="rack", effect="kill"):
    """Power off a rack: SIGKILL every storage node on it (routers and MemDS are on no rack)."""


class PowerOffAz(TargetFault, kind="power_off_az", scope="az", effect="kill"):
    """Power off an AZ: SIGKILL its storage nodes, routers, MemDS servers, and gac if there."""


class PauseNode(TargetFault, kind="pause_node", scope="process", effect="pause"):
    """Gray failure: SIGSTOP a process so it holds its connections but answers nothing."""


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
