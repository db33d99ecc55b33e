"""Power and process faults: power off or lose power on a node, a rack or an AZ, pause a
process, roll restarts.

plan(PowerOffAz("az-b"), view).kills        # every process in az-b: SIGKILL, then power on
plan(PowerLossRack("az-a/r1"), view).power_losses   # SIGKILL, and unsynced bytes are gone

Power off and power loss differ in the page cache. ``power_off_*`` is SIGKILL: the operating
system outlives the process, so every byte it wrote is still there when it starts again, synced
or not. ``power_loss_*`` takes the operating system down too: every storage node it hits loses
whatever it wrote but did not fsync (its data directory sits on the layer of
chaos/backends/lazyfs.py), so a missing fsync shows up as lost acknowledged writes.
plan(PauseNode("sn-b1"), view).pauses       # SIGSTOP; heal is SIGCONT
plan(RollingRestart("storage"), view).rolling   # one at a time, healthy in between
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic.dataclasses import dataclass

from .catalog import FAULT_CONFIG, Fault, param, register
from .plans import FaultPlan, make_plan
from .target_fault import TargetFault
from .view import ClusterView


class PowerOffNode(TargetFault, kind="power_off_node", scope="process", effect="kill"):
    """Power off one process (normally a storage node): SIGKILL; power-on restarts it. The
    page cache survives (the OS stays up): unsynced writes are kept, unlike power_loss_node."""


class PowerOffRack(TargetFault, kind="power_off_rack", scope="rack", effect="kill"):
    """Power off a rack: SIGKILL every storage node on it (routers and MemDS are on no rack)."""


class PowerOffAz(TargetFault, kind="power_off_az", scope="az", effect="kill"):
    """Power off an AZ: SIGKILL its storage nodes, routers, MemDS servers, and gac if there."""


@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class PowerLoss(TargetFault):
    """Base of the power_loss kinds (not itself in the catalog): kill, and lose what is unsynced."""

    torn: bool = param(
        "also tear the last unsynced write: a prefix of it (whole sectors) survives",
        default=False,
    )

    def breaks(self, view: ClusterView, targets: frozenset[str]) -> dict[str, Any]:
        return {
            "kills": targets,
            "power_losses": frozenset(t for t in targets if t in view.storage),
            "torn": self.torn,
        }


class PowerLossNode(PowerLoss, kind="power_loss_node", scope="process"):
    """Power loss on one process: SIGKILL, and a storage node loses every byte not fsynced
    (the page cache dies with the machine, unlike power_off_node); power-on remounts what was
    synced."""


class PowerLossRack(PowerLoss, kind="power_loss_rack", scope="rack"):
    """Power loss on a rack: its storage nodes are killed and lose every byte not fsynced."""


class PowerLossAz(PowerLoss, kind="power_loss_az", scope="az"):
    """Power loss on an AZ: every process killed; its storage nodes lose every byte not
    fsynced."""


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
