"""Partitions: cut links so that parts of the cluster cannot hear each other.

A cut is Toxiproxy's ``timeout`` toxic with timeout 0 on a directed link: data is swallowed
silently. Partitioning sides cuts every link between a process on one side and one on another,
in both directions (``one_way``: one direction); a process on no side keeps all its links.
Randomized shapes (``bridge``, ``random_halves``, ``majorities_ring``) draw only from
``view.rng``, so the same seed gives the same plan.

    split = plan(Split("az-a|az-b,az-c"), view)
    ("sn-a1", "sn-b1") in split.cuts      # -> True, and ("sn-b1", "sn-a1") too
    ("sn-b1", "sn-c1") in split.cuts      # -> False: both are on the same side
"""

from __future__ import annotations

from typing import ClassVar

from pydantic.dataclasses import dataclass

from .catalog import FAULT_CONFIG, Fault, param, register
from .plans import FaultPlan, make_plan
from .target_fault import TargetFault
from .targets import between, check, links_from_to, resolve_sides
from .view import ClusterView


class IsolateNode(TargetFault, kind="isolate_node", scope="process", effect="isolate"):
    """Cut every link to and from one process: it is alive but alone."""


class IsolateAz(TargetFault, kind="isolate_az", scope="az", effect="isolate"):
    """Partition an AZ (all its processes) from the rest of the cluster, both directions."""


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class Split(Fault):
    """Partition the cluster into sides: every link between two sides is cut, both directions."""

    kind: ClassVar[str] = "split"
    sides: str = param("sides separated by '|', e.g. 'az-a|az-b,az-c' or 'sn-a1,sn-b1|*'")

    def plan(self, view: ClusterView) -> FaultPlan:
        specs = [("sides", s) for s in self.sides.split("|")]
        check(len(specs) >= 2, f"{self.kind}: needs at least two sides, e.g. 'az-a|*'", "sides")
        sides = resolve_sides(view, specs, f"{self.kind} sides")
        return make_plan(view, self.describe(), cuts=between(view, sides))


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class OneWay(Fault):
    """Drop traffic from one side to another while the reverse direction still flows."""

    kind: ClassVar[str] = "one_way"
    from_side: str = param("senders whose messages are dropped, e.g. az-a")
    to_side: str = param("receivers that stop hearing them, e.g. '*' or az-b,az-c")

    def plan(self, view: ClusterView) -> FaultPlan:
        cuts = links_from_to(view, self.kind, self.from_side, self.to_side, both_ways=False)
        return make_plan(view, self.describe(), cuts=cuts)


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class Bridge(Fault):
    """Split the storage nodes into two halves that cannot talk, both seeing one bridge node."""

    kind: ClassVar[str] = "bridge"

    def plan(self, view: ClusterView) -> FaultPlan:
        bridge, *rest = _shuffled_storage(view)
        sides = _halves(rest)
        label = f"{self.describe()} [bridge {bridge}]"
        return make_plan(view, label, cuts=between(view, sides))


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class MajoritiesRing(Fault):
    """Each storage node sees a different majority (a ring; Jepsen's majorities-ring).

    Nodes are placed on a ring in rng order; each keeps its links to the nodes within ring
    distance k, the least k that lets it see a majority (itself included), and loses the rest.
    """

    kind: ClassVar[str] = "majorities_ring"

    def plan(self, view: ClusterView) -> FaultPlan:
        ring = _shuffled_storage(view)
        n = len(ring)
        k = (n // 2) // 2 + (n // 2) % 2  # ceil((majority - 1) / 2)
        pos = {p: i for i, p in enumerate(ring)}

        def far(a: str, b: str) -> bool:
            d = abs(pos[a] - pos[b])
            return min(d, n - d) > k

        cuts = frozenset((a, b) for a, b in view.links() if a in pos and b in pos and far(a, b))
        return make_plan(view, f"{self.describe()} [ring {' '.join(ring)}]", cuts=cuts)


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class RandomHalves(Fault):
    """Split the storage nodes into a random minority half and majority half."""

    kind: ClassVar[str] = "random_halves"

    def plan(self, view: ClusterView) -> FaultPlan:
        sides = _halves(_shuffled_storage(view))
        label = f"{self.describe()} [{','.join(sorted(sides[0]))}|{','.join(sorted(sides[1]))}]"
        return make_plan(view, label, cuts=between(view, sides))


def _shuffled_storage(view: ClusterView) -> list[str]:
    """The storage nodes in the view's rng order (the same seed, the same order)."""
    nodes = list(view.storage)
    view.rng.shuffle(nodes)
    return nodes


def _halves(nodes: list[str]) -> list[frozenset[str]]:
    """``nodes`` split in two: the first (smaller, for an odd count) half and the rest."""
    half = len(nodes) // 2
    return [frozenset(nodes[:half]), frozenset(nodes[half:])]
