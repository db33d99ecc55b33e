"""Faults aimed at replication groups: isolate a group's leader, a minority or a majority of
its replicas, or every current leader.

``group`` names a group of the view (``gameday-register.p0``, ``meta``), or ``any`` for one the
view's rng picks among those with a leader.

    plan(LeaderIsolation("meta"), view).cuts      # every link to and from meta's leader
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic.dataclasses import dataclass

from .catalog import FAULT_CONFIG, Fault, param, register
from .errors import NoLeader
from .plans import FaultPlan, make_plan
from .targets import between, leader_of, resolve_group, touching
from .view import ClusterView

Pick = Literal["leader", "minority", "majority"]


@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class GroupFault(Fault):
    """Base of the faults on some replicas of one group (not itself in the catalog): a kind
    says which replicas it isolates (``pick``) and is registered, as TargetFault kinds are."""

    pick: ClassVar[Pick] = "leader"
    group: str = param("the group, e.g. gameday.p0 or meta; 'any' lets the rng pick one")

    def __init_subclass__(cls, *, kind: str, pick: Pick) -> None:
        # No super() call: see TargetFault (slots make GroupFault a new class).
        cls.kind, cls.pick = kind, pick
        register(cls)

    def plan(self, view: ClusterView) -> FaultPlan:
        if self.pick == "leader":
            leader = leader_of(view, self.group, self.kind)
            label = f"{self.describe()} [leader {leader}]"
            return make_plan(view, label, cuts=touching(view, [leader]))
        g = resolve_group(view, self.group, self.kind)
        n = len(g.members)
        count = (n - 1) // 2 if self.pick == "minority" else n // 2 + 1
        chosen = frozenset(view.rng.sample(sorted(g.members), count))
        rest = frozenset(view.processes()) - chosen
        label = f"{self.describe()} [{g.group}: {', '.join(sorted(chosen))}]"
        return make_plan(view, label, cuts=between(view, [chosen, rest]))


class LeaderIsolation(GroupFault, kind="leader_isolation", pick="leader"):
    """Isolate the current leader of a replication group from every other process."""


class MinorityOf(GroupFault, kind="minority_of", pick="minority"):
    """Isolate a minority of a group's replicas (chosen by the rng) from every other process."""


class MajorityOf(GroupFault, kind="majority_of", pick="majority"):
    """Isolate a majority of a group's replicas (together, chosen by the rng) from the rest."""


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class Leaders(Fault):
    """Isolate every node that currently leads a group, each from every other process."""

    kind: ClassVar[str] = "leaders"

    def plan(self, view: ClusterView) -> FaultPlan:
        leaders = sorted({g.leader for g in view.groups.values() if g.leader is not None})
        if not leaders:
            raise NoLeader(f"{self.kind}: no group has a leader right now", None)
        label = f"{self.describe()} [{', '.join(leaders)}]"
        return make_plan(view, label, cuts=touching(view, leaders))
