"""An in-memory network of Raft replicas for scripted protocol tests.

Where the simulator (``simulator.py``) lets one seed pick every fault, this helper lets a test
pick them by hand, in the style of etcd raft's interaction tests: tick whom you like, deliver
one round of messages or everything until quiet, drop messages that match a predicate, cut or
isolate nodes, crash a node and restart it from what its in-memory disk holds.

    net = Network.bootstrap(["n1", "n2", "n3"])
    net.run_until(lambda: net.leader() == "n1")     # n1 has the shortest election timeout
    net.isolate("n3")
    net.propose("n1", b"x")
    net.stabilize()                                 # ready -> persist -> send -> apply -> advance
    net.recover()

Election timeouts are scripted too: node number k (in bootstrap order) times out after
``election_ticks + 3 * k`` ticks, so the first node always campaigns first unless told otherwise.

Every Ready goes through :meth:`Network.handle_ready`, which also checks the durability rule the
core promises (Raft thesis Figure 3.1, "respond to RPCs only after updating stable storage"):
a granted vote or a successful append is on the node's disk before the response leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cluster.consensus.messages import (
    AnyMessage,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Snapshot,
    VoteResponse,
)
from cluster.consensus.raft import Raft, RaftConfig, Ready, Role

GROUP = "g"

Predicate = Callable[[AnyMessage], bool]


class ScriptedTimeouts:
    """A RandomSource whose "random" election timeout is always ``start + offset``: the script
    sets the order in which replicas time out (even past the core's range, which is only 2 ticks
    wide after hearing a leader: clamped, larger offsets would tie)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def randrange(self, start: int, stop: int) -> int:
        return start + self.offset


@dataclass
class Disk:
    """What one replica has durably written: hard state, snapshot, log entries."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def persist(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            self.snapshot = rd.snapshot
            # Like RaftLog.restore: keep the suffix only if our log holds the snapshot's last
            # entry; otherwise the snapshot replaces the whole log.
            if any(e.index == meta.index and e.term == meta.term for e in self.entries):
                self.entries = [e for e in self.entries if e.index > meta.index]
            else:
                self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(rd.entries)

    def term_at(self, index: int) -> int | None:
        if self.snapshot is not None and index <= self.snapshot.meta.index:
            return self.snapshot.meta.term if index == self.snapshot.meta.index else -1
        if index == 0:
            return 0
        for entry in self.entries:
            if entry.index == index:
                return entry.term
        return None


@dataclass
class Node:
    raft: Raft
    disk: Disk
    membership: Membership | None  # what it was bootstrapped with (passed again on restart)
    offset: int
    incarnation: int = 0  # with the group id, the group's identity (Raft.step)
    applied: list[bytes] = field(default_factory=list)  # data of applied NORMAL entries
    readies: list[Ready] = field(default_factory=list)  # every Ready handled, in order


def encode_state(applied: list[bytes]) -> bytes:
    return b"\n".join(applied)


def decode_state(data: bytes) -> list[bytes]:
    return data.split(b"\n") if data else []


class Network:
    def __init__(self, config: RaftConfig | None = None) -> None:
        self.config = config or RaftConfig()
        self.nodes: dict[str, Node] = {}
        self.inflight: list[AnyMessage] = []
        self.sent: list[AnyMessage] = []  # every message any node sent, in order
        self.cuts: set[tuple[str, str]] = set()  # directed links that drop everything
        self.drop_rules: list[Predicate] = []
        self.down: set[str] = set()

    @classmethod
    def bootstrap(
        cls,
        ids: Iterable[str],
        config: RaftConfig | None = None,
        log_only: Iterable[str] = (),
        incarnation: int = 0,
    ) -> Network:
        ids = list(ids)
        net = cls(config)
        membership = Membership(frozenset(ids), frozenset(log_only))
        for k, node in enumerate(ids):
            net.add(node, membership=membership, offset=3 * k, incarnation=incarnation)
        return net

    def add(
        self,
        id: str,
        *,
        membership: Membership | None = None,
        offset: int = 0,
        hard_state: HardState | None = None,
        entries: list[Entry] | None = None,
        incarnation: int = 0,
    ) -> Node:
        """Start a replica from the given disk contents (empty by default)."""
        disk = Disk(hard_state or HardState(), None, list(entries or []))
        raft = self._raft(id, disk, membership, offset, incarnation)
        node = Node(raft, disk, membership, offset, incarnation)
        self.nodes[id] = node
        return node

    def _raft(
        self, id: str, disk: Disk, membership: Membership | None, offset: int, incarnation: int
    ) -> Raft:
        return Raft(
            id,
            GROUP,
            self.config,
            ScriptedTimeouts(offset),
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
            membership=membership,
            incarnation=incarnation,
        )

    def raft(self, id: str) -> Raft:
        return self.nodes[id].raft

    # --- faults ----------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Drop everything between a and b, both ways."""
        self.cuts |= {(a, b), (b, a)}

    def isolate(self, id: str) -> None:
        for other in self.nodes:
            if other != id:
                self.cut(id, other)

    def drop(self, predicate: Predicate) -> None:
        """Drop every message (at delivery) for which ``predicate`` is true, until recover()."""
        self.drop_rules.append(predicate)

    def recover(self) -> None:
        """Heal every cut and forget every drop rule (crashed nodes stay down)."""
        self.cuts.clear()
        self.drop_rules.clear()

    def crash(self, id: str) -> None:
        """Stop a node: it loses everything not on its disk; messages to it are lost."""
        self.down.add(id)
        self.inflight = [m for m in self.inflight if m.dst != id and m.src != id]

    def restart(self, id: str) -> Raft:
        node = self.nodes[id]
        self.down.discard(id)
        node.raft = self._raft(id, node.disk, node.membership, node.offset, node.incarnation)
        node.applied = decode_state(node.disk.snapshot.data) if node.disk.snapshot else []
        return node.raft

    def compact(self, id: str) -> Snapshot:
        """Snapshot a node's applied state and drop the log entries it covers."""
        node = self.nodes[id]
        node.raft.compact(node.raft.log.applied, encode_state(node.applied))
        snap = node.raft.log.snapshot
        node.disk.snapshot = snap
        node.disk.entries = [e for e in node.disk.entries if e.index > snap.meta.index]
        return snap

    # --- driving ---------------------------------------------------------------------------

    def up(self) -> list[str]:
        return [n for n in sorted(self.nodes) if n not in self.down]

    def tick(self, *ids: str, times: int = 1) -> None:
        """Tick the given nodes (default: every node that is up) and stabilize after each."""
        for _ in range(times):
            for id in ids or self.up():
                if id not in self.down:
                    self.raft(id).tick()
            self.stabilize()

    def run_until(self, done: Callable[[], bool], max_ticks: int = 200) -> int:
        """Tick everyone until ``done()``; returns the number of ticks it took."""
        for ticks in range(max_ticks + 1):
            if done():
                return ticks
            self.tick()
        raise AssertionError(f"condition not reached within {max_ticks} ticks")

    def propose(self, id: str, data: bytes) -> tuple[int, int]:
        return self.raft(id).propose(data)

    def process(self) -> None:
        """Handle every pending Ready; the messages they send join ``inflight``."""
        for id in self.up():
            raft = self.raft(id)
            while raft.has_ready():
                self.handle_ready(id, raft.ready())

    def handle_ready(self, id: str, rd: Ready) -> None:
        node = self.nodes[id]
        node.readies.append(rd)
        node.disk.persist(rd)  # 1. durable first
        for msg in rd.messages:  # 2. then talk
            self._check_durable(node, msg)
            self.sent.append(msg)
            self.inflight.append(msg)
        if rd.snapshot is not None:  # 3. then apply
            node.applied = decode_state(rd.snapshot.data)
        node.applied += [e.data for e in rd.committed if e.kind is EntryKind.NORMAL]
        node.raft.advance(rd)  # 4. and acknowledge

    def _check_durable(self, node: Node, msg: AnyMessage) -> None:
        if isinstance(msg, VoteResponse) and msg.granted and not msg.pre:
            hs = node.disk.hard_state
            assert (hs.term, hs.vote) == (msg.term, msg.dst), f"vote not durable: {msg}"
        if isinstance(msg, AppendResponse) and msg.success:
            term = node.disk.term_at(msg.match_index)
            assert term is not None, f"acknowledged entries not on disk: {msg}"

    def deliver(self, predicate: Predicate | None = None) -> list[AnyMessage]:
        """Deliver one round: every in-flight message (or those matching ``predicate``).

        Messages not chosen stay in flight; messages dropped by a fault are gone. Returns the
        messages that reached their destination.
        """
        chosen = [m for m in self.inflight if predicate is None or predicate(m)]
        self.inflight = [m for m in self.inflight if not (predicate is None or predicate(m))]
        delivered = []
        for msg in chosen:
            if self.dropped(msg):
                continue
            self.raft(msg.dst).step(msg)
            delivered.append(msg)
        return delivered

    def dropped(self, msg: AnyMessage) -> bool:
        return (
            msg.dst in self.down
            or msg.src in self.down
            or (msg.src, msg.dst) in self.cuts
            or any(rule(msg) for rule in self.drop_rules)
        )

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Process readies and deliver messages until nothing is pending anywhere."""
        for _ in range(max_rounds):
            self.process()
            if not self.inflight:
                return
            self.deliver()
        raise AssertionError("network did not go quiet")

    def inject(self, msg: AnyMessage) -> None:
        """Step a hand-made message into its destination (no network faults apply)."""
        self.raft(msg.dst).step(msg)

    # --- observations ----------------------------------------------------------------------

    def leaders(self) -> list[str]:
        return [n for n in self.up() if self.raft(n).role is Role.LEADER]

    def leader(self) -> str | None:
        """The leader with the highest term among nodes that are up (None if there is none)."""
        leaders = sorted(self.leaders(), key=lambda n: self.raft(n).term)
        return leaders[-1] if leaders else None

    def log_terms(self, id: str) -> list[tuple[int, int]]:
        """(index, term) of every entry in a node's in-memory log."""
        return [(e.index, e.term) for e in self.raft(id).log.entries]
