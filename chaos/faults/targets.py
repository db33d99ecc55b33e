"""Targets: names in a fault (AZs, racks, processes, sides, groups) resolved on a view.

Every resolver raises ``UnknownTarget`` (or ``NoLeader``) naming the fault's field and listing
what the cluster does have, and every link set is a set of ``(src, dst)`` pairs drawn from
``view.links()``.

    resolve_az(view, "az-b", "power_off_az target", "target")     # processes in az-b
    between(view, [side_a, side_b])          # every link from one side to the other
    links_from_to(view, "latency", "az-a", "*", both_ways=True)   # the link faults' selector

A *side* is a comma-separated list of AZs (every process in the AZ: storage nodes, routers,
MemDS, and gac if it lives there), racks (their storage nodes) or process ids (just those);
``*`` is every process named on no other side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from chaos.links import LinkPair
from cluster.metadata.partitionmap import META_GROUP

from .errors import NoLeader, PlanError, UnknownTarget
from .view import ROLES, ClusterView, ReplicaGroup

ANY_GROUP = "any"  # group selector: a group with a leader, chosen by the view's rng
EVERYONE_ELSE = "*"  # side selector: every process named on no other side


def check(ok: bool, message: str, param: str) -> None:
    if not ok:
        raise PlanError(message, param)


def _listing(view: ClusterView) -> str:
    return f"this {view.topology.shape} cluster"


def resolve_az(view: ClusterView, az: str, where: str, param: str) -> frozenset[str]:
    if az not in view.topology.azs:
        azs = ", ".join(view.topology.azs)
        raise UnknownTarget(f"{where}: {az!r} is not an AZ of {_listing(view)}; AZs: {azs}", param)
    return view.in_az(az)


def resolve_rack(view: ClusterView, rack: str, where: str, param: str) -> frozenset[str]:
    racks = view.topology.by_rack()
    if rack not in racks:
        raise UnknownTarget(
            f"{where}: {rack!r} is not a rack of {_listing(view)}; racks: {', '.join(racks)}",
            param,
        )
    return frozenset(n.id for n in racks[rack])


def resolve_process(
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


def resolve_name(view: ClusterView, name: str, where: str, param: str) -> frozenset[str]:
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


def resolve_sides(
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
            members |= resolve_name(view, n, where, param)
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


def resolve_group(
    view: ClusterView, group: str, where: str, *, on: str | None = None
) -> ReplicaGroup:
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


def leader_of(view: ClusterView, group: str, where: str) -> str:
    g = resolve_group(view, group, where)
    if g.leader is None:
        raise NoLeader(
            f"{where}: group {g.group} has no leader right now (members: {', '.join(g.members)})",
            "group",
        )
    return g.leader


def between(view: ClusterView, sides: Sequence[frozenset[str]]) -> frozenset[LinkPair]:
    """Every link from a process on one side to a process on another side."""
    side_of = {p: i for i, side in enumerate(sides) for p in side}
    return frozenset(
        (a, b)
        for a, b in view.links()
        if a in side_of and b in side_of and side_of[a] != side_of[b]
    )


def from_to(
    view: ClusterView, src: frozenset[str], dst: frozenset[str], both: bool
) -> frozenset[LinkPair]:
    return frozenset(
        (a, b)
        for a, b in view.links()
        if (a in src and b in dst) or (both and a in dst and b in src)
    )


def touching(view: ClusterView, isolated: Iterable[str]) -> frozenset[LinkPair]:
    """Every link with an isolated process at either end: each is an island of its own."""
    iso = frozenset(isolated)
    return frozenset((a, b) for a, b in view.links() if a in iso or b in iso)


def links_from_to(
    view: ClusterView, kind: str, from_side: str, to_side: str, both_ways: bool
) -> frozenset[LinkPair]:
    """The links from the processes of ``from_side`` to those of ``to_side`` (and back, with
    ``both_ways``): what every link fault acts on. Errors name ``from_side`` or ``to_side``."""
    src, dst = resolve_sides(view, [("from_side", from_side), ("to_side", to_side)], kind)
    return from_to(view, src, dst, both=both_ways)
