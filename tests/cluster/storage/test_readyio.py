"""The node's I/O thread: many replicas' Readies in one trip, one fsync, then send and apply."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from cluster.consensus.messages import AnyMessage, AppendResponse, Entry, HardState
from cluster.consensus.raft import Ready
from cluster.storage import journal as journal_module
from cluster.storage.commands import ApplyResult
from cluster.storage.journal import NodeJournal
from cluster.storage.readyio import ReadyClosed, ReadyIO
from cluster.storage.wal import WriteAheadLog

T = TypeVar("T")


class FakeReplica:
    """The part of replica.Replica that ReadyIO drives, recording what happened in what order."""

    def __init__(self, group: str, wal: WriteAheadLog, journal: NodeJournal, log: list[str]):
        self.group, self.wal, self.journal, self.log = group, wal, journal, log
        self.closing = False
        self.event_loop = asyncio.get_running_loop()
        self.sent: list[AnyMessage] = []

    def _handle_ready(self, rd: Ready, late: list[AnyMessage]) -> dict[int, ApplyResult]:
        raise AssertionError("only for Readies with a snapshot")

    def _persist(self, rd: Ready, batched: bool = False) -> None:
        assert batched
        self.log.append(f"persist {self.group}")
        self.journal.save(self.group, self.wal, rd.hard_state, rd.entries, wait=False)

    def _apply(self, rd: Ready) -> dict[int, ApplyResult]:
        self.log.append(f"apply {self.group}")
        return {e.index: ApplyResult(True) for e in rd.committed}

    def _send_all(self, messages: list[AnyMessage]) -> None:
        self.log.append(f"send {self.group}")
        self.sent += messages


class BusyThread:
    """Keeps the I/O thread busy with a job until ``release``: the trips handed out meanwhile
    go to the thread (after the job), not to the event loop."""

    def __init__(self, io: ReadyIO) -> None:
        self.started, self.go = threading.Event(), threading.Event()
        io.executor.submit(self._job)
        assert self.started.wait(5)

    def _job(self) -> None:
        self.started.set()
        self.go.wait(5)

    def release(self) -> None:
        self.go.set()


@pytest.fixture(params=["loop", "thread"])
def where(request: pytest.FixtureRequest) -> str:
    """Where a trip runs: on the event loop (the I/O thread idle) or handed to the thread."""
    return str(request.param)


def start_trips(io: ReadyIO, where: str) -> BusyThread | None:
    return BusyThread(io) if where == "thread" else None


async def finish_trips(busy: BusyThread | None, *trips: Awaitable[T]) -> list[T | BaseException]:
    tasks = [asyncio.ensure_future(t) for t in trips]
    await asyncio.sleep(0.01)
    if busy is not None:
        assert not any(t.done() for t in tasks)  # they wait for the thread's job
        busy.release()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def ready(index: int) -> Ready:
    entry = Entry(index, 1, data=b"x")
    return Ready(HardState(1, "n1", index - 1), None, [entry], [], [])


def reply(group: str) -> AppendResponse:
    return AppendResponse(group, "n2", "n1", 1, True, 1, 0)


@pytest.fixture
def journal(tmp_path: Path) -> NodeJournal:
    return NodeJournal.open(tmp_path / "journal")


def open_wal(tmp_path: Path, journal: NodeJournal, group: str) -> WriteAheadLog:
    wal, _ = journal.recover(group, tmp_path / group / "wal", 4096)
    journal.register(group, wal)
    return wal


def test_many_replicas_readies_take_one_trip_and_one_fsync(
    tmp_path: Path, journal: NodeJournal, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Appends, ONE fsync, then (only then) the replies, then the applies: on the loop or on
    the thread alike. A reply sent before the fsync that covers it fails this test."""
    log: list[str] = []
    real = os.fdatasync
    monkeypatch.setattr(journal_module.os, "fdatasync", lambda fd: log.append("fsync") or real(fd))
    io = ReadyIO()

    async def scenario() -> tuple[list[FakeReplica], list[dict[int, ApplyResult]]]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "abcd"]
        log.clear()  # registering checkpointed the journal (fsyncs of its own)
        busy = start_trips(io, where)
        results = await finish_trips(
            busy, *(io.handle(r, ready(1), [reply(r.group)]) for r in replicas)
        )
        await asyncio.sleep(0)  # from the thread the replies leave through the loop
        return replicas, results  # type: ignore[return-value]

    try:
        replicas, results = asyncio.run(scenario())
    finally:
        io.close()
    assert results == [{}] * 4  # nothing committed: nothing applied
    stats = io.stats()
    assert stats["batches"] == 1 and stats["readies"] == 4
    assert stats["inline"] == (1 if where == "loop" else 0)
    # Every group appended, then the one fsync, then (only then) each reply left, each applied.
    persist = [f"persist {g}" for g in "abcd"]
    after = [f"send {g}" for g in "abcd"] + [f"apply {g}" for g in "abcd"]
    if where == "thread":  # the replies leave on the loop, the applies run on the thread
        assert log[:5] == [*persist, "fsync"]
        assert sorted(log[5:]) == sorted(after)
        assert log.index("send d") > log.index("send c") > log.index("send b") > log.index("send a")
    else:
        assert log == [*persist, "fsync", *after]
    assert [len(r.sent) for r in replicas] == [1, 1, 1, 1]
    for r in replicas:
        r.wal.close()


def test_a_failed_fsync_sends_and_applies_nothing(
    tmp_path: Path, journal: NodeJournal, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    log: list[str] = []

    def broken(fd: int) -> None:
        raise OSError(5, "EIO")

    io = ReadyIO()

    async def scenario() -> tuple[list[FakeReplica], list[object]]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        monkeypatch.setattr(journal_module.os, "fdatasync", broken)
        busy = start_trips(io, where)
        outcomes = await finish_trips(
            busy, *(io.handle(r, ready(1), [reply(r.group)]) for r in replicas)
        )
        await asyncio.sleep(0)
        return replicas, list(outcomes)

    try:
        replicas, outcomes = asyncio.run(scenario())
    finally:
        io.close()
    assert all(isinstance(o, OSError) for o in outcomes), outcomes
    assert not any(line.startswith(("apply", "send")) for line in log)
    assert [r.sent for r in replicas] == [[], []]


def test_a_closing_replica_s_ready_is_not_persisted(
    tmp_path: Path, journal: NodeJournal, where: str
) -> None:
    log: list[str] = []
    io = ReadyIO()

    async def scenario() -> FakeReplica:
        closing = FakeReplica("a", open_wal(tmp_path, journal, "a"), journal, log)
        closing.closing = True
        busy = start_trips(io, where)
        (outcome,) = await finish_trips(busy, io.handle(closing, ready(1), [reply("a")]))
        assert isinstance(outcome, ReadyClosed)
        return closing

    try:
        closing = asyncio.run(scenario())
    finally:
        io.close()
    assert log == []
    assert closing.sent == []


def test_readies_that_only_move_commit_indexes_cost_no_fsync(
    tmp_path: Path, journal: NodeJournal, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    log: list[str] = []
    real = os.fdatasync
    monkeypatch.setattr(journal_module.os, "fdatasync", lambda fd: log.append("fsync") or real(fd))
    io = ReadyIO()
    commit_only = Ready(HardState(1, "n1", 1), None, [], [], [Entry(1, 1, data=b"x")], False)

    async def scenario() -> list[dict[int, ApplyResult]]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        log.clear()
        busy = start_trips(io, where)
        return await finish_trips(busy, *(io.handle(r, commit_only, []) for r in replicas))  # type: ignore[return-value]

    try:
        results = asyncio.run(scenario())
    finally:
        io.close()
    assert results == [{1: ApplyResult(True)}] * 2
    assert log == ["persist a", "persist b", "apply a", "apply b"]  # no fsync


def test_the_loop_runs_a_trip_itself_only_when_the_io_thread_is_idle(
    tmp_path: Path, journal: NodeJournal
) -> None:
    """A trip that needs no fsync runs on the event loop itself (no thread hand-off), but never
    while a job of the I/O thread is queued or running: every store, WAL and the journal stay
    used by one thread at a time, in the order the work was handed out."""
    log: list[str] = []
    io = ReadyIO()
    commit_only = Ready(HardState(1, "n1", 1), None, [], [], [Entry(1, 1, data=b"x")], False)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        replica = FakeReplica("a", open_wal(tmp_path, journal, "a"), journal, log)
        log.clear()
        # Idle thread: the loop applies it itself, in this very call.
        thread = threading.get_ident()
        replica._apply = lambda rd: log.append(f"apply on loop {threading.get_ident() == thread}")  # type: ignore[method-assign,assignment,return-value]
        await io.handle(replica, commit_only, [])
        # A job of the thread still running: the Ready waits behind it, on the thread.
        started, release = threading.Event(), threading.Event()

        def job() -> None:
            started.set()
            release.wait(5)
            log.append("job")

        running = loop.run_in_executor(io.executor, job)
        await asyncio.to_thread(started.wait, 5)
        handled = asyncio.ensure_future(io.handle(replica, commit_only, []))
        await asyncio.sleep(0.05)
        assert not handled.done()  # not run on the loop beside the job
        release.set()
        await running
        await handled
        replica.wal.close()

    try:
        asyncio.run(scenario())
    finally:
        io.close()
    applied = [line for line in log if not line.startswith("persist")]
    assert applied == ["apply on loop True", "job", "apply on loop False"]
    assert io.stats()["inline"] == 1 and io.stats()["batches"] == 2


def test_trips_the_loop_runs_itself_start_no_task(tmp_path: Path, journal: NodeJournal) -> None:
    """The loop runs an idle thread's trips from a plain callback (a task per trip cost
    ~2% of a paced write's instructions); two replicas woken together still share one trip."""
    io = ReadyIO()

    async def scenario() -> None:
        log: list[str] = []
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        for i in (1, 2):
            await asyncio.gather(*(io.handle(r, ready(i), []) for r in replicas))
        assert io._drain_task is None  # never needed: the thread was idle every time
        for r in replicas:
            r.wal.close()

    try:
        asyncio.run(scenario())
    finally:
        io.close()
    assert io.stats()["inline"] == io.stats()["batches"] == 2 and io.stats()["readies"] == 4


def test_a_job_handed_to_the_io_thread_waits_while_the_loop_holds_it(tmp_path: Path) -> None:
    io = ReadyIO()
    try:
        assert io.executor.try_hold()
        done = io.executor.submit(lambda: "ran")
        assert not io.executor.try_hold()  # a job is queued: the loop may not run beside it
        time.sleep(0.05)
        assert not done.done()  # the job waits for the loop to let go
        io.executor.lock.release()
        assert done.result(5) == "ran"
        assert io.executor.try_hold()  # idle again
        io.executor.lock.release()
    finally:
        io.close()


def test_the_loop_never_overtakes_a_job_still_queued_for_the_io_thread() -> None:
    """A job handed out but not started yet (the thread still busy with something else) goes
    first: the loop may not take the files meanwhile, even though nobody holds them."""
    io = ReadyIO()
    started, go = threading.Event(), threading.Event()

    def other() -> None:  # keeps the thread busy without holding the files' lock
        started.set()
        go.wait(5)

    try:
        ThreadPoolExecutor.submit(io.executor, other)
        assert started.wait(5)
        queued = io.executor.submit(lambda: "ran")
        assert not io.executor.lock.locked()
        overtook = io.executor.try_hold()
        if overtook:
            io.executor.lock.release()
        assert not overtook  # the queued job goes first
        go.set()
        assert queued.result(5) == "ran"
        assert io.executor.try_hold()
        io.executor.lock.release()
    finally:
        go.set()
        io.close()


def test_a_job_cancelled_while_queued_does_not_keep_the_loop_off_the_files() -> None:
    """A job cancelled before it ran (a replica's loop cancelled at close while its job waits)
    never runs: it must still count as done, or no trip would run on the loop again."""
    io = ReadyIO()
    started, go = threading.Event(), threading.Event()
    try:
        first = io.executor.submit(lambda: (started.set(), go.wait(5)))
        assert started.wait(5)
        second = io.executor.submit(lambda: None)
        assert second.cancel()  # still queued: it never runs
        go.set()
        first.result(5)
        io.executor.submit(lambda: None).result(5)
        time.sleep(0.01)  # the last job's count drops just after its result is handed back
        assert io.executor.queued == 0
        assert io.executor.try_hold()
        io.executor.lock.release()
    finally:
        go.set()
        io.close()


def test_a_send_that_raises_fails_no_trip(
    tmp_path: Path, journal: NodeJournal, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """As when the thread handed the sends to the loop: the error is logged, the other
    replicas' replies still leave, and every replica's trip completes."""
    log: list[str] = []
    io = ReadyIO()

    async def scenario() -> tuple[list[FakeReplica], list[object]]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]

        def broken(messages: list[AnyMessage]) -> None:
            raise ConnectionError("gone")

        replicas[0]._send_all = broken  # type: ignore[method-assign]
        busy = start_trips(io, where)
        outcomes = await finish_trips(
            busy, *(io.handle(r, ready(1), [reply(r.group)]) for r in replicas)
        )
        await asyncio.sleep(0.01)
        return replicas, outcomes

    try:
        replicas, outcomes = asyncio.run(scenario())
    finally:
        io.close()
    assert outcomes == [{}, {}]
    assert len(replicas[1].sent) == 1
    assert "sending after a trip failed" in caplog.text


class FakeLinks:
    """transport.PeerLinks as ReadyIO uses it: records when it is corked and uncorked."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def cork(self) -> None:
        self.log.append("cork")

    def uncork(self) -> None:
        self.log.append("uncork")


def test_a_trips_replies_are_written_out_before_its_applies(
    tmp_path: Path, journal: NodeJournal, where: str
) -> None:
    """Every replica's replies of a trip are sent with the node's links corked, and uncorked
    (written to the peers' connections) after the fsync and, on the loop, before the first
    apply: a follower's acknowledgement does not wait for it to apply what it was told is
    committed (it waited for every apply of the trip, then for each link's task)."""
    log: list[str] = []
    io = ReadyIO(FakeLinks(log))

    async def scenario() -> None:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        log.clear()
        busy = start_trips(io, where)
        await finish_trips(busy, *(io.handle(r, ready(1), [reply(r.group)]) for r in replicas))
        await asyncio.sleep(0)  # from the thread the replies leave through the loop
        for r in replicas:
            r.wal.close()

    try:
        asyncio.run(scenario())
    finally:
        io.close()
    sends = ["cork", "send a", "send b", "uncork"]
    if where == "loop":
        assert log == ["persist a", "persist b", *sends, "apply a", "apply b"]
    else:  # the replies leave on the loop, the applies run on the thread meanwhile
        assert [e for e in log if not e.startswith(("persist", "apply"))] == sends
        assert log.index("cork") > log.index("persist b")
