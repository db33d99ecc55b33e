"""One replica of one replication group inside a storage node: Raft core + WAL + ItemStore.

This module holds no protocol logic. It runs the core's loop in the documented order —
persist (WAL, fsynced by the node's journal together with every other group's records, or by
itself without a journal), send, apply (SQLite), advance — and turns client calls into inputs.
A leader's replication messages leave before the fsync (``split_messages``); replies and votes
after it. Persist, the replies and apply make one trip to the I/O thread, batched with the
other replicas' Readies on a node (readyio.py: one trip and one fsync for all of them).

    replica = await Replica.open(node_id, group, members, data_dir, settings, send)
    result = await replica.propose(encode_command(cmd), timeout=5.0)   # ApplyResult
    item = await replica.read_consistent(lambda store: store.get(tbl, pk, sk), timeout=2.0)

All file and SQLite work runs on one I/O thread, in order: the node's (readyio.py), or the
replica's own. On a node, the event loop runs a Ready's trip itself while that thread is idle,
holding its lock (readyio.IOThread): a store is never used by two threads at once.
Inputs arriving while a Ready is handled wait in an inbox (no step between ready() and advance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cluster.consensus.messages import (
    AnyMessage,
    EntryKind,
    Membership,
    SnapshotMeta,
)
from cluster.consensus.raft import (
    NotLeaderError,
    ProposalRejectedError,
    Raft,
    Ready,
    Role,
)
from cluster.tasks import cancel_and_wait

from .commands import ApplyResult, CommandError, ScrubCommand, decode_command
from .compaction import Compaction
from .itemstore import ItemCorruption, ItemStore
from .journal import NodeJournal
from .readmarks import ReadMarks
from .readyio import ReadyIO, split_messages

# ReplicaMode and ReplicaSettings are re-exported: callers know them as the replica's.
from .recovery import ReplicaMode as ReplicaMode
from .recovery import ReplicaSettings as ReplicaSettings
from .recovery import recover, write_mode
from .rolelog import RoleWatch
from .scrub import ReplicaReport, verify_replica
from .statemachine import StateMachine, WriteLog
from .storecalls import StoreCalls
from .tickclock import TickClock
from .wal import WriteAheadLog

log = logging.getLogger(__name__)
T = TypeVar("T")
# Verifications read whole files; they run here, beside the replicas' I/O threads.
_SCRUB_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scrub")
MAX_SCRUB_REPORTS = 32


class NotLeader(Exception):
    """Definitely not applied: this replica does not lead; ``leader`` is a hint."""

    def __init__(self, group: str, leader: str | None) -> None:
        super().__init__(f"{group}: not the leader (leader hint: {leader})")
        self.leader = leader


class ProposalRejected(Exception):
    """Definitely not applied: the leader cannot take it now (transfer or change in flight)."""


class OutcomeUnknown(Exception):
    """The command was proposed but its fate is unknown (it may still commit)."""


class ReplicaClosed(Exception):
    """The replica closed (rebuilt, removed, its node stopping) while a request waited for it."""


@dataclass
class _Pending:
    term: int
    future: asyncio.Future[ApplyResult]


class Replica:
    def __init__(
        self,
        node_id: str,
        group: str,
        raft: Raft,
        wal: WriteAheadLog,
        store: ItemStore,
        io: ThreadPoolExecutor,
        settings: ReplicaSettings,
        send: Callable[[AnyMessage], None],
        data_dir: Path | None = None,
        mode: ReplicaMode = ReplicaMode.FULL,
    ) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.mode = mode
        self.group = group
        self.raft = raft
        self.incarnation = raft.incarnation  # with ``group``, the group's identity
        self.wal = wal
        self.store = store
        self.marks = ReadMarks()  # TransactGetItems' (readmarks.py): I/O thread's work only
        self.machine = StateMachine(store, on_scrub=self._on_scrub, on_written=self._on_written)
        self.io = io
        self.store_calls = StoreCalls(io)  # reads and status: batched trips to ``io``
        self.settings = settings
        self.send = send
        self.inbox: deque[Callable[[], None]] = deque()
        self.wake = asyncio.Event()
        self.pending: dict[int, _Pending] = {}
        self.applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None
        self.elections = 0  # times this replica became leader (metrics)
        self.roles = RoleWatch(group)  # logs role/term/leader changes; says when it won or lost
        self.clock = TickClock(settings.tick_seconds)  # the lease's view of real time
        self.raft.set_can_lead(mode is ReplicaMode.FULL)
        self.event_loop = asyncio.get_running_loop()
        # Compaction never passes this index (the WAL archive's progress; None: no archive), so
        # a leader's log still holds every entry that was not archived yet.
        self.compact_floor: int | None = None
        self.compaction = Compaction(self)  # compacts the log every compact_every entries
        self.scrub_reports: dict[str, ReplicaReport | None] = {}  # scrub id -> ours (None: runs)
        self.quarantine_reason: str | None = None
        self.closing = False  # set first thing in close(): reads of the store stop here
        # The node's shared journal (journal.py): None, the WAL fsyncs by itself; its I/O
        # thread (readyio.py), which handles Readies in batches: None, one trip each.
        self.journal: NodeJournal | None = None
        self.ready_io: ReadyIO | None = None
        self.owns_io = True  # ``io`` is this replica's own (shut down at close)
        self._on_appended = self._await_commit  # how an appended proposal is answered (once)
        if settings.unsafe_ack_before_commit:
            log.warning("%s: TEST-ONLY broken mode ack-before-commit: writes may be lost", group)
            self._on_appended = self._ack_before_commit

    @classmethod
    async def open(
        cls,
        node_id: str,
        group: str,
        members: frozenset[str] | None,
        data_dir: Path,
        settings: ReplicaSettings,
        send: Callable[[AnyMessage], None],
        mode: ReplicaMode | None = None,
        journal: NodeJournal | None = None,
        ready_io: ReadyIO | None = None,
        incarnation: int = 0,
    ) -> Replica:
        """Recover a replica from ``data_dir`` (or create it; ``members`` bootstraps a group).

        ``mode`` (for a new replica) is recorded in ``data_dir``; None keeps the recorded one.
        ``ready_io``: the node's I/O thread (readyio.py); None, the replica has its own.
        ``incarnation``: the group's (its table's; ``Raft.step``): part of its identity."""
        own = ready_io is None
        io = ThreadPoolExecutor(1, f"io-{group}") if ready_io is None else ready_io.executor
        loop = asyncio.get_running_loop()

        raft, wal, store, current = await loop.run_in_executor(
            io, recover, node_id, group, members, data_dir, settings, mode, journal, incarnation
        )
        replica = cls(node_id, group, raft, wal, store, io, settings, send, data_dir, current)
        replica.journal, replica.ready_io, replica.owns_io = journal, ready_io, own
        replica.task = asyncio.create_task(replica._run(), name=f"replica-{group}")
        return replica

    async def close(self) -> None:
        """Close the loop, then the files, whatever failed: a loop that ended on an error (a
        trip's write refused by a failed journal) raises it here, after the files closed."""
        self.closing = True
        try:
            await cancel_and_wait(self.task)
        finally:
            self._fail_pending(OutcomeUnknown(f"{self.group}: replica closed"))
            try:
                await asyncio.get_running_loop().run_in_executor(self.io, self._close_files)
            finally:
                if self.owns_io:
                    self.io.shutdown(wait=True)

    def _close_files(self) -> None:
        with contextlib.ExitStack() as closing:  # each closes even if one before it raised
            closing.callback(self.store.close)
            closing.callback(self.wal.close)
            if self.journal is not None:
                self.journal.forget(self.group)  # fsyncs the WAL: it stands alone from here on

    # --- inputs (all go through the inbox) ---------------------------------------------------

    def _submit(self, fn: Callable[[], None]) -> None:
        self.inbox.append(fn)
        self.wake.set()

    def step(self, msg: AnyMessage) -> None:
        self._submit(lambda: self.raft.step(msg))

    def when_durable(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the state the core has now is on disk (inputs run between Readies)."""
        self._submit(fn)

    def tick(self, at: float | None = None, catch_up: bool = False) -> None:
        """One tick of the core, standing for the instant ``at`` (monotonic; default now):
        the clock records that instant, not when the inbox got to it (``TickClock``)."""
        instant = time.monotonic() if at is None else at

        def do_tick() -> None:
            self.raft.tick(catch_up)  # see Raft.tick: a stall's ticks start no election
            self.clock.ticked(instant)

        self._submit(do_tick)

    async def propose(self, data: bytes, timeout: float) -> ApplyResult:
        """Replicate and apply a command; raises NotLeader (not applied) or OutcomeUnknown."""
        return await self._propose(lambda: self.raft.propose(data), timeout)

    async def change_membership(self, new: Membership, timeout: float) -> None:
        """Propose a single-member change and wait until it is applied here."""
        await self._propose(lambda: self.raft.propose_membership(new), timeout)

    def transfer_leadership(self, target: str) -> None:
        """Ask the core to hand leadership to ``target`` once it has caught up (§3.10)."""

        def do_transfer() -> None:
            with contextlib.suppress(NotLeaderError):
                self.raft.transfer_leadership(target)

        self._submit(do_transfer)

    def start_propose(self, data: bytes) -> asyncio.Future[ApplyResult]:
        """``propose`` without the wait: the future settles as ``propose`` returns or raises,
        and never times out (the caller bounds its wait; the node's client requests do, with
        a timer instead of a task each: node.py)."""
        return self._proposal(lambda: self.raft.propose(data))

    async def _propose(self, append: Callable[[], tuple[int, int]], timeout: float) -> ApplyResult:
        future = self._proposal(append)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise OutcomeUnknown(f"{self.group}: no outcome within {timeout}s") from None

    def _proposal(self, append: Callable[[], tuple[int, int]]) -> asyncio.Future[ApplyResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ApplyResult] = loop.create_future()
        # The outcome may arrive after the caller gave up: consume it so it is not reported.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

        def do_propose() -> None:
            try:
                index, term = append()
            except NotLeaderError as exc:
                future.set_exception(NotLeader(self.group, exc.leader))
            except ProposalRejectedError as exc:
                future.set_exception(ProposalRejected(f"{self.group}: {exc}"))
            else:
                self._on_appended(index, term, future)

        self._submit(do_propose)
        return future

    def _await_commit(self, index: int, term: int, future: asyncio.Future[ApplyResult]) -> None:
        self.pending[index] = _Pending(term, future)  # answered by _complete once applied

    def _ack_before_commit(
        self, index: int, term: int, future: asyncio.Future[ApplyResult]
    ) -> None:
        """TEST-ONLY broken mode: acknowledge before a quorum has the entry (it may be lost)."""
        future.set_result(ApplyResult(True))

    async def read_consistent(self, fn: Callable[[ItemStore], T], timeout: float) -> T:
        """Run ``fn`` on the store under the leader's lease, after applying up to commit."""
        # Never judge the lease while the tick count lags real time (``TickClock``): wait for
        # the tick loop to catch up, then look again; still late -> refuse.
        await self.clock.caught_up(min(timeout, self.settings.tick_seconds * 4))
        read_index = None if self.clock.late() else self.raft.lease_read_index()
        if read_index is None:
            leader = self.raft.leader if self.raft.leader != self.node_id else None
            raise NotLeader(self.group, leader)
        await asyncio.wait_for(self._applied(read_index), timeout)
        return await self.read_local(fn)

    async def read_local(self, fn: Callable[[ItemStore], T]) -> T:
        """Run ``fn`` on this replica's store as it is (an eventually consistent read).

        A replica without trustworthy applied state (log replica, quarantined) refuses, with
        NotLeader, so that a client moves on to another replica.
        """
        if self.mode is not ReplicaMode.FULL:
            leader = self.raft.leader if self.raft.leader != self.node_id else None
            raise NotLeader(self.group, leader)
        try:
            return await self._on_store(fn)
        except ReplicaClosed:  # rebuilt or removed meanwhile: the client asks another replica
            raise NotLeader(self.group, None) from None

    async def _on_store(self, fn: Callable[[ItemStore], T]) -> T:
        """Run ``fn`` on the store on the io thread, unless the replica closes first.

        The store's files close on that same single thread, after ``closing`` is set, so the
        check there cannot race them (a digest or read of a replica being rebuilt used to hit
        sqlite's "closed database" and fail the whole admin request).
        """

        def guarded() -> T:
            if self.closing:
                raise ReplicaClosed(self.group)
            return fn(self.store)

        try:
            return await self.store_calls.run(guarded)  # one I/O-thread trip per loop pass
        except RuntimeError as exc:  # the executor shut down: the replica closed
            if self.closing:
                raise ReplicaClosed(self.group) from exc
            raise

    def _applied(self, index: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.raft.applied_index >= index:
            future.set_result(None)
        else:
            self.applied_waiters.append((index, future))
        return future

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        """An I/O failure ends the loop (fail-stop): say so at once, not only at the node's stop."""
        try:
            await self._serve()
        except Exception as exc:
            log.critical("replica %s stopped on %r; not served until restart", self.group, exc)
            raise

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.inbox or self.raft.has_ready():
                while self.inbox:
                    self.inbox.popleft()()
                if self.raft.has_ready():
                    rd = self.raft.ready()
                    early, late = split_messages(rd.messages) if rd.must_sync else (rd.messages, [])
                    self._send_all(early)
                    results: dict[int, ApplyResult] = {}
                    # Nothing to persist or apply (heartbeats, answers): no I/O-thread trip.
                    if rd.must_sync or rd.committed:
                        if self.ready_io is not None:
                            results = await self.ready_io.handle(self, rd, late)
                        else:
                            results = await loop.run_in_executor(
                                self.io, self._handle_ready, rd, late
                            )
                    self.raft.advance(rd)
                    self._hand_over()
                    self._complete(rd, results)
                    await self.compaction.maybe_compact()
                change = self.roles.note(self.raft)  # logs role/term changes
                if change == "won":
                    self.elections += 1
                elif change == "lost":
                    self._lost_leadership()
            if self.compaction.dump_done():  # woken by the dump's end: finish the compaction
                await self.compaction.maybe_compact()

    def _handle_ready(self, rd: Ready, late: list[AnyMessage]) -> dict[int, ApplyResult]:
        """Persist (fsync), then send what waited for it, then apply: one trip to the I/O
        thread. Replies and votes leave only once this Ready is on disk."""
        self._persist(rd)
        if late:
            self.event_loop.call_soon_threadsafe(self._send_all, late)
        return self._apply(rd)

    def _send_all(self, messages: list[AnyMessage]) -> None:
        for msg in messages:
            self.send(msg)

    def _persist(self, rd: Ready, batched: bool = False) -> None:
        """``batched``: the caller fsyncs every replica's records at once (readyio.py)."""
        if rd.snapshot is not None:
            if not rd.snapshot.data:
                # Metadata only: the leader counts us as a log replica. The log now starts
                # after the snapshot, so applying can never catch up: become one.
                self._set_mode(ReplicaMode.LOG)
            elif self.mode is ReplicaMode.FULL:
                # Store first, then the WAL mark: a crash in between leaves a store that is
                # ahead of the WAL's mark, which recovery handles (the store is the snapshot).
                self.store.restore(rd.snapshot.data)
                self.store.make_durable()  # the mark below lets the WAL drop the old log
            self._mark_snapshot(rd.snapshot.meta)
        if rd.must_sync and (rd.entries or rd.hard_state is not None):
            # A Ready that only moved the commit index (not must_sync) writes nothing (it cost a
            # WAL write and a journal record, unsynced): a restart starts from the commit index
            # last written with entries, a term or a vote, which Raft allows (the leader tells
            # it again; the store keeps its own applied mark). Entries, terms and votes are
            # fsynced (one journal fsync for all groups) before the replies and votes they back.
            if self.journal is not None:
                self.journal.save(self.group, self.wal, rd.hard_state, rd.entries, wait=not batched)
            else:
                self.wal.save(rd.hard_state, rd.entries, sync=True)

    def _mark_snapshot(self, meta: SnapshotMeta) -> None:
        if self.journal is not None:
            self.journal.mark_snapshot(self.group, self.wal, meta)
        else:
            self.wal.mark_snapshot(meta)

    def _set_mode(self, mode: ReplicaMode) -> None:
        """Record a new mode (I/O thread); the core learns it in ``_run``, after the Ready."""
        if mode is not self.mode:
            log.warning("%s: replica mode %s -> %s", self.group, self.mode.value, mode.value)
            self.marks.clear()  # its store stops (or starts) being applied: marks prove nothing
            if self.data_dir is not None:
                write_mode(self.data_dir, mode)
            self.mode = mode

    def _on_written(self, written: WriteLog) -> None:
        """(I/O thread) What an apply wrote drops the read marks on it."""
        self.marks.written(written.keys)
        for tbl in written.tables:
            self.marks.dropped_table(tbl)

    def _apply(self, rd: Ready) -> dict[int, ApplyResult]:
        if rd.snapshot is not None:  # the store was replaced (or is no longer applied)
            self.marks.clear()
        if self.mode is not ReplicaMode.FULL:
            # Log replicas track the commit index (advance) but apply nothing; at a scrub
            # mark they still verify what they have: the WAL.
            for entry in rd.committed:
                if entry.data and entry.kind is EntryKind.NORMAL:
                    with contextlib.suppress(CommandError):
                        cmd = decode_command(entry.data)
                        if isinstance(cmd, ScrubCommand):
                            self._on_scrub(entry.index, cmd.scrub_id)
            return {}
        try:
            committed = [e for e in rd.committed if e.index > self.store.applied().index]
            return self.machine.apply(committed, self.pending)  # results only for waiters
        except (sqlite3.DatabaseError, ItemCorruption) as exc:
            # Our data is damaged: stop applying and serving it; the leader rebuilds us.
            self.quarantine_reason = f"applying failed: {exc}"
            log.error("%s: %s", self.group, self.quarantine_reason)
            self._set_mode(ReplicaMode.QUARANTINED)
            return {}

    def _on_scrub(self, index: int, scrub_id: str) -> None:
        """At a scrub mark (I/O thread, store exactly at ``index``): start verifying."""
        full = self.mode is ReplicaMode.FULL
        snapshot = None
        if full:
            with contextlib.suppress(sqlite3.Error):
                self.store.checkpoint()  # so the file on disk is what gets read
            snapshot = self.store.open_snapshot()
        wal = [(p, p.stat().st_size) for p in self.wal.segment_paths() if p.exists()]
        self.scrub_reports[scrub_id] = None
        while len(self.scrub_reports) > MAX_SCRUB_REPORTS:
            del self.scrub_reports[next(iter(self.scrub_reports))]
        mode = self.mode.value
        future = _SCRUB_POOL.submit(verify_replica, index, mode, snapshot, wal)

        def done(f: Any) -> None:
            try:
                report: ReplicaReport = f.result()
            except Exception as exc:  # a verification that crashes is a failed one
                report = ReplicaReport(index, mode, None, 0, (f"verification failed: {exc!r}",))
            self.scrub_reports[scrub_id] = report
            if report.problems and self.mode is ReplicaMode.FULL:
                self.quarantine(f"scrub at {index}: {report.problems[0]}")

        future.add_done_callback(done)

    def quarantine(self, reason: str) -> None:
        """Stop trusting this replica's data: no reads, no applying, no leadership (thread-safe).

        It still keeps and acknowledges the log, like a log replica, until it is rebuilt.
        A leader hands leadership to a full member first.
        """
        if self.mode is ReplicaMode.QUARANTINED:
            return
        self.quarantine_reason = reason
        log.error("%s: quarantined: %s", self.group, reason)
        self.mode = ReplicaMode.QUARANTINED
        with contextlib.suppress(RuntimeError):  # closed meanwhile (rebuilt): nothing to do
            if self.data_dir is not None:
                self.io.submit(write_mode, self.data_dir, ReplicaMode.QUARANTINED)
            self.event_loop.call_soon_threadsafe(self._submit, self._hand_over)

    def _hand_over(self) -> None:
        """A replica that may not lead (any more) passes leadership to the best full member."""
        raft = self.raft
        full = self.mode is ReplicaMode.FULL
        raft.set_can_lead(full)
        if full or raft.role is not Role.LEADER:
            return
        target = raft.successor()
        if target is not None and raft.transfer_target is None:
            with contextlib.suppress(NotLeaderError):
                raft.transfer_leadership(target)

    def _complete(self, rd: Ready, results: dict[int, ApplyResult]) -> None:
        for entry in rd.committed:
            pending = self.pending.pop(entry.index, None)
            if pending is None or pending.future.done():
                continue
            if self.mode is not ReplicaMode.FULL:  # committed, but nobody here applied it
                unknown = OutcomeUnknown(f"{self.group}: replica quarantined, result unknown")
                pending.future.set_exception(unknown)
            elif pending.term == entry.term:
                pending.future.set_result(results.get(entry.index, ApplyResult(True)))
            else:  # another leader's entry took this index: ours was never committed
                pending.future.set_exception(NotLeader(self.group, self.raft.leader))
        applied = self.raft.applied_index
        if rd.snapshot is not None:  # proposals below an installed snapshot: fate unknown
            for index in [i for i in self.pending if i <= applied]:
                self.pending.pop(index).future.set_exception(
                    OutcomeUnknown(f"{self.group}: superseded by a snapshot")
                )
        still_waiting = []
        for index, future in self.applied_waiters:
            if index <= applied:
                if not future.done():
                    future.set_result(None)
            else:
                still_waiting.append((index, future))
        self.applied_waiters = still_waiting

    def release_wal(self, meta: SnapshotMeta) -> None:
        """(I/O thread) The log up to ``meta`` is compacted: let the WAL drop it."""
        if self.mode is ReplicaMode.FULL:
            # Store commits are not fsynced one by one (itemstore.py): before the WAL may drop
            # the entries up to the mark, the applies that hold them must be on disk.
            self.store.make_durable()
        self._mark_snapshot(meta)
        if self.journal is not None:
            self.journal.release_before(self.group, self.wal, meta.index + 1)
        else:
            self.wal.release_before(meta.index + 1)

    def _lost_leadership(self) -> None:
        """Deposed (check-quorum, a newer term, a transfer): our uncommitted proposals may
        still commit under the next leader, or never; say so now rather than at their
        timeout, so that clients retry elsewhere at once."""
        if self.pending:
            log.info("%s: lost leadership with %d proposals pending", self.group, len(self.pending))
        self._fail_pending(OutcomeUnknown(f"{self.group}: leadership lost; outcome unknown"))

    def _fail_pending(self, exc: Exception) -> None:
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        self.pending.clear()

    # --- introspection -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.raft.status()
        return {
            "group": self.group,
            "role": st.role.value,
            "term": st.term,
            "leader": st.leader,
            "commit": st.commit,
            "applied": st.applied,
            "last_index": st.last_index,
            "members": sorted(st.membership.voters),
            "log_only": sorted(st.membership.log_only),
            "lease": st.lease_valid,
            "mode": self.mode.value,
            "rejoining": st.rejoining,
        }

    async def digest(self) -> dict[str, Any]:
        """The applied index and digest of the applied data (None for a log replica)."""
        if self.mode is not ReplicaMode.FULL:
            return {"group": self.group, "applied": self.raft.applied_index, "digest": None}

        def take(store: ItemStore) -> dict[str, Any]:
            return {"applied": store.applied().index, "digest": store.digest()}

        return {"group": self.group, **await self._on_store(take)}
