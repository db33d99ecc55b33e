"""The storage node's one I/O thread: every replica's Readies, handled in batches (multi-Raft).

A Ready is persisted, then the messages that waited for it leave, then its committed entries
are applied (replica.py). With one I/O thread per replica, each Ready of each group was a trip
of its own: waking that group's thread (a futex wake with the GIL held; in bench/replication.py's
12-group profile 15-30% of a node's GIL samples sat there, the loop stalled behind it) and, for
the journal's group commit, waking each waiting thread again. Here the Readies waiting when the
thread is free make one trip: every group's records are appended (its WAL, the node journal's
queue), then ONE fsync makes all of them durable, then each group's waiting messages leave and
its committed entries are applied, in the order the Readies came. Nothing is sent or applied
before the fsync that covers it: the rule is unchanged (correctness over speed).

    io = ReadyIO()                                   # one per node
    results = await io.handle(replica, rd, late)     # replica.py's _run, instead of a trip
    await loop.run_in_executor(io.executor, fn)      # the replicas' other file and SQLite work

The same single thread runs all of the replicas' file and SQLite work (recovery, reads, dumps,
closing), so each store is used by the one thread that opened it. A Ready carrying a snapshot
is handled alone, as before (its store restore and WAL mark wait for their own fsyncs).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from cluster.consensus.messages import AnyMessage, AppendEntries, InstallSnapshot, TimeoutNow
from cluster.consensus.raft import Ready

from .commands import ApplyResult
from .journal import NodeJournal
from .wal import WriteAheadLog

_EARLY = (AppendEntries, InstallSnapshot, TimeoutNow)  # see split_messages


class Batched(Protocol):
    """What ReadyIO needs of a replica (replica.Replica); called in the I/O thread."""

    group: str
    wal: WriteAheadLog
    journal: NodeJournal | None
    closing: bool
    event_loop: asyncio.AbstractEventLoop

    def _handle_ready(self, rd: Ready, late: list[AnyMessage]) -> dict[int, ApplyResult]: ...
    def _persist(self, rd: Ready, batched: bool = False) -> None: ...
    def _apply(self, rd: Ready) -> dict[int, ApplyResult]: ...
    def _send_all(self, messages: list[AnyMessage]) -> None: ...


def split_messages(messages: list[AnyMessage]) -> tuple[list[AnyMessage], list[AnyMessage]]:
    """The messages that may leave before their Ready is persisted, and those that must wait.

    A leader's replication traffic (AppendEntries, InstallSnapshot, TimeoutNow) carries nothing
    the Ready persists: the leader's term and vote are on disk since it campaigned, and it
    counts its own entries towards a quorum only in ``advance``, after the fsync (thesis
    §10.2.1: the leader writes its log in parallel with replicating it). Sending it first saves
    a follower an fsync's wait. Replies (AppendResponse: "I have it") and votes wait for the
    fsync: they promise what is on disk.
    """
    early: list[AnyMessage] = []
    late: list[AnyMessage] = []
    for msg in messages:
        (early if isinstance(msg, _EARLY) else late).append(msg)
    return early, late


class ReadyClosed(Exception):
    """The replica closed before its Ready was handled: nothing of it was persisted."""


@dataclass
class _Item:
    replica: Batched
    rd: Ready
    late: list[AnyMessage]
    future: asyncio.Future[dict[int, ApplyResult]]
    result: dict[int, ApplyResult] | None = None
    error: BaseException | None = None


class ReadyIO:
    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="io")
        self._pending: list[_Item] = []
        self._drain_task: asyncio.Task[None] | None = None
        self.batches = 0  # trips to the thread (metrics: readies / batches = batching)
        self.readies = 0

    def stats(self) -> dict[str, int]:
        return {"batches": self.batches, "readies": self.readies}

    async def handle(
        self, replica: Batched, rd: Ready, late: list[AnyMessage]
    ) -> dict[int, ApplyResult]:
        """Persist ``rd``, send ``late``, apply: what ``replica._handle_ready`` does, batched
        with the other replicas' Readies. Raises what the I/O raised (the replica's loop ends)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[int, ApplyResult]] = loop.create_future()
        self._pending.append(_Item(replica, rd, late, future))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = loop.create_task(self._drain(), name="ready-io")
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await loop.run_in_executor(self.executor, self._run_batch, batch)
            except (asyncio.CancelledError, RuntimeError) as exc:  # the loop or thread ends
                for item in batch + self._pending:
                    item.error = ReadyClosed(repr(exc))
                    _settle(item)
                self._pending = []
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            self.batches += 1
            self.readies += len(batch)
            for item in batch:
                _settle(item)

    def _run_batch(self, batch: list[_Item]) -> None:
        """(I/O thread) Append every Ready's records, one fsync, then send and apply each."""
        appended: list[_Item] = []
        for item in batch:
            replica = item.replica
            try:
                if replica.closing:  # closed meanwhile: its files close after this batch
                    raise ReadyClosed(replica.group)
                if item.rd.snapshot is not None:
                    item.result = replica._handle_ready(item.rd, item.late)
                else:
                    replica._persist(item.rd, batched=True)
                    appended.append(item)
            except Exception as exc:
                item.error = exc
        # The one fsync, for every group's records above; none when no Ready needs it (only
        # commit indexes moved: Ready.must_sync), as replica._persist does without batching.
        synced = [i for i in appended if i.rd.must_sync]
        journal = next((i.replica.journal for i in synced if i.replica.journal), None)
        try:
            if journal is not None:
                journal.sync([(i.replica.group, i.replica.wal) for i in synced])
        except Exception as exc:  # no fsync, no promise: none of them is sent or applied
            for item in appended:
                item.error = exc
            return
        # Every reply and vote the fsync covered leaves now, in one hand-over to the event loop
        # (one wake-up of it, not one per group), before the applies.
        late = [(item.replica, item.late) for item in appended if item.late]
        if late:  # one ReadyIO per node: its replicas share the node's one event loop
            late[0][0].event_loop.call_soon_threadsafe(_send_late, late)
        for item in appended:
            try:
                item.result = item.replica._apply(item.rd)
            except Exception as exc:
                item.error = exc

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _send_late(late: list[tuple[Batched, list[AnyMessage]]]) -> None:
    """(event loop) Send what waited for a batch's fsync, in the batch's order."""
    for replica, messages in late:
        replica._send_all(messages)


def _settle(item: _Item) -> None:
    """Hand the outcome to the replica waiting for it (unless it stopped waiting: cancelled)."""
    if item.future.done():
        return
    if item.error is not None:
        item.future.set_exception(item.error)
    else:
        item.future.set_result(item.result or {})
