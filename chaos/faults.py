"""The fault catalog: every fault a game day can inject, planned as data before anything breaks.

A fault is a frozen value that names what to break (``PowerOffAz("az-b")``). ``plan`` turns it,
together with a ``ClusterView`` of the cluster (topology, processes, replication groups and their
leaders, a seeded rng), into a ``FaultPlan``: which processes to kill or pause, which directed
links to cut, degrade, reset or disable. Planning is pure; a backend applies a plan and heals it.

    view = ClusterView.assumed(parse_topology("3x2x1"))
    sorted(plan(PowerOffAz("az-b"), view).kills)      # -> ['md-b', 'rt-b', 'sn-b1', 'sn-b2']
    split = plan(Split("az-a|az-b,az-c"), view)
    ("sn-a1", "sn-b1") in split.cuts                  # -> True, and ("sn-b1", "sn-a1") too
    ("sn-b1", "sn-c1") in split.cuts                  # -> False: both are on the same side
    check_blast_radius([split], plan(PowerOffNode("sn-c1"), view), BlastRadius(max_azs=1),
                       view.topology)                 # raises BlastRadiusExceeded (2 AZs)

Links are directed ``(src, dst)`` pairs over the processes that talk: storage <-> storage,
router -> storage / MemDS / gac, MemDS <-> storage. A *side* is a comma-separated list of AZs
(every process in the AZ: storage nodes, routers, MemDS, and gac if it lives there), racks (their
storage nodes) or process ids (just those); ``*`` is every process named on no other side.
Partitioning sides cuts every link between a process on one side and one on another, in both
directions (``one_way``: one direction); a process on no side keeps all its links.

Randomized shapes (``bridge``, ``random_halves``, ``majorities_ring``, group ``any``) draw only
from ``view.rng``, so the same seed gives the same plan.
"""

from __future__ import annotations

import dataclasses
import random
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

from cluster.config import ClusterConfig
from cluster.metadata.partitionmap import META_GROUP, meta_replicas, place_partitions
from cluster.topology import Topology, parse_topology

Link = tuple[str, str]
ROLES = ("storage", "router", "memds", "gac")
ANY_GROUP = "any"  # group selector: a group with a leader, chosen by the view's rng
EVERYONE_ELSE = "*"  # side selector: every process named on no other side
DEFAULT_TABLE = "gameday-register"  # the register workload's table (workloads/catalog.py)


class PlanError(ValueError):
    """A fault cannot be planned on this cluster; ``param`` names the fault's offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownTarget(PlanError):
    """A fault names an AZ, rack, process or group the cluster does not have."""


class NoLeader(PlanError):
    """A leader-targeted fault found no leader to target."""


class UnknownFaultKind(ValueError):
    """No fault of that kind is in the catalog."""


class BlastRadiusExceeded(Exception):
    """Applying a fault would take down more of the cluster than the scenario allows."""


# --- the view a plan is made against -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupView:
    """A replication group's members and its current leader (None while there is none)."""

    group: str
    members: tuple[str, ...]
    leader: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ClusterView:
    """What planning may look at: topology, process ids by role, groups, a seeded rng."""

    topology: Topology
    roles: Mapping[str, tuple[str, ...]]  # "storage" | "router" | "memds" | "gac" -> ids
    process_azs: Mapping[str, str]  # process id -> AZ
    groups: Mapping[str, GroupView] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    @classmethod
    def assumed(
        cls,
        topology: Topology,
        *,
        partitions: int = 4,
        table: str = DEFAULT_TABLE,
        rng: random.Random | None = None,
    ) -> ClusterView:
        """The view a fresh cluster would give: gac in the first AZ, ``table`` placed the way
        the metadata store places it, every group led by its first replica."""
        groups = {META_GROUP: meta_replicas(topology)}
        groups |= {p.id: p.replicas for p in place_partitions(topology, table, partitions)}
        return cls(
            topology,
            {
                "storage": tuple(n.id for n in topology.storage_nodes()),
                "router": tuple(p.id for p in topology.routers()),
                "memds": tuple(p.id for p in topology.memds()),
                "gac": ("gac",),
            },
            {**{p.id: p.az for p in topology.processes()}, "gac": topology.azs[0]},
            {g: GroupView(g, m, m[0]) for g, m in groups.items()},
            rng or random.Random(0),
        )

    @classmethod
    def from_config(
        cls,
        config: ClusterConfig,
        groups: Mapping[str, GroupView] | None = None,
        rng: random.Random | None = None,
    ) -> ClusterView:
        """The view of a deployed cluster: its config plus group status from its nodes."""
        roles = {
            r: tuple(sorted(p.id for p in config.processes.values() if p.role == r)) for r in ROLES
        }
        return cls(
            parse_topology(config.topology),
            roles,
            {p.id: p.az for p in config.processes.values()},
            dict(groups or {}),
            rng or random.Random(0),
        )

    def with_rng(self, rng: random.Random) -> ClusterView:
        return dataclasses.replace(self, rng=rng)

    def with_groups(self, groups: Mapping[str, GroupView]) -> ClusterView:
        return dataclasses.replace(self, groups=dict(groups))

    @property
    def storage(self) -> tuple[str, ...]:
        return self.roles.get("storage", ())

    def processes(self) -> tuple[str, ...]:
        """Every process: storage nodes, routers, MemDS servers, gac."""
        return tuple(p for role in ROLES for p in self.roles.get(role, ()))

    def links(self) -> frozenset[Link]:
        """Every directed link that carries traffic."""
        storage, routers, memds, gac = (self.roles.get(r, ()) for r in ROLES)
        pairs = [(a, b) for a in storage for b in storage if a != b]
        pairs += [(a, b) for a in routers for b in (*storage, *memds, *gac)]
        pairs += [(a, b) for a in memds for b in storage]
        pairs += [(a, b) for a in storage for b in memds]
        return frozenset(pairs)

    def in_az(self, az: str) -> frozenset[str]:
        return frozenset(p for p in self.processes() if self.process_azs.get(p) == az)


def groups_from_status(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, GroupView]:
    """Groups and leaders from storage nodes' ``/replicas`` bodies (None for a node that is down).

    Each group's members and leader come from the replica reporting the highest term; a replica
    that says it is the leader wins ties.
    """
    best: dict[str, tuple[tuple[int, int], GroupView]] = {}
    for node, body in sorted(statuses.items()):
        for r in (body or {}).get("replicas", []):
            leader = r.get("leader") or (node if r.get("role") == "leader" else None)
            rank = (int(r.get("term", 0)), 1 if r.get("role") == "leader" else 0)
            view = GroupView(str(r["group"]), tuple(sorted(r.get("members", ()))), leader)
            if r["group"] not in best or rank > best[r["group"]][0]:
                best[r["group"]] = (rank, view)
    return {g: v for g, (_, v) in sorted(best.items())}


# --- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Degradation:
    """Toxics on a set of links; zero / None / False means that toxic is not added."""

    links: frozenset[Link]
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
        return f"degrade {_links_text(self.links)}: {', '.join(parts) or 'nothing'}"


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
    pauses: frozenset[str] = frozenset()  # SIGSTOP; heal is SIGCONT
    cuts: frozenset[Link] = frozenset()  # silent drop: the timeout toxic with timeout 0
    degradations: tuple[Degradation, ...] = ()
    resets: frozenset[Link] = frozenset()  # reset_peer toxic
    disabled: frozenset[Link] = frozenset()  # proxy disabled: connection refused
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
        if self.pauses:
            parts.append(f"pause {', '.join(sorted(self.pauses))}")
        if self.cuts:
            parts.append(f"cut {_links_text(self.cuts)}")
        parts += [d.describe() for d in self.degradations]
        if self.resets:
            parts.append(f"reset {_links_text(self.resets)}")
        if self.disabled:
            parts.append(f"disable {_links_text(self.disabled)}")
        parts += [
            f"flip {b.flips} bit(s) in {b.node}'s {b.target} of {b.group}" for b in self.bitrot
        ]
        if self.rolling:
            parts.append(f"restart one at a time: {', '.join(self.rolling)}")
        if self.footprint.processes:
            parts.append(f"takes down {', '.join(sorted(self.footprint.processes))}")
        body = "; ".join(parts) or "no change"
        return f"{self.label}: {body}" if self.label else body


def _links_text(links: Iterable[Link], show: int = 4) -> str:
    ordered = sorted(links)
    shown = ", ".join(f"{a}->{b}" for a, b in ordered[:show])
    more = f", +{len(ordered) - show} more" if len(ordered) > show else ""
    return f"{len(ordered)} link{'s' if len(ordered) != 1 else ''} ({shown}{more})"


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


def _cut_off(view: ClusterView, blocked: frozenset[Link], down: set[str]) -> set[str]:
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


# --- the faults ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """Base of every fault: a ``kind`` name, parameters as fields, a docstring description."""

    kind: ClassVar[str] = ""

    def plan(self, view: ClusterView) -> FaultPlan:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """``split(sides=az-a|az-b,az-c)``."""
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in self.params().items())})"


CATALOG: dict[str, type[Fault]] = {}


_F = typing.TypeVar("_F", bound=type["Fault"])


def _register(cls: _F) -> _F:
    CATALOG[cls.kind] = cls
    return cls


def _param(help: str, **kwargs: Any) -> Any:
    return field(metadata={"help": help}, **kwargs)


def _check(ok: bool, message: str, param: str) -> None:
    if not ok:
        raise PlanError(message, param)


def _in(value: object, allowed: Sequence[object], what: str, param: str) -> None:
    _check(
        value in allowed,
        f"{what} must be one of {', '.join(map(str, allowed))}; got {value!r}",
        param,
    )


def plan(fault: Fault, view: ClusterView) -> FaultPlan:
    """The plan of ``fault`` on the cluster in ``view``; PlanError (UnknownTarget, NoLeader) when
    it names something the cluster does not have."""
    return fault.plan(view)


# Resolution of names into processes; messages say what exists instead.


def _listing(view: ClusterView) -> str:
    return f"this {view.topology.shape} cluster"


def _resolve_az(view: ClusterView, az: str, where: str, param: str) -> frozenset[str]:
    if az not in view.topology.azs:
        azs = ", ".join(view.topology.azs)
        raise UnknownTarget(f"{where}: {az!r} is not an AZ of {_listing(view)}; AZs: {azs}", param)
    return view.in_az(az)


def _resolve_rack(view: ClusterView, rack: str, where: str, param: str) -> frozenset[str]:
    racks = view.topology.by_rack()
    if rack not in racks:
        raise UnknownTarget(
            f"{where}: {rack!r} is not a rack of {_listing(view)}; racks: {', '.join(racks)}",
            param,
        )
    return frozenset(n.id for n in racks[rack])


def _resolve_process(
    view: ClusterView, name: str, where: str, param: str, *, storage_only: bool = False
) -> str:
    known = view.storage if storage_only else view.processes()
    if name not in known:
        what = "a storage node" if storage_only else "a process"
        listing = f"storage nodes: {', '.join(view.storage)}"
        if not storage_only:
            others = [p for r in ROLES[1:] for p in view.roles.get(r, ())]
            listing += f"; other processes: {', '.join(others)}"
        raise UnknownTarget(
            f"{where}: {name!r} is not {what} of {_listing(view)}; {listing}", param
        )
    return name


def _resolve_name(view: ClusterView, name: str, where: str, param: str) -> frozenset[str]:
    if name in view.topology.azs:
        return view.in_az(name)
    if name in view.topology.by_rack():
        return frozenset(n.id for n in view.topology.by_rack()[name])
    if name in view.process_azs:
        return frozenset({name})
    raise UnknownTarget(
        f"{where}: {name!r} is not an AZ, rack or process of {_listing(view)}; "
        f"AZs: {', '.join(view.topology.azs)}; racks: {', '.join(view.topology.racks())}; "
        f"processes: {', '.join(view.processes())} (a side looks like 'az-a', 'az-b,az-c', "
        f"'sn-a1,sn-b2' or '*')",
        param,
    )


def _resolve_sides(
    view: ClusterView, specs: Sequence[tuple[str, str]], where: str
) -> list[frozenset[str]]:
    """Sides from ``(param, "az-a,sn-b1")`` specs; at most one may be ``*``; none may overlap."""
    sides: list[frozenset[str] | None] = []
    for param, spec in specs:
        names = [n.strip() for n in spec.split(",")]
        if any(not n for n in names):
            raise PlanError(f"{where}: empty name in side {spec!r}", param)
        if names == [EVERYONE_ELSE]:
            sides.append(None)
            continue
        members: set[str] = set()
        for n in names:
            members |= _resolve_name(view, n, where, param)
        sides.append(frozenset(members))
    if sides.count(None) > 1:
        raise PlanError(f"{where}: only one side may be '*'", specs[-1][0])
    named = [s for s in sides if s is not None]
    seen: dict[str, int] = {}
    for i, side in enumerate(named):
        for p in sorted(side):
            if p in seen:
                raise PlanError(f"{where}: {p} is on two sides", specs[i][0])
            seen[p] = i
    rest = frozenset(view.processes()) - frozenset(seen)
    return [rest if s is None else s for s in sides]


def _resolve_group(
    view: ClusterView, group: str, where: str, *, on: str | None = None
) -> GroupView:
    if group == ANY_GROUP:
        candidates = [
            g for g in view.groups.values() if (on in g.members if on else g.leader is not None)
        ]
        data = [g for g in candidates if g.group != META_GROUP]
        pool = sorted(data or candidates, key=lambda g: g.group)
        if not pool:
            what = f"with a replica on {on}" if on else "with a leader"
            raise NoLeader(f"{where}: no replication group {what} is known", "group")
        return view.rng.choice(pool)
    if group not in view.groups:
        known = ", ".join(sorted(view.groups)) or "none known (is the cluster up?)"
        raise UnknownTarget(
            f"{where}: {group!r} is not a replication group of this cluster; groups: {known}",
            "group",
        )
    return view.groups[group]


def _leader_of(view: ClusterView, group: str, where: str) -> str:
    g = _resolve_group(view, group, where)
    if g.leader is None:
        raise NoLeader(
            f"{where}: group {g.group} has no leader right now (members: {', '.join(g.members)})",
            "group",
        )
    return g.leader


def _between(view: ClusterView, sides: Sequence[frozenset[str]]) -> frozenset[Link]:
    """Every link from a process on one side to a process on another side."""
    side_of = {p: i for i, side in enumerate(sides) for p in side}
    return frozenset(
        (a, b)
        for a, b in view.links()
        if a in side_of and b in side_of and side_of[a] != side_of[b]
    )


def _from_to(
    view: ClusterView, src: frozenset[str], dst: frozenset[str], both: bool
) -> frozenset[Link]:
    return frozenset(
        (a, b)
        for a, b in view.links()
        if (a in src and b in dst) or (both and a in dst and b in src)
    )


def _touching(view: ClusterView, isolated: Iterable[str]) -> frozenset[Link]:
    """Every link with an isolated process at either end: each is an island of its own."""
    iso = frozenset(isolated)
    return frozenset((a, b) for a, b in view.links() if a in iso or b in iso)


# Power and processes.


@_register
@dataclass(frozen=True, slots=True)
class PowerOffNode(Fault):
    """Power off one process (normally a storage node): SIGKILL; power-on restarts it."""

    kind: ClassVar[str] = "power_off_node"
    target: str = _param("the process to power off, e.g. sn-a1 (rt-a, md-a and gac work too)")

    def plan(self, view: ClusterView) -> FaultPlan:
        node = _resolve_process(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), kills=frozenset({node}))


@_register
@dataclass(frozen=True, slots=True)
class PowerOffRack(Fault):
    """Power off a rack: SIGKILL every storage node on it (routers and MemDS are on no rack)."""

    kind: ClassVar[str] = "power_off_rack"
    target: str = _param("the rack, e.g. az-a/r1")

    def plan(self, view: ClusterView) -> FaultPlan:
        nodes = _resolve_rack(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), kills=nodes)


@_register
@dataclass(frozen=True, slots=True)
class PowerOffAz(Fault):
    """Power off an AZ: SIGKILL its storage nodes, routers, MemDS servers, and gac if there."""

    kind: ClassVar[str] = "power_off_az"
    target: str = _param("the AZ, e.g. az-b")

    def plan(self, view: ClusterView) -> FaultPlan:
        procs = _resolve_az(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), kills=procs)


@_register
@dataclass(frozen=True, slots=True)
class PauseNode(Fault):
    """Gray failure: SIGSTOP a process so it holds its connections but answers nothing."""

    kind: ClassVar[str] = "pause_node"
    target: str = _param("the process to pause, e.g. sn-b1")

    def plan(self, view: ClusterView) -> FaultPlan:
        node = _resolve_process(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), pauses=frozenset({node}))


@_register
@dataclass(frozen=True, slots=True)
class RollingRestart(Fault):
    """Restart processes one at a time (an upgrade), each after the previous is healthy again."""

    kind: ClassVar[str] = "rolling_restart"
    role: Literal["storage", "router", "memds", "all"] = _param(
        "which processes: storage, router, memds or all", default="storage"
    )

    def __post_init__(self) -> None:
        _in(self.role, ("storage", "router", "memds", "all"), "role", "role")

    def plan(self, view: ClusterView) -> FaultPlan:
        roles = ("storage", "gac", "memds", "router") if self.role == "all" else (self.role,)
        order = tuple(p for r in roles for p in view.roles.get(r, ()))
        return make_plan(view, self.describe(), rolling=order)


# Partitions.


@_register
@dataclass(frozen=True, slots=True)
class IsolateNode(Fault):
    """Cut every link to and from one process: it is alive but alone."""

    kind: ClassVar[str] = "isolate_node"
    target: str = _param("the process to isolate, e.g. sn-a1")

    def plan(self, view: ClusterView) -> FaultPlan:
        node = _resolve_process(view, self.target, f"{self.kind} target", "target")
        return make_plan(view, self.describe(), cuts=_touching(view, [node]))


@_register
@dataclass(frozen=True, slots=True)
class IsolateAz(Fault):
    """Partition an AZ (all its processes) from the rest of the cluster, both directions."""

    kind: ClassVar[str] = "isolate_az"
    target: str = _param("the AZ, e.g. az-a")

    def plan(self, view: ClusterView) -> FaultPlan:
        inside = _resolve_az(view, self.target, f"{self.kind} target", "target")
        rest = frozenset(view.processes()) - inside
        return make_plan(view, self.describe(), cuts=_between(view, [inside, rest]))


@_register
@dataclass(frozen=True, slots=True)
class Split(Fault):
    """Partition the cluster into sides: every link between two sides is cut, both directions."""

    kind: ClassVar[str] = "split"
    sides: str = _param("sides separated by '|', e.g. 'az-a|az-b,az-c' or 'sn-a1,sn-b1|*'")

    def plan(self, view: ClusterView) -> FaultPlan:
        specs = [("sides", s) for s in self.sides.split("|")]
        _check(len(specs) >= 2, f"{self.kind}: needs at least two sides, e.g. 'az-a|*'", "sides")
        sides = _resolve_sides(view, specs, f"{self.kind} sides")
        return make_plan(view, self.describe(), cuts=_between(view, sides))


@_register
@dataclass(frozen=True, slots=True)
class OneWay(Fault):
    """Drop traffic from one side to another while the reverse direction still flows."""

    kind: ClassVar[str] = "one_way"
    from_side: str = _param("senders whose messages are dropped, e.g. az-a")
    to_side: str = _param("receivers that stop hearing them, e.g. '*' or az-b,az-c")

    def plan(self, view: ClusterView) -> FaultPlan:
        src, dst = _resolve_sides(
            view, [("from_side", self.from_side), ("to_side", self.to_side)], self.kind
        )
        return make_plan(view, self.describe(), cuts=_from_to(view, src, dst, both=False))


@_register
@dataclass(frozen=True, slots=True)
class Bridge(Fault):
    """Split the storage nodes into two halves that cannot talk, both seeing one bridge node."""

    kind: ClassVar[str] = "bridge"

    def plan(self, view: ClusterView) -> FaultPlan:
        nodes = list(view.storage)
        view.rng.shuffle(nodes)
        bridge, rest = nodes[0], nodes[1:]
        half = len(rest) // 2
        sides = [frozenset(rest[:half]), frozenset(rest[half:])]
        label = f"{self.describe()} [bridge {bridge}]"
        return make_plan(view, label, cuts=_between(view, sides))


@_register
@dataclass(frozen=True, slots=True)
class MajoritiesRing(Fault):
    """Each storage node sees a different majority (a ring; Jepsen's majorities-ring).

    Nodes are placed on a ring in rng order; each keeps its links to the nodes within ring
    distance k, the least k that lets it see a majority (itself included), and loses the rest.
    """

    kind: ClassVar[str] = "majorities_ring"

    def plan(self, view: ClusterView) -> FaultPlan:
        ring = list(view.storage)
        view.rng.shuffle(ring)
        n = len(ring)
        k = (n // 2) // 2 + (n // 2) % 2  # ceil((majority - 1) / 2)
        pos = {p: i for i, p in enumerate(ring)}

        def far(a: str, b: str) -> bool:
            d = abs(pos[a] - pos[b])
            return min(d, n - d) > k

        cuts = frozenset((a, b) for a, b in view.links() if a in pos and b in pos and far(a, b))
        return make_plan(view, f"{self.describe()} [ring {' '.join(ring)}]", cuts=cuts)


@_register
@dataclass(frozen=True, slots=True)
class RandomHalves(Fault):
    """Split the storage nodes into a random minority half and majority half."""

    kind: ClassVar[str] = "random_halves"

    def plan(self, view: ClusterView) -> FaultPlan:
        nodes = list(view.storage)
        view.rng.shuffle(nodes)
        half = len(nodes) // 2
        sides = [frozenset(nodes[:half]), frozenset(nodes[half:])]
        label = f"{self.describe()} [{','.join(sorted(sides[0]))}|{','.join(sorted(sides[1]))}]"
        return make_plan(view, label, cuts=_between(view, sides))


# Targeted at replication groups.


@_register
@dataclass(frozen=True, slots=True)
class LeaderIsolation(Fault):
    """Isolate the current leader of a replication group from every other process."""

    kind: ClassVar[str] = "leader_isolation"
    group: str = _param("the group, e.g. gameday.p0 or meta; 'any' lets the rng pick one")

    def plan(self, view: ClusterView) -> FaultPlan:
        leader = _leader_of(view, self.group, self.kind)
        label = f"{self.describe()} [leader {leader}]"
        return make_plan(view, label, cuts=_touching(view, [leader]))


def _isolate_some(
    view: ClusterView, fault: Fault, group: str, count: Callable[[int], int]
) -> FaultPlan:
    g = _resolve_group(view, group, fault.kind)
    chosen = frozenset(view.rng.sample(sorted(g.members), count(len(g.members))))
    rest = frozenset(view.processes()) - chosen
    label = f"{fault.describe()} [{g.group}: {', '.join(sorted(chosen))}]"
    return make_plan(view, label, cuts=_between(view, [chosen, rest]))


@_register
@dataclass(frozen=True, slots=True)
class MinorityOf(Fault):
    """Isolate a minority of a group's replicas (chosen by the rng) from every other process."""

    kind: ClassVar[str] = "minority_of"
    group: str = _param("the group, e.g. gameday.p1; 'any' lets the rng pick one")

    def plan(self, view: ClusterView) -> FaultPlan:
        return _isolate_some(view, self, self.group, lambda n: (n - 1) // 2)


@_register
@dataclass(frozen=True, slots=True)
class MajorityOf(Fault):
    """Isolate a majority of a group's replicas (together, chosen by the rng) from the rest."""

    kind: ClassVar[str] = "majority_of"
    group: str = _param("the group, e.g. gameday.p1; 'any' lets the rng pick one")

    def plan(self, view: ClusterView) -> FaultPlan:
        return _isolate_some(view, self, self.group, lambda n: n // 2 + 1)


@_register
@dataclass(frozen=True, slots=True)
class Leaders(Fault):
    """Isolate every node that currently leads a group, each from every other process."""

    kind: ClassVar[str] = "leaders"

    def plan(self, view: ClusterView) -> FaultPlan:
        leaders = sorted({g.leader for g in view.groups.values() if g.leader is not None})
        if not leaders:
            raise NoLeader(f"{self.kind}: no group has a leader right now", None)
        label = f"{self.describe()} [{', '.join(leaders)}]"
        return make_plan(view, label, cuts=_touching(view, leaders))


# Link degradation and breakage.

_FROM = "senders, e.g. az-a or sn-a1"
_TO = "receivers, e.g. '*' (everyone else) or az-b"
_BOTH = "also the reverse direction"


def _link_set(view: ClusterView, fault: Any) -> frozenset[Link]:
    src, dst = _resolve_sides(
        view, [("from_side", fault.from_side), ("to_side", fault.to_side)], fault.kind
    )
    return _from_to(view, src, dst, both=fault.both_ways)


def _non_negative(value: float, param: str) -> None:
    _check(value >= 0, f"{param} must be >= 0, got {value!r}", param)


@_register
@dataclass(frozen=True, slots=True)
class Latency(Fault):
    """Delay every message on the links from one side to another, with optional jitter."""

    kind: ClassVar[str] = "latency"
    from_side: str = _param(_FROM)
    to_side: str = _param(_TO)
    ms: float = _param("added delay in milliseconds")
    jitter_ms: float = _param("random +/- variation in milliseconds", default=0.0)
    both_ways: bool = _param(_BOTH, default=False)

    def __post_init__(self) -> None:
        _non_negative(self.ms, "ms")
        _non_negative(self.jitter_ms, "jitter_ms")

    def plan(self, view: ClusterView) -> FaultPlan:
        d = Degradation(_link_set(view, self), latency_ms=self.ms, jitter_ms=self.jitter_ms)
        return make_plan(view, self.describe(), degradations=(d,))


@_register
@dataclass(frozen=True, slots=True)
class Bandwidth(Fault):
    """Limit the bandwidth of the links from one side to another."""

    kind: ClassVar[str] = "bandwidth"
    from_side: str = _param(_FROM)
    to_side: str = _param(_TO)
    kbps: int = _param("the limit in kilobits per second")
    both_ways: bool = _param(_BOTH, default=False)

    def __post_init__(self) -> None:
        _check(self.kbps >= 1, f"kbps must be >= 1, got {self.kbps!r}", "kbps")

    def plan(self, view: ClusterView) -> FaultPlan:
        d = Degradation(_link_set(view, self), bandwidth_kbps=self.kbps)
        return make_plan(view, self.describe(), degradations=(d,))


@_register
@dataclass(frozen=True, slots=True)
class Slicer(Fault):
    """Slice the byte stream on links into small, delayed chunks (frames arrive in pieces)."""

    kind: ClassVar[str] = "slicer"
    from_side: str = _param(_FROM)
    to_side: str = _param(_TO)
    both_ways: bool = _param(_BOTH, default=False)

    def plan(self, view: ClusterView) -> FaultPlan:
        d = Degradation(_link_set(view, self), slicer=True)
        return make_plan(view, self.describe(), degradations=(d,))


@_register
@dataclass(frozen=True, slots=True)
class SlowClose(Fault):
    """Delay the closing of connections on links from one side to another."""

    kind: ClassVar[str] = "slow_close"
    from_side: str = _param(_FROM)
    to_side: str = _param(_TO)
    ms: float = _param("delay before a close goes through, in milliseconds")
    both_ways: bool = _param(_BOTH, default=False)

    def __post_init__(self) -> None:
        _non_negative(self.ms, "ms")

    def plan(self, view: ClusterView) -> FaultPlan:
        d = Degradation(_link_set(view, self), slow_close_ms=self.ms)
        return make_plan(view, self.describe(), degradations=(d,))


@_register
@dataclass(frozen=True, slots=True)
class ResetPeer(Fault):
    """Reset (TCP RST) every connection on the links from one side to another."""

    kind: ClassVar[str] = "reset_peer"
    from_side: str = _param(_FROM)
    to_side: str = _param(_TO)
    both_ways: bool = _param(_BOTH, default=False)

    def plan(self, view: ClusterView) -> FaultPlan:
        return make_plan(view, self.describe(), resets=_link_set(view, self))


@_register
@dataclass(frozen=True, slots=True)
class DisableLinks(Fault):
    """Disable the proxies of links from one side to another: connections are refused."""

    kind: ClassVar[str] = "disable_links"
    from_side: str = _param(_FROM)
    to_side: str = _param(_TO)
    both_ways: bool = _param(_BOTH, default=False)

    def plan(self, view: ClusterView) -> FaultPlan:
        return make_plan(view, self.describe(), disabled=_link_set(view, self))


# Disk.


@_register
@dataclass(frozen=True, slots=True)
class BitRotFault(Fault):
    """Flip random bits in one replica's data (SQLite) or WAL, for scrub to detect and repair."""

    kind: ClassVar[str] = "bit_rot"
    node: str = _param("the storage node, e.g. sn-a1")
    group: str = _param("a group with a replica on the node; 'any' lets the rng pick one")
    target: Literal["data", "wal"] = _param("which file: data or wal", default="data")
    flips: int = _param("how many bits to flip", default=1)

    def __post_init__(self) -> None:
        _in(self.target, ("data", "wal"), "target", "target")
        _check(self.flips >= 1, f"flips must be >= 1, got {self.flips!r}", "flips")

    def plan(self, view: ClusterView) -> FaultPlan:
        node = _resolve_process(view, self.node, f"{self.kind} node", "node", storage_only=True)
        g = _resolve_group(view, self.group, self.kind, on=node)
        if node not in g.members:
            on = sorted(x.group for x in view.groups.values() if node in x.members)
            raise UnknownTarget(
                f"{self.kind}: {node} holds no replica of {g.group} (members: "
                f"{', '.join(g.members)}); groups on {node}: {', '.join(on) or 'none'}",
                "group",
            )
        rot = BitRot(node, g.group, self.target, self.flips)
        return make_plan(view, self.describe(), bitrot=(rot,))


# --- catalog and construction --------------------------------------------------------------


class ParamInfo(NamedTuple):
    name: str
    type: str
    required: bool
    default: Any
    help: str


class CatalogEntry(NamedTuple):
    kind: str
    description: str
    parameters: tuple[ParamInfo, ...]


def _type_text(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "|".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def fault_params(cls: type[Fault]) -> tuple[ParamInfo, ...]:
    """The parameters of a fault kind, in declaration order."""
    if cls not in _PARAMS:
        hints = typing.get_type_hints(cls)
        _PARAMS[cls] = tuple(
            ParamInfo(
                f.name,
                _type_text(hints[f.name]),
                f.default is dataclasses.MISSING,
                None if f.default is dataclasses.MISSING else f.default,
                f.metadata.get("help", ""),
            )
            for f in dataclasses.fields(cls)
        )
    return _PARAMS[cls]


_PARAMS: dict[type[Fault], tuple[ParamInfo, ...]] = {}


def describe_catalog() -> list[CatalogEntry]:
    """``(kind, description, parameters)`` of every fault, for ``gameday faults``."""
    return [
        CatalogEntry(kind, (cls.__doc__ or "").strip().split("\n\n")[0], fault_params(cls))
        for kind, cls in CATALOG.items()
    ]


def fault_class(kind: str) -> type[Fault]:
    try:
        return CATALOG[kind]
    except KeyError:
        raise UnknownFaultKind(
            f"unknown fault kind {kind!r}; known kinds: {', '.join(CATALOG)}"
        ) from None


def make_fault(kind: str, params: Mapping[str, Any]) -> Fault:
    """A fault from its kind and parameters (JSON, CLI); errors name missing or extra ones."""
    cls = fault_class(kind)
    info = fault_params(cls)
    names = [p.name for p in info]
    extra = sorted(set(params) - set(names))
    missing = [p.name for p in info if p.required and p.name not in params]
    if extra:
        takes = ", ".join(names) or "no parameters"
        raise ValueError(f"{kind} has no parameter {', '.join(extra)}; it takes: {takes}")
    if missing:
        raise ValueError(f"{kind} needs parameter {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _coerce(kind, name, hints[name], v) for name, v in params.items()})


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_BAD = object()


def _coerce(kind: str, name: str, tp: Any, value: Any) -> Any:
    """``value`` as the parameter's type; strings (from a command line) are parsed."""
    ok: Any = _BAD
    if tp is bool:
        if isinstance(value, bool):
            ok = value
        elif isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            ok = value.lower() in _TRUE
    elif tp in (int, float):
        if not isinstance(value, bool) and isinstance(value, int | float | str):
            try:
                number = tp(value)
            except ValueError:
                number = _BAD
            if tp is float or not isinstance(value, float) or number == value:
                ok = number
    elif tp is str or typing.get_origin(tp) is Literal:
        ok = value if isinstance(value, str) else _BAD
    else:
        ok = value
    if ok is not _BAD:
        return ok
    raise ValueError(f"{kind} parameter {name} must be {_type_text(tp)}, got {value!r}")


# --- blast radius --------------------------------------------------------------------------


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
