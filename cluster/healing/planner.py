"""What a group's leader does next to keep its group whole: a pure function of what it sees.

The admin loop (``admin.py``) gathers a ``GroupView`` (membership, how long the leader has not
heard from each member) and a ``NodeView`` per storage node (answers probes? which replicas does
it host, in which mode?), and asks ``plan`` for at most one ``Action``. It carries the action
out, waits for it to finish, and asks again: one step at a time, each a single-member change
(Raft thesis §4.1), so the group is never left in a state the next plan cannot continue from.

    view = GroupView("t.p0", leader="sn-a1", voters=frozenset({"sn-a1", "sn-b1", "sn-c1"}),
                     log_only=frozenset(), silent_for={"sn-c1": 4.2})
    plan(view, nodes, grace=3.0)    # -> RemoveMember("sn-c1", ...) when sn-c1's node is down

Rules, in order (the first that applies wins):

1. A member lost for the grace period (the leader has not heard from it and its node does not
   answer probes) is removed first, if the remaining members still make a quorum of the smaller
   group. Removing first keeps the quorum at the live members; adding a fourth member first
   would make every commit wait for the newcomer to catch up. A group never shrinks below 2.
2. A member whose node answers but no longer hosts the group (wiped, or set aside after
   corruption) has its replica created again; Raft refills it.
3. Fewer than 3 members: add a log replica on the best candidate: a healthy node that is not a
   member, in an AZ the group does not cover yet (the lost member's AZ, when it is up),
   otherwise in the AZ with the fewest members; the least loaded node wins ties. (For the
   metadata group any node will do: a log replica there never leads, and rule 6 moves it back
   to a home node when one is up.)
4. More than 3 members (the middle of a move): remove one: one down or silent for the grace
   period, else one sharing its AZ with another member, preferring log replicas and (for the
   metadata group) members outside its home nodes.
5. A member whose replica holds no trustworthy data although the membership says it is full
   (quarantined, or interrupted while being built) is rebuilt; if it is the leader itself,
   leadership goes to a healthy full member first.
6. A log replica in the wrong place (sharing an AZ while another AZ is up and has a candidate;
   for the metadata group, outside its home nodes while a home node is back) is moved: a log
   replica is added in the right place (rule 4 then removes the misplaced one). Otherwise it is
   turned into a full replica. (Not while it leads: it does so only as a stand-in, and hands
   leadership to a full member by itself.)
7. Three full members on fewer than 3 AZs while 3 AZs are up: move one (as in rule 6).
8. A node that hosts the group but is not a member (it came back after being replaced) has
   its copy dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

FULL, LOG, QUARANTINED = "full", "log", "quarantined"  # replica modes, as nodes report them
MIN_MEMBERS = 2  # a group is never shrunk below this by the admin
TARGET_MEMBERS = 3


@dataclass(frozen=True, slots=True)
class NodeView:
    """One storage node as probes see it."""

    id: str
    az: str
    up: bool  # answered the latest probe
    down_for: float = 0.0  # seconds it has not answered (0 while up)
    groups: Mapping[str, str] = field(default_factory=dict)  # hosted group -> replica mode
    load: int = 0  # replicas it hosts


@dataclass(frozen=True, slots=True)
class GroupView:
    """One group as its leader sees it."""

    group: str
    leader: str
    voters: frozenset[str]
    log_only: frozenset[str] = frozenset()
    silent_for: Mapping[str, float] = field(default_factory=dict)  # member -> seconds unheard
    home: frozenset[str] | None = None  # only these may hold full replicas (metadata group)
    # Log replicas added less than ``full_after`` seconds ago (plan's argument) are left as
    # they are: the lost node may come back, and durability is already restored.
    log_age: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeAction:
    """One step on one node of the group, and why (for the log and the events)."""

    node: str
    reason: str


class RemoveMember(NodeAction):
    """Take ``node`` out of the group's membership (lost, or one too many)."""


class AddLogReplica(NodeAction):
    """Add a log replica of the group on ``node``."""


class BuildFullReplica(NodeAction):
    """Turn ``node``'s log replica into a full replica."""


class RecreateReplica(NodeAction):
    """Create ``node``'s replica again (wiped, set aside, or not trustworthy)."""


class DropOrphan(NodeAction):
    """Drop the copy ``node`` hosts although it is no longer a member."""


class TransferLeadership(NodeAction):
    """Hand the group's leadership to ``node``."""


Action = (
    RemoveMember
    | AddLogReplica
    | BuildFullReplica
    | RecreateReplica
    | DropOrphan
    | TransferLeadership
)


def plan(
    g: GroupView, nodes: Mapping[str, NodeView], grace: float, full_after: float = 0.0
) -> Action | None:
    """The next step for group ``g`` (see the module docstring), or None if it is whole.

    ``full_after``: seconds a log replica stays one before it is turned into a full replica
    (its age is ``g.log_age``; a log replica of unknown age counts as old).
    """
    voters = g.voters
    healthy = {m for m in voters if _is_healthy(g, nodes, m, grace)}
    lost = sorted(m for m in voters if _is_lost(g, nodes, m, grace))
    missing = sorted(
        m for m in voters - {g.leader} if _is_up(nodes, m) and g.group not in nodes[m].groups
    )

    # 1. lost members go first
    for m in lost:
        rest = voters - {m}
        if len(rest) >= MIN_MEMBERS and len(healthy & rest) >= len(rest) // 2 + 1:
            return RemoveMember(m, f"unreachable for more than {grace:g}s")
    # 2. members whose node lost its copy
    for m in missing:
        if g.silent_for.get(m, 0.0) >= grace:
            return RecreateReplica(m, "its node answers but does not host the group")
    # 3. too few members
    if len(voters) < TARGET_MEMBERS:
        target = choose_candidate(g, nodes, anywhere=True)
        if target is not None:
            return AddLogReplica(target, f"{len(voters)} members: restore {TARGET_MEMBERS}")
        return None
    # 4. too many members (a move half done)
    if len(voters) > TARGET_MEMBERS:
        extra = _surplus_member(g, nodes, healthy, grace)
        if extra is not None:
            return RemoveMember(extra, "one member too many after a move")
        return None
    # 5. full members without trustworthy data
    for m in sorted(voters - g.log_only):
        mode = _mode(nodes, g, m)
        if mode in (LOG, QUARANTINED) and m in healthy:
            if m == g.leader:
                successor = _successor(g, nodes, healthy)
                if successor is not None:
                    return TransferLeadership(successor, f"the leader's replica is {mode}")
                continue
            return BuildFullReplica(m, f"member's replica is {mode}")
    # 6. log replicas: move them, or make them full
    for m in sorted(g.log_only & voters):
        if m not in healthy or g.group not in nodes[m].groups or m == g.leader:
            continue  # (a log replica leads only as a stand-in, and hands over by itself)
        better = _better_place(g, nodes, m)
        if better is not None:
            return AddLogReplica(better, f"move the log replica off {m}")
        if (g.home is None or m in g.home) and g.log_age.get(m, full_after) >= full_after:
            return BuildFullReplica(m, "replace the log replica by a full one")
    # 7. AZ spread of a whole group
    if not g.log_only and healthy == voters:
        azs = _az_counts(nodes, voters)
        if len(azs) < min(TARGET_MEMBERS, len(_azs_up(nodes))):
            target = choose_candidate(g, nodes, new_az_only=True)
            if target is not None:
                return AddLogReplica(target, f"members cover only {len(azs)} AZs")
    # 8. copies left on nodes that are no longer members
    for n in sorted(nodes):
        node = nodes[n]
        if node.up and n not in voters and g.group in node.groups:
            return DropOrphan(n, "not a member any more")
    return None


def choose_candidate(
    g: GroupView, nodes: Mapping[str, NodeView], new_az_only: bool = False, anywhere: bool = False
) -> str | None:
    """The best healthy non-member for a new replica of ``g`` (None if there is none).

    An AZ the members do not cover yet comes first (with 3 AZs that is the lost member's), then
    the AZ with the fewest members; inside it, the node hosting the fewest replicas; then ids.
    A group with home nodes takes only those, unless ``anywhere`` (a stand-in log replica, to
    restore the quorum's durability until a home node is back).
    """
    covered = _az_counts(nodes, g.voters)
    candidates = [
        n
        for n in nodes.values()
        if n.up
        and n.id not in g.voters
        and (g.home is None or anywhere or n.id in g.home)
        and (not new_az_only or covered[n.az] == 0)
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda n: (covered[n.az], n.load, n.id))
    return best.id


def _is_up(nodes: Mapping[str, NodeView], m: str) -> bool:
    return m in nodes and nodes[m].up


def _is_healthy(g: GroupView, nodes: Mapping[str, NodeView], m: str, grace: float) -> bool:
    if m == g.leader:
        return True
    return g.silent_for.get(m, 0.0) < grace and (m not in nodes or nodes[m].up)


def _is_lost(g: GroupView, nodes: Mapping[str, NodeView], m: str, grace: float) -> bool:
    if m == g.leader or g.silent_for.get(m, 0.0) < grace:
        return False
    node = nodes.get(m)
    return node is None or (not node.up and node.down_for >= grace)


def _mode(nodes: Mapping[str, NodeView], g: GroupView, m: str) -> str | None:
    node = nodes.get(m)
    return None if node is None else node.groups.get(g.group)


def _az_counts(nodes: Mapping[str, NodeView], members: frozenset[str]) -> Counter[str]:
    return Counter(nodes[m].az for m in members if m in nodes)


def _azs_up(nodes: Mapping[str, NodeView]) -> set[str]:
    return {n.az for n in nodes.values() if n.up}


def _better_place(g: GroupView, nodes: Mapping[str, NodeView], m: str) -> str | None:
    """Where log replica ``m`` should be instead, if it is misplaced and a better node is up."""
    if m not in nodes:
        return None
    if g.home is not None and m not in g.home:
        home_back = [h for h in g.home - g.voters if _is_up(nodes, h)]
        return min(home_back, key=lambda h: (nodes[h].load, h)) if home_back else None
    others = _az_counts(nodes, g.voters - {m})
    if others[nodes[m].az] == 0:
        return None  # it is the only member in its AZ: where it should be
    return choose_candidate(g, nodes, new_az_only=True)


def _surplus_member(
    g: GroupView, nodes: Mapping[str, NodeView], healthy: set[str], grace: float
) -> str | None:
    """The member to drop from a group of 4: never the leader.

    A member down or silent for the grace period goes first; one that only missed the latest
    probe (a busy node) does not count as down here: dropping it instead of a member sharing an
    AZ left a group on two AZs (one outage from losing its quorum) for another whole move.
    """
    counts = _az_counts(nodes, g.voters)

    def keep_score(m: str) -> tuple[bool, bool, bool, bool, str]:
        shared = m in nodes and counts[nodes[m].az] > 1
        outside_home = g.home is not None and m not in g.home
        down = m not in healthy and (
            g.silent_for.get(m, 0.0) >= grace or m not in nodes or nodes[m].down_for >= grace
        )
        return (not down, not shared, not outside_home, m not in g.log_only, m)

    choices = sorted(g.voters - {g.leader}, key=keep_score)
    if not choices:
        return None
    rest = g.voters - {choices[0]}
    if len(healthy & rest) < len(rest) // 2 + 1:
        return None
    return choices[0]


def _successor(g: GroupView, nodes: Mapping[str, NodeView], healthy: set[str]) -> str | None:
    full = [
        m
        for m in sorted(healthy - {g.leader} - g.log_only)
        if _mode(nodes, g, m) == FULL and (g.home is None or m in g.home)
    ]
    return full[0] if full else None
