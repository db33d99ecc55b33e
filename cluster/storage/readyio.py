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

A trip is run by the event loop itself when the I/O thread is idle (nothing queued or running
there, ``IOThread.try_hold``), else handed to the thread. A hand-off cost more than the work at
small batches: a futex wake and a cross-CPU interrupt to wake the thread (ThreadPoolExecutor.
submit was the largest single item of a storage node's GIL samples), and two wake-ups of the
loop back (the late sends, the result), with the GIL to win back each time. Run on the loop,
the trip's fsync blocks the loop (0.25 ms p50 here) but releases the GIL. A/B in one ticket,
bench/replication.py: CPU per write -10 to -12% in every row.

All of the replicas' file and SQLite work (trips, recovery, reads, dump views, closing) runs on
that one thread, or on the loop while it holds ``IOThread.lock`` with nothing queued: every
store, WAL and the journal are used by one thread at a time, in the order the loop handed the
work out. A Ready carrying a snapshot is always handled alone, on the thread, as before (its
store restore and WAL mark wait for their own fsyncs).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cluster.consensus.messages import AnyMessage, AppendEntries, InstallSnapshot, TimeoutNow
from cluster.consensus.raft import Ready

from .commands import ApplyResult
from .journal import NodeJournal
from .wal import WriteAheadLog

log = logging.getLogger(__name__)
_EARLY = (AppendEntries, InstallSnapshot, TimeoutNow)  # see split_messages
T = TypeVar("T")
_Late = list[tuple["Batched", list[AnyMessage]]]  # a trip's replies and votes, by replica


class IOThread(ThreadPoolExecutor):
    """The node's one I/O thread. Each job runs holding ``lock``; the event loop may do a job's
    work itself while it holds ``lock`` and no job is queued or running (``try_hold``), so the
    files are still used by one thread at a time, and in the order the work was handed out:
    a job submitted meanwhile (from any thread) waits for the loop to let go."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="io")
        self.lock = threading.Lock()  # held by whoever uses the files: a job, or the loop
        self._count = threading.Lock()
        self.queued = 0  # jobs submitted and not finished
        self.submits = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._count:
            self.queued += 1
            self.submits += 1
        try:
            future = super().submit(self._locked, fn, args, kwargs)
        except BaseException:
            self._done()
            raise
        # Done: run (after the lock is let go) or cancelled while queued (it never runs).
        future.add_done_callback(self._done)
        return future

    def _locked(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        with self.lock:
            return fn(*args, **kwargs)

    def _done(self, _: object = None) -> None:
        with self._count:
            self.queued -= 1

    def try_hold(self) -> bool:
        """Take ``lock`` if the thread is idle with nothing queued (the caller releases it)."""
        if self.queued or not self.lock.acquire(blocking=False):
            return False
        if self.queued:  # submitted meanwhile (another thread): it goes first
            self.lock.release()
            return False
        return True


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


class Corkable(Protocol):
    """The node's peer links (transport.PeerLinks), as a trip's replies and votes use them."""

    def cork(self) -> None: ...
    def uncork(self) -> None: ...


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
    def __init__(self, links: Corkable | None = None) -> None:
        self.executor = IOThread()
        self.links = links  # what a trip's late messages leave by, written at once (_send_late)
        self._pending: list[_Item] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._scheduled = False  # a _drain_soon callback is queued on the loop
        self.batches = 0  # trips, on the loop or the thread (readies / batches = batching)
        self.readies = 0
        self.inline = 0  # trips the event loop ran itself (no thread hand-off)
        self.wakes = 0  # the thread's hand-backs to the loop (call_soon_threadsafe)

    def stats(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "readies": self.readies,
            "inline": self.inline,
            "submits": self.executor.submits,
            "wakes": self.wakes,
        }

    async def handle(
        self, replica: Batched, rd: Ready, late: list[AnyMessage]
    ) -> dict[int, ApplyResult]:
        """Persist ``rd``, send ``late``, apply: what ``replica._handle_ready`` does, batched
        with the other replicas' Readies. Raises what the I/O raised (the replica's loop ends)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[int, ApplyResult]] = loop.create_future()
        self._pending.append(_Item(replica, rd, late, future))
        if not self._scheduled and (self._drain_task is None or self._drain_task.done()):
            # Run after the replicas woken with this one queued their Readies (one trip for
            # all): a plain callback that runs the trip itself when the thread is idle (no
            # task per trip), else starts the task that hands the trip to the thread.
            self._scheduled = True
            loop.call_soon(self._drain_soon)
        return await future

    def _drain_soon(self) -> None:
        self._scheduled = False
        while self._pending and not self._any_snapshot() and self.executor.try_hold():
            batch, self._pending = self._pending, []
            self._run_inline(batch)
            self._finish(batch)
        if self._pending and (self._drain_task is None or self._drain_task.done()):
            self._drain_task = asyncio.get_running_loop().create_task(
                self._drain(), name="ready-io"
            )

    def _any_snapshot(self) -> bool:
        return any(item.rd.snapshot is not None for item in self._pending)

    def _run_inline(self, batch: list[_Item]) -> None:
        """(event loop, holding the thread's lock, released here) One trip run by the loop."""
        try:
            self._run_batch(batch, self._send_late)
        except Exception as exc:  # unexpected (sends log their own): nobody may wait
            for item in batch:
                if item.result is None and item.error is None:
                    item.error = exc
        finally:
            self.executor.lock.release()
        self.inline += 1

    def _finish(self, batch: list[_Item]) -> None:
        """The trip is over: count it and hand each replica its outcome."""
        self.batches += 1
        self.readies += len(batch)
        for item in batch:
            _settle(item)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            # A snapshot's restore (a whole store) stays off the loop; the rest runs here when
            # the thread is idle. The loop holds the thread's lock throughout: no job runs.
            snapshot = any(item.rd.snapshot is not None for item in batch)
            if not snapshot and self.executor.try_hold():
                self._run_inline(batch)
            else:
                try:
                    await loop.run_in_executor(
                        self.executor, self._run_batch, batch, self._wake_send
                    )
                except (asyncio.CancelledError, RuntimeError) as exc:  # the loop or thread ends
                    for item in batch + self._pending:
                        item.error = ReadyClosed(repr(exc))
                        _settle(item)
                    self._pending = []
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    return
                except Exception as exc:  # unexpected, as on the loop: nobody may wait
                    for item in batch:
                        if item.result is None and item.error is None:
                            item.error = exc
                self.wakes += 1 + any(item.late and item.error is None for item in batch)
            self._finish(batch)  # either way the trip is over

    def _wake_send(self, late: _Late) -> None:
        late[0][0].event_loop.call_soon_threadsafe(self._send_late, late)

    def _send_late(self, late: _Late) -> None:
        """(event loop) ``_send_late`` with the node's links corked: every replica's replies and
        votes of the trip are written to each peer's connection at once, as one batch, before
        the trip's applies run (on the loop, they would otherwise wait for every apply of the
        trip and then for each link's task: a follower's acknowledgement waited for it to
        apply the entries it was told were committed)."""
        if self.links is None:
            _send_late(late)
            return
        self.links.cork()
        try:
            _send_late(late)
        finally:
            try:
                self.links.uncork()
            except Exception:  # as a send that raises: logged, no trip fails for it
                log.exception("writing a trip's replies out failed")

    def _run_batch(
        self,
        batch: list[_Item],
        send_late: Callable[[_Late], None],
    ) -> None:
        """(I/O thread, or the loop holding its lock) Append every Ready's records, one fsync,
        then ``send_late`` what waited for it, then apply each."""
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
        # commit indexes moved, not Ready.must_sync: replica._persist wrote nothing for them).
        synced = [i for i in appended if i.rd.must_sync]
        journal = next((i.replica.journal for i in synced if i.replica.journal), None)
        try:
            if journal is not None:
                journal.sync([(i.replica.group, i.replica.wal) for i in synced])
        except Exception as exc:  # no fsync, no promise: none of them is sent or applied
            for item in appended:
                item.error = exc
            return
        # Every reply and vote the fsync covered leaves now, before the applies: from the
        # thread in one hand-over to the event loop (one wake-up of it, not one per group).
        late = [(item.replica, item.late) for item in appended if item.late]
        if late:  # one ReadyIO per node: its replicas share the node's one event loop
            send_late(late)
        for item in appended:
            try:
                item.result = item.replica._apply(item.rd)
            except Exception as exc:
                item.error = exc

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _send_late(late: _Late) -> None:
    """(event loop) Send what waited for a batch's fsync, in the batch's order. A send that
    raises is logged, as the loop logged it when this ran as a callback (the thread's trips):
    the other replicas' messages still leave, and no replica's trip fails for it."""
    for replica, messages in late:
        try:
            replica._send_all(messages)
        except Exception:
            log.exception("%s: sending after a trip failed", replica.group)


def _settle(item: _Item) -> None:
    """Hand the outcome to the replica waiting for it (unless it stopped waiting: cancelled)."""
    if item.future.done():
        return
    if isinstance(item.error, StopIteration):  # a Future refuses it (TypeError): wrap it
        error = RuntimeError(f"{item.replica.group}: I/O trip raised {item.error!r}")
        error.__cause__ = item.error
        item.future.set_exception(error)
    elif item.error is not None:
        item.future.set_exception(item.error)
    else:
        item.future.set_result(item.result or {})
