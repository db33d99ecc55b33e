"""Log compaction of one replica: every ``compact_every`` applied entries, a snapshot (each
replica of a group at its own phase: ``compaction_due``).

A full replica's snapshot is its store's dump. The dump is read through a pinned read view
(itemstore.DumpView) in a thread of its own, while the replica goes on replicating and
applying: read on the node's one I/O thread, a 20k-item store stalled every group's writes
for 30 ms (bench/replication.py's p99 at half load: 55 ms with compaction, 14-18 ms without).
The view is opened on the I/O thread between this replica's applies, so it holds exactly the
entries up to the compaction index; the core compacts when the dump is done, from the
replica's loop (never between ready() and advance()), and only then may the WAL drop entries.

    compaction = Compaction(replica)
    await compaction.maybe_compact()     # in the replica's loop, after each Ready
    compaction.dump_done()               # True: call maybe_compact to finish it

A log replica has no state to dump: it compacts at once, keeping a tail of the log, and never
past what every full member holds (its log may be the only second copy of entries above it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from cluster.consensus.messages import Membership, Snapshot, SnapshotMeta
from cluster.consensus.raft import Raft

from .itemstore import DumpView, ItemStore
from .recovery import ReplicaMode, ReplicaSettings

log = logging.getLogger(__name__)

# Whole-store dumps run here, one at a time per process. DUMP_PAUSE: see DumpView.dump.
_DUMP_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dump")
DUMP_PAUSE = 0.0005
# A dump reads every row of the store (~0.9 us a row here, most of it holding the GIL), so at a
# fixed ``compact_every`` a big store's dumps cost more per write than the write: at half load
# in bench/replication.py (a 30-40k-item store) ~10% of the nodes' GIL samples, in bursts of
# 30-60 ms that the event loop shares the GIL with. A full replica therefore waits for at least
# ROWS_PER_ENTRY rows of its last dump per entry (a dump costs at most ~that many rows' reads
# per applied entry), but never more than MAX_STRETCH times ``compact_every``: the log between
# snapshots stays in memory (and in the WAL), and Python's full garbage collections walk it.
ROWS_PER_ENTRY = 4
MAX_STRETCH = 4


def compaction_interval(every: int, dumped_rows: int) -> int:
    """Entries between a full replica's snapshots, after a dump of ``dumped_rows`` rows:
    ``every`` for a store of up to ``every * ROWS_PER_ENTRY`` rows, then growing with it, up to
    ``every * MAX_STRETCH``."""
    return max(every, min(every * MAX_STRETCH, dumped_rows // ROWS_PER_ENTRY))


def compaction_due(snapshot: int, every: int, me: str, members: Membership) -> int:
    """The applied index at which a replica whose snapshot is at ``snapshot`` compacts next.

    About every ``every`` entries, but each replica of a group at its own phase (its rank
    among the voters, times ``every`` / their number): replicas of one group apply the same
    entries at about the same time, so with one threshold all of them dumped at once, and on
    a busy box those dumps together made bench/replication.py's half-load bursts (p99 from
    due 28-35 -> 18-20 ms staggered, writes over 15 ms 620-870 -> 210-400 per 5 s). At
    least 3/4 ``every`` after the snapshot (a log replica compacts ``every`` / 2 below it)."""
    voters = sorted(members.voters)
    phase = voters.index(me) * every // len(voters) if me in voters else 0
    due = ((snapshot + phase) // every + 1) * every - phase
    return max(due, snapshot + every - every // 4)


class Compactable(Protocol):
    """What compaction needs of a replica (replica.Replica)."""

    group: str
    raft: Raft
    settings: ReplicaSettings
    mode: ReplicaMode
    store: ItemStore
    io: ThreadPoolExecutor
    compact_floor: int | None
    event_loop: asyncio.AbstractEventLoop
    wake: asyncio.Event

    def release_wal(self, meta: SnapshotMeta) -> None: ...


@dataclass
class _Dumping:
    """A compaction under way: the store's dump at ``index`` being read in _DUMP_POOL."""

    index: int
    base: Snapshot  # the core's snapshot when it started: another one since voids the dump
    future: Future[bytes]
    view: DumpView  # its ``rows`` once the dump is done


class Compaction:
    def __init__(self, replica: Compactable) -> None:
        self.replica = replica
        self._dumping: _Dumping | None = None
        self.dumped_rows = 0  # rows of the last dump that made a snapshot (compaction_interval)
        # compaction_due's answer and what it was asked: asked after every Ready, it changes
        # only with the snapshot, the interval or the membership (identity: a new one is a
        # new object), so it is computed again only then (it sorted the voters each time).
        self._due: tuple[int, int, Membership | None, int] = (-1, -1, None, 0)

    def due(self, interval: int) -> int:
        """``compaction_due`` for the replica's snapshot, ``interval`` and membership now."""
        raft = self.replica.raft
        snapshot, members = raft.snapshot().meta.index, raft.membership
        known = self._due
        if known[0] != snapshot or known[1] != interval or known[2] is not members:
            self._due = (
                snapshot,
                interval,
                members,
                compaction_due(snapshot, interval, raft.id, members),
            )
        return self._due[3]

    def dump_done(self) -> bool:
        return self._dumping is not None and self._dumping.future.done()

    async def maybe_compact(self) -> None:
        """Compact if ``compact_every`` entries were applied since the snapshot (a full
        replica: start the dump; the call after it is done compacts)."""
        r = self.replica
        raft = r.raft
        if self._dumping is not None:
            if self._dumping.future.done():
                await self._finish(self._dumping)
            return
        index = raft.applied_index
        every = r.settings.compact_every
        interval = every
        if r.mode is ReplicaMode.FULL:  # it dumps its store: the bigger, the rarer
            interval = compaction_interval(every, self.dumped_rows)
        if index < self.due(interval):
            return
        loop = asyncio.get_running_loop()
        if r.mode is not ReplicaMode.FULL:
            # No state to snapshot: drop old entries but keep a tail, so that a full replica
            # can be built here from another replica's snapshot plus this log (rebuild).
            # Correctness over disk: never past what every full voter holds (the leader's
            # word, Raft.full_voters_hold). Above it this log may be the only second copy of
            # committed entries: a full member that lags by more than the tail, or is down,
            # left them on the leader alone. So the log grows while a full member lags (until
            # healing replaces it), and while the leader says nothing (a new leader not yet
            # acknowledged by every full voter, an older leader during a rolling upgrade).
            index = min(index - every // 2, raft.full_voters_hold())
            if index <= raft.snapshot().meta.index:
                return
            raft.compact(index, b"")
            await loop.run_in_executor(r.io, r.release_wal, raft.snapshot().meta)
            return
        floor = r.compact_floor
        if floor is not None and floor < index:
            # Entries not archived yet stay in the log, unless the archive is far behind (it
            # then restarts from a snapshot rather than holding the log forever).
            if index - floor < 10 * every:
                index = floor
            if index - raft.snapshot().meta.index < every // 2:
                return
        view = await loop.run_in_executor(r.io, r.store.pin_view)
        # Never claim a snapshot at an index its data does not reach (correctness guard: the
        # store is at raft's applied index here, so this changes nothing unless that breaks).
        # A store ahead of ``index`` (the archive floor above) was so before views existed:
        # recovery and receivers skip the entries the dump already holds.
        index = min(index, view.applied.index)
        try:
            future = _DUMP_POOL.submit(view.dump, DUMP_PAUSE)
        except BaseException:
            view.close()  # its open read transaction would hold back the store's checkpoints
            raise
        future.add_done_callback(self._wake)
        self._dumping = _Dumping(index, raft.snapshot(), future, view)

    def _wake(self, _: Future[bytes]) -> None:
        """(dump thread) The replica's loop finishes the compaction (unless it is gone)."""
        with contextlib.suppress(RuntimeError):  # the event loop closed meanwhile
            self.replica.event_loop.call_soon_threadsafe(self.replica.wake.set)

    async def _finish(self, dumping: _Dumping) -> None:
        r = self.replica
        self._dumping = None
        try:
            data = dumping.future.result()
        except Exception as exc:  # e.g. a damaged file: scrub judges it; try again next time
            log.error("%s: compaction dump at %d failed: %r", r.group, dumping.index, exc)
            return
        if r.mode is not ReplicaMode.FULL or r.raft.snapshot() is not dumping.base:
            return  # a snapshot was installed, or the store stopped being applied, meanwhile
        r.raft.compact(dumping.index, data)
        self.dumped_rows = dumping.view.rows
        meta = r.raft.snapshot().meta
        await asyncio.get_running_loop().run_in_executor(r.io, r.release_wal, meta)
