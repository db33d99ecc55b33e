"""Plans: a fault as data (what to stop, which links to break) and what it takes down.

``make_plan`` builds a ``FaultPlan`` and works out its ``Footprint``: the processes out of
service, counting those a partition cuts off from the main part of the cluster.
``check_blast_radius`` refuses a plan that, with the faults already active, would take down
more AZs, racks or storage nodes than the scenario allows. The nemesis (chaos/nemesis.py)
applies a plan through a backend and heals it.

    p = make_plan(view, "power off az-b", kills=view.in_az("az-b"))
    p.footprint.azs                                     # -> frozenset({'az-b'})
    check_blast_radius([p], other, BlastRadius(max_azs=1), view.topology)  # may raise
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from chaos.links import LinkPair, links_text
from cluster.topology import Topology

from .errors import BlastRadiusExceeded
from .view import ClusterView


@dataclass(frozen=True, slots=True)
class Degradation:
    """Toxics on a set of links; zero / None / False means that toxic is not added."""

    links: frozenset[LinkPair]
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_kbps: int | None = None
    slicer: bool = False
    slow_close_ms: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.latency_ms or self.jitter_ms:
            jitter = f"±{self.jitter_ms:g}ms" if self.jitter_ms else ""
            parts.append(f"latency {self.latency_ms:g}ms{jitter}")
        if self.bandwidth_kbps is not None:
            parts.append(f"bandwidth {self.bandwidth_kbps}kbps")
        if self.slicer:
            parts.append("slicer")
        if self.slow_close_ms:
            parts.append(f"slow close {self.slow_close_ms:g}ms")
        return f"degrade {links_text(self.links)}: {', '.join(parts) or 'nothing'}"


@dataclass(frozen=True, slots=True)
class BitRot:
    """Flip ``flips`` random bits in ``node``'s copy of ``group`` (its SQLite data or WAL)."""

    node: str
    group: str
    target: Literal["data", "wal"]
    flips: int


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a plan takes out of service, for blast-radius limits.

    ``processes`` are down for the whole fault (killed, paused, or cut off on the smaller side of
    a partition); ``nodes``, ``racks`` and ``azs`` are the storage nodes among them, their racks,
    and the AZs of every down process. A rolling restart takes its ``rolling_*`` members down one
    at a time, so it counts as one more node (rack, AZ) at any moment.
    """

    processes: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    racks: frozenset[str] = frozenset()
    azs: frozenset[str] = frozenset()
    rolling_nodes: frozenset[str] = frozenset()
    rolling_racks: frozenset[str] = frozenset()
    rolling_azs: frozenset[str] = frozenset()

    def union(self, other: Footprint) -> Footprint:
        return Footprint(
            *(getattr(self, f.name) | getattr(other, f.name) for f in dataclasses.fields(self))
        )


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A fault as data: what to stop and which links to break. Empty fields mean no change."""

    label: str = ""
    kills: frozenset[str] = frozenset()  # SIGKILL; power-on restarts them
    # Storage nodes among ``kills`` that also lose every byte they did not fsync (power loss);
    # ``torn``: a prefix of each one's last unsynced write survives.
    power_losses: frozenset[str] = frozenset()
    torn: bool = False
    pauses: frozenset[str] = frozenset()  # SIGSTOP; heal is SIGCONT
    cuts: frozenset[LinkPair] = frozenset()  # silent drop: the timeout toxic with timeout 0
    degradations: tuple[Degradation, ...] = ()
    resets: frozenset[LinkPair] = frozenset()  # reset_peer toxic
    disabled: frozenset[LinkPair] = frozenset()  # proxy disabled: connection refused
    bitrot: tuple[BitRot, ...] = ()
    rolling: tuple[str, ...] = ()  # restart one at a time, waiting for health in between
    footprint: Footprint = Footprint()

    def affected_storage_nodes(self) -> frozenset[str]:
        """Storage nodes taken out of service, all at once or (rolling restart) in turn."""
        return self.footprint.nodes | self.footprint.rolling_nodes

    def affected_azs(self) -> frozenset[str]:
        """AZs with a process taken out of service, all at once or in turn."""
        return self.footprint.azs | self.footprint.rolling_azs

    def describe(self) -> str:
        """One line: ``power_off_az(target=az-b): kill md-b, rt-b, sn-b1, sn-b2; down: ...``."""
        parts = []
        if self.kills:
            parts.append(f"kill {', '.join(sorted(self.kills))}")
        if self.power_losses:
            torn = " (last write torn)" if self.torn else ""
            parts.append(f"lose unsynced writes of {', '.join(sorted(self.power_losses))}{torn}")
        if self.pauses:
            parts.append(f"pause {', '.join(sorted(self.pauses))}")
        if self.cuts:
            parts.append(f"cut {links_text(self.cuts)}")
        parts += [d.describe() for d in self.degradations]
        if self.resets:
            parts.append(f"reset {links_text(self.resets)}")
        if self.disabled:
            parts.append(f"disable {links_text(self.disabled)}")
        parts += [
            f"flip {b.flips} bit(s) in {b.node}'s {b.target} of {b.group}" for b in self.bitrot
        ]
        if self.rolling:
            parts.append(f"restart one at a time: {', '.join(self.rolling)}")
        if self.footprint.processes:
            parts.append(f"takes down {', '.join(sorted(self.footprint.processes))}")
        body = "; ".join(parts) or "no change"
        return f"{self.label}: {body}" if self.label else body


def make_plan(view: ClusterView, label: str = "", **parts: Any) -> FaultPlan:
    """A ``FaultPlan`` with its footprint worked out from the kills, pauses and broken links."""
    draft = FaultPlan(label, **parts)
    down = set(draft.kills | draft.pauses)
    blocked = draft.cuts | draft.resets | draft.disabled
    if blocked:
        down |= _cut_off(view, blocked, down)
    rolling_nodes = frozenset(p for p in draft.rolling if p in view.storage)
    nodes = frozenset(p for p in down if p in view.storage)
    footprint = Footprint(
        processes=frozenset(down),
        nodes=nodes,
        racks=frozenset(view.topology.rack_of(n) for n in nodes),
        azs=frozenset(view.process_azs[p] for p in down),
        rolling_nodes=rolling_nodes,
        rolling_racks=frozenset(view.topology.rack_of(n) for n in rolling_nodes),
        rolling_azs=frozenset(view.process_azs[p] for p in draft.rolling),
    )
    return dataclasses.replace(draft, footprint=footprint)


def _cut_off(view: ClusterView, blocked: frozenset[LinkPair], down: set[str]) -> set[str]:
    """Live processes that ``blocked`` links leave out of service.

    Two processes are in touch when some link joins them and none of their links is blocked (so
    a one-way cut separates them). Storage nodes in touch form components; the main one has the
    most storage nodes (ties: the earliest node) and every storage node outside it is cut off.
    A router or MemDS server stays in service while in touch with a storage node of the main
    component, gac while in touch with such a router: reaching the cluster through a MemDS or
    gac hub does not count.
    """
    live = [p for p in view.processes() if p not in down]
    order = {p: i for i, p in enumerate(live)}
    in_touch: dict[frozenset[str], bool] = {}
    for a, b in view.links():
        if a in order and b in order:
            pair = frozenset((a, b))
            in_touch[pair] = in_touch.get(pair, True) and (a, b) not in blocked

    def touches(p: str, others: Iterable[str]) -> bool:
        return any(in_touch.get(frozenset((p, q)), False) for q in others)

    storage = [p for p in live if p in view.storage]
    components: list[list[str]] = []
    for p in storage:  # storage nodes are few: a quadratic merge is plenty
        joined = [c for c in components if touches(p, c)]
        merged = [q for c in joined for q in c] + [p]
        components = [c for c in components if c not in joined] + [merged]
    biggest: list[str] = max(
        components, key=lambda c: (len(c), -min(order[q] for q in c)), default=[]
    )
    main = set(biggest)
    up = set(main)
    for role in ("router", "memds"):
        up |= {p for p in view.roles.get(role, ()) if p in order and touches(p, main)}
    routers = [p for p in view.roles.get("router", ()) if p in up]
    up |= {p for p in view.roles.get("gac", ()) if p in order and touches(p, routers)}
    return set(live) - up


@dataclass(frozen=True, slots=True)
class BlastRadius:
    """The most a run may take down at once; None means no limit."""

    max_azs: int | None = None
    max_nodes: int | None = None
    max_racks: int | None = None


def combined_footprint(plans: Iterable[FaultPlan]) -> Footprint:
    total = Footprint()
    for p in plans:
        total = total.union(p.footprint)
    return total


def check_blast_radius(
    plans_active: list[FaultPlan], new: FaultPlan, radius: BlastRadius, topology: Topology
) -> None:
    """Raise BlastRadiusExceeded if the active faults plus ``new`` take down too much at once.

    Counted: storage nodes down (killed, paused, or cut off on the smaller side of a partition),
    their racks, and the AZs of every process down; a rolling restart adds one more of each that
    is not already down.
    """
    fp = combined_footprint([*plans_active, new])
    counts = {
        "azs": (fp.azs, fp.rolling_azs, radius.max_azs, len(topology.azs), "AZ"),
        "nodes": (
            fp.nodes,
            fp.rolling_nodes,
            radius.max_nodes,
            len(topology.storage_nodes()),
            "storage node",
        ),
        "racks": (fp.racks, fp.rolling_racks, radius.max_racks, len(topology.racks()), "rack"),
    }
    problems = []
    for key, (down, rolling, limit, total, noun) in counts.items():
        n = len(down) + (1 if rolling - down else 0)
        if limit is not None and n > limit:
            names = ", ".join(sorted(down)) + (
                " + one at a time by rolling restart" if rolling - down else ""
            )
            problems.append(f"{n} of {total} {noun}s down ({names}), more than max_{key}={limit}")
    if problems:
        context = (
            f" while {'; '.join(p.label or p.describe() for p in plans_active)} is active"
            if plans_active
            else ""
        )
        raise BlastRadiusExceeded(
            f"blast radius exceeded: {new.label or new.describe()}{context} would take "
            + " and ".join(problems)
        )
