"""A replica's files: what it keeps (its mode), and how it is rebuilt from them at start.

    raft, wal, store, mode = recover(node_id, group, members, data_dir, settings, None, journal)

The store (SQLite) is the snapshot the Raft log starts from: everything up to its applied
index; the WAL (brought up to date from the node's journal first, journal.py) supplies the
hard state and the entries after it. A replica without usable applied state (log replica,
quarantined) starts from the WAL's snapshot mark instead.
"""

from __future__ import annotations

import enum
import logging
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster.consensus.messages import Membership, Snapshot, SnapshotMeta
from cluster.consensus.raft import Raft, RaftConfig

from .itemstore import ItemStore
from .journal import NodeJournal
from .layout import items_file, replace_durably, wal_dir
from .wal import WriteAheadLog

log = logging.getLogger(__name__)


def open_unused_store(path: Path) -> ItemStore:
    """The store of a replica without applied state; a damaged file is set aside, not fatal."""
    try:
        return ItemStore(path)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.damaged-{time.time_ns()}")
        log.warning("%s: unreadable (%s); moved to %s", path, exc, aside.name)
        for suffix in ("", "-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                extra.replace(aside.with_name(aside.name + suffix))
        return ItemStore(path)


class ReplicaMode(enum.Enum):
    """What a replica keeps (DESIGN.md "Log replicas", "Continuous verification").

    FULL: WAL and applied state (the SQLite B-tree); serves reads, may lead.
    LOG: a log replica: it persists and acknowledges WAL entries and tracks the commit index,
    but applies nothing (its SQLite file stays empty), serves no reads and never campaigns.
    QUARANTINED: a full replica whose data failed verification; it behaves like a log replica
    (the log is still good for the quorum) until it is rebuilt from a healthy replica.
    The mode is kept in a ``mode`` file next to the WAL; no file means FULL.
    """

    FULL = "full"
    LOG = "log"
    QUARANTINED = "quarantined"


def read_mode(data_dir: Path) -> ReplicaMode:
    path = data_dir / "mode"
    return ReplicaMode(path.read_text().strip()) if path.exists() else ReplicaMode.FULL


def write_mode(data_dir: Path, mode: ReplicaMode) -> None:
    path = data_dir / "mode"
    if mode is ReplicaMode.FULL:
        path.unlink(missing_ok=True)
        return
    replace_durably(path, mode.value)  # a power loss leaves the old mode or the new one


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    raft: RaftConfig = field(default_factory=RaftConfig)
    tick_seconds: float = 0.05
    unsafe_ack_before_commit: bool = False  # TEST-ONLY: see ClusterConfig.unsafe
    compact_every: int = 2000  # applied entries between snapshots (and WAL releases)
    segment_bytes: int = 4 * 1024 * 1024


def recover(
    node_id: str,
    group: str,
    members: frozenset[str] | None,
    data_dir: Path,
    settings: ReplicaSettings,
    mode: ReplicaMode | None,
    journal: NodeJournal | None,
    incarnation: int = 0,
) -> tuple[Raft, WriteAheadLog, ItemStore, ReplicaMode]:
    """Rebuild a replica's core, WAL and store from ``data_dir`` (or create them; ``members``
    bootstraps a group). ``mode`` (for a new replica) is recorded; None keeps the recorded one.
    With ``journal``, the WAL is first brought up to date from the node's journal.
    ``incarnation``: the group's (``Raft.step``), kept by the node (groups.json)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        write_mode(data_dir, mode)
    current = read_mode(data_dir)
    if journal is not None:  # the node's shared journal may hold its newest records
        wal, state = journal.recover(group, wal_dir(data_dir), settings.segment_bytes)
    else:
        wal, state = WriteAheadLog.open(wal_dir(data_dir), settings.segment_bytes)
    if state.truncated_bytes:
        log.warning("%s: WAL torn tail of %d bytes truncated", group, state.truncated_bytes)
    if current is ReplicaMode.FULL:
        store = ItemStore(items_file(data_dir))
    else:
        store = open_unused_store(items_file(data_dir))
    if current is not ReplicaMode.FULL:
        # No usable applied state: the WAL's snapshot mark starts the log (its data is
        # the empty "no state" marker), as a log replica received it from the leader.
        meta = state.snapshot or SnapshotMeta(0, 0, Membership(members or frozenset()))
        if not meta.membership.voters and members:
            meta = SnapshotMeta(meta.index, meta.term, Membership(members))
        raft = Raft(
            node_id,
            group,
            settings.raft,
            random.Random(),
            hard_state=state.hard_state,
            snapshot=Snapshot(meta),
            entries=state.entries,
            incarnation=incarnation,
        )
        return raft, wal, store, current
    mark = store.applied()
    if mark.membership is not None:
        membership = Membership.decode(mark.membership)
    elif state.snapshot is not None and state.snapshot.membership.voters:
        membership = state.snapshot.membership
    else:
        membership = Membership(members or frozenset())
    # The store is the snapshot: it holds everything up to its applied index.
    meta = SnapshotMeta(mark.index, mark.term, membership)
    data = store.dump() if mark.index else b""
    raft = Raft(
        node_id,
        group,
        settings.raft,
        random.Random(),  # production randomness; the simulator passes a seeded one
        hard_state=state.hard_state,
        snapshot=Snapshot(meta, data),
        entries=[e for e in state.entries if e.index > mark.index],
        incarnation=incarnation,
    )
    return raft, wal, store, current
