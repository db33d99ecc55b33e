"""Link faults: slow, slice, reset or refuse the links from one side to another.

Every kind here has the same shape, so it is written once in ``LinkFault``: ``from_side`` and
``to_side`` pick the links (sides as in chaos/faults/targets.py), ``both_ways`` adds the
reverse direction, and the kind says in ``breaks`` what happens to the links it selected.

    plan(Latency("az-a", "az-b", 200), view).degradations[0].latency_ms   # -> 200.0
    plan(ResetPeer("sn-a1", "*", both_ways=True), view).resets             # every link of sn-a1
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic.dataclasses import dataclass

from chaos.links import LinkPair

from .catalog import FAULT_CONFIG, Count, Fault, Number, param, register
from .plans import Degradation, FaultPlan, make_plan
from .targets import check, links_from_to
from .view import ClusterView


def _non_negative(value: float, name: str) -> None:
    check(value >= 0, f"{name} must be >= 0, got {value!r}", name)


@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class LinkFault(Fault):
    """Base of the faults on the links from one side to another (not itself in the catalog)."""

    from_side: str = param("senders, e.g. az-a or sn-a1")
    to_side: str = param("receivers, e.g. '*' (everyone else) or az-b")
    both_ways: bool = param("also the reverse direction", default=False, kw_only=True)

    def links(self, view: ClusterView) -> frozenset[LinkPair]:
        """The links this fault acts on."""
        return links_from_to(view, self.kind, self.from_side, self.to_side, self.both_ways)

    def breaks(self, links: frozenset[LinkPair]) -> dict[str, Any]:
        """What happens to ``links``: the ``FaultPlan`` fields to set."""
        raise NotImplementedError

    def plan(self, view: ClusterView) -> FaultPlan:
        return make_plan(view, self.describe(), **self.breaks(self.links(view)))


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class Latency(LinkFault):
    """Delay every message on the links from one side to another, with optional jitter."""

    kind: ClassVar[str] = "latency"
    ms: Number = param("added delay in milliseconds")
    jitter_ms: Number = param("random +/- variation in milliseconds", default=0.0)

    def __post_init__(self) -> None:
        _non_negative(self.ms, "ms")
        _non_negative(self.jitter_ms, "jitter_ms")

    def breaks(self, links: frozenset[LinkPair]) -> dict[str, Any]:
        return {"degradations": (Degradation(links, latency_ms=self.ms, jitter_ms=self.jitter_ms),)}


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class Bandwidth(LinkFault):
    """Limit the bandwidth of the links from one side to another."""

    kind: ClassVar[str] = "bandwidth"
    kbps: Count = param("the limit in kilobits per second")

    def __post_init__(self) -> None:
        check(self.kbps >= 1, f"kbps must be >= 1, got {self.kbps!r}", "kbps")

    def breaks(self, links: frozenset[LinkPair]) -> dict[str, Any]:
        return {"degradations": (Degradation(links, bandwidth_kbps=self.kbps),)}


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class Slicer(LinkFault):
    """Slice the byte stream on links into small, delayed chunks (frames arrive in pieces)."""

    kind: ClassVar[str] = "slicer"

    def breaks(self, links: frozenset[LinkPair]) -> dict[str, Any]:
        return {"degradations": (Degradation(links, slicer=True),)}


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class SlowClose(LinkFault):
    """Delay the closing of connections on links from one side to another."""

    kind: ClassVar[str] = "slow_close"
    ms: Number = param("delay before a close goes through, in milliseconds")

    def __post_init__(self) -> None:
        _non_negative(self.ms, "ms")

    def breaks(self, links: frozenset[LinkPair]) -> dict[str, Any]:
        return {"degradations": (Degradation(links, slow_close_ms=self.ms),)}


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class ResetPeer(LinkFault):
    """Reset (TCP RST) every connection on the links from one side to another."""

    kind: ClassVar[str] = "reset_peer"

    def breaks(self, links: frozenset[LinkPair]) -> dict[str, Any]:
        return {"resets": links}


@register
@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class DisableLinks(LinkFault):
    """Disable the proxies of links from one side to another: connections are refused."""

    kind: ClassVar[str] = "disable_links"

    def breaks(self, links: frozenset[LinkPair]) -> dict[str, Any]:
        return {"disabled": links}
