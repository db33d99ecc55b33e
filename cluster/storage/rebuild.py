"""Build a full replica in place from a healthy replica's snapshot plus this replica's own log.

Used to turn a log replica into a full one (DESIGN.md "Log replicas") and to repair a replica
whose data failed verification (scrub). The replica keeps its Raft identity: its hard state
(term, vote) and the log entries it holds are carried over into fresh files, so it never forgets
a vote or an acknowledged entry; only the applied state (SQLite) comes from elsewhere.

    staging = stage_store(dump, replica_dir.with_name(".rebuild-p0"))   # slow part, off-line
    # ... close the old replica ...
    finish_rebuild(staging, old_raft)   # writes the WAL: hard state, snapshot mark, log tail
    # ... swap directories, open the replica again ...

The snapshot (``ItemStore.dump``) must be at or after the start of the old log (``S >=`` its
snapshot index), or the entries between would be missing; ``RebuildError`` says so, and the
caller fetches a newer snapshot.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cluster.consensus.messages import Membership, SnapshotMeta
from cluster.consensus.raft import Raft

from .client import ASK_FAILURES, ask
from .itemstore import AppliedMark, ItemStore
from .layout import items_file, wal_dir
from .wal import WriteAheadLog


class RebuildHost(Protocol):
    """What a rebuild needs of the node it runs on (StorageNode): its name, its peers'
    addresses, and a way to swap a group's store for a fetched snapshot."""

    @property
    def node_id(self) -> str: ...

    @property
    def peers(self) -> Mapping[str, str]: ...

    async def rebuild_group(self, group: str, dump: bytes, set_aside: bool) -> int: ...

    def incarnation_of(self, group: str) -> int: ...


class RebuildError(Exception):
    """The snapshot cannot be combined with this replica's log."""


@dataclass(frozen=True, slots=True)
class Staged:
    path: Path
    mark: AppliedMark  # what the restored store holds


def stage_store(dump: bytes, staging: Path) -> Staged:
    """Restore ``dump`` into ``staging/items.sqlite`` (a fresh directory)."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    store = ItemStore(items_file(staging))
    try:
        store.restore(dump)
        store.make_durable()  # the WAL written next starts after this state
        mark = store.applied()
    finally:
        store.close()
    return Staged(staging, mark)


def check_compatible(staged: Staged, raft: Raft) -> None:
    first = raft.status().snapshot.index
    if staged.mark.index < first:
        raise RebuildError(
            f"snapshot at {staged.mark.index} is older than this replica's log (from {first + 1})"
        )


def finish_rebuild(staged: Staged, raft: Raft, segment_bytes: int) -> int:
    """Write the WAL of the rebuilt replica into the staging directory; returns its snapshot index.

    ``raft`` is the old replica's core, no longer running. Its log after the snapshot index is
    kept when it continues the snapshot (same term at the snapshot index), as Raft §7 requires.
    """
    check_compatible(staged, raft)
    if not items_file(staged.path).exists():  # a log after a snapshot the store does not hold
        raise RebuildError(f"{staged.path}: the staged store is gone")
    mark = staged.mark
    hard_state, snap, log = raft.log_state()
    last_index = log[-1].index if log else snap.index
    if mark.membership is not None:
        membership = Membership.decode(mark.membership)
    else:
        membership = raft.membership_at(min(mark.index, last_index))
    term_at_mark = snap.term if mark.index == snap.index else None
    term_at_mark = next((e.term for e in log if e.index == mark.index), term_at_mark)
    entries = []
    if mark.index <= last_index and term_at_mark == mark.term:
        entries = [e for e in log if e.index > mark.index]
    wal, _ = WriteAheadLog.open(wal_dir(staged.path), segment_bytes)
    try:
        wal.mark_snapshot(SnapshotMeta(mark.index, mark.term, membership))
        wal.save(hard_state, entries)
    finally:
        wal.close()
    return mark.index


async def rebuild_from(
    node: RebuildHost, group: str, sources: list[str], set_aside: bool, timeout: float = 600.0
) -> dict[str, Any]:
    """Fetch a snapshot from the first of ``sources`` that has one and rebuild with it.

    Retries a few times (a snapshot older than our log means: fetch a newer one). Returns what
    it did (snapshot index, bytes copied, timings) or ``{"error": ...}``.
    """
    me = node.node_id
    started = time.monotonic()
    last_error = "no source given"
    # Only a replica of this one's table (a source's replica of a deleted or newer table of
    # the same group id refuses: NotLeader), never another's items.
    dump = {"op": "snapshot_dump", "group": group, "incarnation": node.incarnation_of(group)}
    for attempt in range(3):
        for source in [s for s in sources if s != me]:
            address = node.peers.get(source)
            if address is None:
                last_error = f"{source}: unknown node"
                continue
            try:
                reply = await ask(address, dump, timeout)
            except ASK_FAILURES as exc:
                last_error = f"{source}: {exc!r}"
                continue
            if "data" not in reply:
                last_error = f"{source}: {reply.get('error')}: {reply.get('message')}"
                continue
            data = bytes(reply["data"])
            fetched = time.monotonic()
            try:
                index = await node.rebuild_group(group, data, set_aside)
            except RebuildError as exc:  # our log moved past the snapshot: fetch again
                last_error = str(exc)
                continue
            return {
                "index": index,
                "bytes": len(data),
                "source": source,
                "fetch_seconds": round(fetched - started, 3),
                "build_seconds": round(time.monotonic() - fetched, 3),
            }
        await asyncio.sleep(0.2 * (attempt + 1))
    return {"error": "Unavailable", "message": f"rebuild of {group}: {last_error}"}
