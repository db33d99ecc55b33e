"""Faults aimed at replication groups: isolate a group's leader, a minority or a majority of
its replicas, or every current leader.

``group`` names a group of the view (``gameday-register.p0``, ``meta``), or ``any`` for one the
view's rng picks among those with a leader.

    plan(LeaderIsolation("meta"), view).cuts      # every link to and from meta's leader
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pydantic.dataclasses import dataclass

from .catalog import FAULT_CONFIG, Fault, param, register
from .errors import NoLeader
from .plans import FaultPlan, make_plan
from .targets import between, leader_of, resolve_group, touching
from .view import ClusterView


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class LeaderIsolation(Fault):
    """Isolate the current leader of a replication group from every other process."""

    kind: ClassVar[str] = "leader_isolation"
    group: str = param("the group, e.g. gameday.p0 or meta; 'any' lets the rng pick one")

    def plan(self, view: ClusterView) -> FaultPlan:
        leader = leader_of(view, self.group, self.kind)
        label = f"{self.describe()} [leader {leader}]"
        return make_plan(view, label, cuts=touching(view, [leader]))


def _isolate_some(
    view: ClusterView, fault: Fault, group: str, count: Callable[[int], int]
) -> FaultPlan:
    g = resolve_group(view, group, fault.kind)
    chosen = frozenset(view.rng.sample(sorted(g.members), count(len(g.members))))
    rest = frozenset(view.processes()) - chosen
    label = f"{fault.describe()} [{g.group}: {', '.join(sorted(chosen))}]"
    return make_plan(view, label, cuts=between(view, [chosen, rest]))


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class MinorityOf(Fault):
    """Isolate a minority of a group's replicas (chosen by the rng) from every other process."""

    kind: ClassVar[str] = "minority_of"
    group: str = param("the group, e.g. gameday.p1; 'any' lets the rng pick one")

    def plan(self, view: ClusterView) -> FaultPlan:
        return _isolate_some(view, self, self.group, lambda n: (n - 1) // 2)


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class MajorityOf(Fault):
    """Isolate a majority of a group's replicas (together, chosen by the rng) from the rest."""

    kind: ClassVar[str] = "majority_of"
    group: str = param("the group, e.g. gameday.p1; 'any' lets the rng pick one")

    def plan(self, view: ClusterView) -> FaultPlan:
        return _isolate_some(view, self, self.group, lambda n: n // 2 + 1)


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
