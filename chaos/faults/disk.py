"""Disk faults: bit rot in one replica's files, for scrub to detect and repair.

rot = plan(BitRotFault("sn-a1", "any", "wal", 3), view).bitrot[0]
rot.group          # a group with a replica on sn-a1, chosen by the view's rng
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic.dataclasses import dataclass

from .catalog import FAULT_CONFIG, Count, Fault, param, register
from .errors import UnknownTarget
from .plans import BitRot, FaultPlan, make_plan
from .targets import check, resolve_group, resolve_process
from .view import ClusterView


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class BitRotFault(Fault):
    """Flip random bits in one replica's data (SQLite) or WAL, for scrub to detect and repair."""

    kind: ClassVar[str] = "bit_rot"
    node: str = param("the storage node, e.g. sn-a1")
    group: str = param("a group with a replica on the node; 'any' lets the rng pick one")
    target: Literal["data", "wal"] = param("which file: data or wal", default="data")
    flips: Count = param("how many bits to flip", default=1)

    def __post_init__(self) -> None:
        check(self.flips >= 1, f"flips must be >= 1, got {self.flips!r}", "flips")

    def plan(self, view: ClusterView) -> FaultPlan:
        node = resolve_process(view, self.node, f"{self.kind} node", "node", storage_only=True)
        g = resolve_group(view, self.group, self.kind, on=node)
        if node not in g.members:
            on = sorted(x.group for x in view.groups.values() if node in x.members)
            raise UnknownTarget(
                f"{self.kind}: {node} holds no replica of {g.group} (members: "
                f"{', '.join(g.members)}); groups on {node}: {', '.join(on) or 'none'}",
                "group",
            )
        rot = BitRot(node, g.group, self.target, self.flips)
        return make_plan(view, self.describe(), bitrot=(rot,))
