"""A log replica and the stateless InstallSnapshot its leader sends it (raft.py _handle_snapshot).

A leader whose snapshot passed a log replica's ``next`` sends it the snapshot's metadata only
(no state: a log replica has none). When the log replica already holds that entry with its
term, its log is all it has of those committed entries, and may be their only second copy (a
full member that lags): it keeps the log and only moves its commit index (safety review s10,
seed 627 g1 of the log-replica schedule: restoring dropped committed entries 49..52 that the
full member left lacked, and the group could never make progress with the leader cut off).
When it does not hold the entry, or the snapshot carries state, it restores as before.
"""

from __future__ import annotations

from cluster.consensus.messages import (
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    Membership,
    Snapshot,
    SnapshotMeta,
)

from .network import GROUP, Network

N3 = ["n1", "n2", "n3"]


def _lagging_full_member(lagging: str = "n2") -> Network:
    """n1 leads, n3 is a log replica; ``lagging`` misses six writes the other two commit."""
    net = Network()
    members = Membership(frozenset(N3), log_only=frozenset({"n3"}))
    for node, offset in (("n1", 0), ("n2", 6), ("n3", 9)):
        net.add(node, membership=members, offset=offset)
    net.run_until(lambda: net.leader() == "n1")
    net.stabilize()
    net.cut("n1", lagging)
    for i in range(6):
        net.propose("n1", f"w{i}".encode())
    net.stabilize()
    return net


def _snapshot_to_n3(net: Network, data: bytes | None = None) -> tuple[Snapshot, list[object]]:
    """n1 compacts what it applied and sends n3 an InstallSnapshot (stateless unless
    ``data``); returns the snapshot and n3's Ready contents after it."""
    n1 = net.raft("n1")
    snap = net.compact("n1")
    sent = Snapshot(snap.meta, data) if data is not None else Snapshot(snap.meta)
    net.inject(InstallSnapshot(GROUP, "n1", "n3", n1.term, sent, 0))
    rd = net.raft("n3").ready()
    net.handle_ready("n3", rd)
    return snap, [rd.snapshot, *rd.messages]


def test_a_log_replica_keeps_the_entries_it_holds_when_a_stateless_snapshot_arrives() -> None:
    # n1 and the log replica commit six entries without n2 (2 of 3, the log replica counts).
    net = _lagging_full_member()
    n1, n2, n3 = net.raft("n1"), net.raft("n2"), net.raft("n3")
    top = n1.log.last_index()
    assert n1.log.commit == top and n3.log.last_index() == top and n2.log.last_index() < top
    assert n3.log.commit < top  # it has not heard the last commit yet: the snapshot tells it

    snap, (installed, *replies) = _snapshot_to_n3(net)

    # The committed entries n2 lacks stay on n3 as entries: still two copies of each.
    lacking = range(n2.log.last_index() + 1, top + 1)
    assert [e.index for e in n3.log.slice(lacking.start, lacking.stop)] == list(lacking)
    assert n3.log.snapshot.meta.index < lacking.start
    assert installed is None and n3.log.pending_snapshot is None  # nothing to install
    assert n3.log.commit == top == snap.meta.index
    assert n3.log.applied == top  # committed entries handed out, as after AppendEntries
    acks = [m for m in replies if isinstance(m, AppendResponse)]
    assert [(a.success, a.match_index) for a in acks] == [(True, top)]
    assert n3.membership == Membership(frozenset(N3), log_only=frozenset({"n3"}))
    assert net.nodes["n3"].disk.term_at(top) == snap.meta.term  # still on its disk

    # With the leader gone, n2 can still get every committed entry from n3's log.
    net.crash("n1")
    net.recover()
    net.run_until(lambda: net.leader() is not None and n2.log.commit >= top, max_ticks=400)
    assert n2.log.last_index() >= top and n2.log.commit >= top
    assert net.nodes["n2"].applied[-6:] == [f"w{i}".encode() for i in range(6)]


def test_a_log_replica_that_lacks_the_snapshots_entry_restores_it() -> None:
    """It did not acknowledge that entry, so the leader's commit of it counted n2's copy and
    its own: dropping what it holds loses no second copy. Unchanged behaviour."""
    net = _lagging_full_member(lagging="n3")
    n3 = net.raft("n3")
    behind = n3.log.last_index()
    snap, (installed, *_) = _snapshot_to_n3(net)
    assert behind < snap.meta.index
    assert installed is not None and installed.meta == snap.meta and not installed.data
    assert n3.log.snapshot.meta == snap.meta and n3.log.last_index() == snap.meta.index
    assert n3.log.commit == snap.meta.index


def test_a_snapshot_with_state_is_installed_even_when_the_log_holds_its_entry() -> None:
    """Full replicas are unchanged: state replaces the log prefix it covers."""
    net = _lagging_full_member()
    n3 = net.raft("n3")
    snap, (installed, *_) = _snapshot_to_n3(net, data=b"state")
    assert installed is not None and installed.data == b"state"
    assert n3.log.snapshot.meta == snap.meta and n3.log.last_index() == snap.meta.index


def test_a_stateless_snapshot_whose_term_differs_is_restored() -> None:
    """Same index, another term: the log's entry is not the committed one (it never
    acknowledged it), so the snapshot replaces the whole log, as before."""
    net = _lagging_full_member()
    n1, n3 = net.raft("n1"), net.raft("n3")
    top = n1.log.last_index()
    net.compact("n1")
    meta = n1.log.snapshot.meta
    other = SnapshotMeta(meta.index, meta.term + 1, meta.membership)
    net.inject(InstallSnapshot(GROUP, "n1", "n3", n1.term + 1, Snapshot(other), 0))
    assert n3.log.snapshot.meta == other and n3.log.last_index() == top
    assert n3.log.pending_snapshot is not None


def test_a_kept_log_commits_only_up_to_the_snapshot_index() -> None:
    """A kept log may hold entries above the snapshot's index that nobody has committed: only
    the snapshot's index is known committed (safety review s10: a break committing the whole
    kept log passed every other consensus test; only wide simulator seeds saw stale reads)."""
    net = _lagging_full_member()  # n1 leads, n2 cut off from n1, n3 a log replica
    n1, n3 = net.raft("n1"), net.raft("n3")
    top = n1.log.last_index()
    assert n1.log.commit == top and n3.log.last_index() == top and n3.log.commit < top
    told = n3.log.commit
    # Three more entries on n1 that do not reach n3 by the network (uncommitted: n2 is cut).
    net.drop(lambda m: m.src == "n1" and m.dst == "n3")
    for i in range(3):
        net.propose("n1", f"u{i}".encode())
    net.stabilize()
    assert n1.log.commit == top and n1.log.last_index() == top + 3
    # A late AppendEntries that carried them (with the commit index n3 knew) arrives.
    extra = tuple(n1.log.slice(top + 1, top + 4))
    net.inject(AppendEntries(GROUP, "n1", "n3", n1.term, top, n1.log.term_at(top), extra, told))
    net.handle_ready("n3", n3.ready())
    assert n3.log.last_index() == top + 3 and n3.log.commit == told
    snap = net.compact("n1")
    assert snap.meta.index == top
    net.inject(InstallSnapshot(GROUP, "n1", "n3", n1.term, Snapshot(snap.meta), 0))
    rd = n3.ready()
    net.handle_ready("n3", rd)
    assert n3.log.last_index() == top + 3  # kept, its uncommitted suffix included
    assert n3.log.commit == top
    assert n3.log.applied <= top
    assert all(e.index <= top for e in rd.committed)
