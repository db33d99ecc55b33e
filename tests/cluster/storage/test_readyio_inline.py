"""The trips the loop runs itself start from a plain loop callback (``ReadyIO._drain_soon``),
not a task (fde3694): ordering of concurrent trips, re-entrancy, exceptions and a waiter's
cancellation, on the loop and the thread. A ``StopIteration`` out of an apply fails its replica
(a Future refuses it as an exception: it used to leave the whole batch waiting for ever)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cluster.consensus.messages import AnyMessage
from cluster.consensus.raft import Ready
from cluster.storage.commands import ApplyResult
from cluster.storage.journal import NodeJournal
from cluster.storage.readyio import ReadyIO
from tests.cluster.storage.test_readyio import BusyThread, FakeReplica, open_wal, ready, reply


@pytest.fixture
def journal(tmp_path: Path) -> NodeJournal:
    return NodeJournal.open(tmp_path / "journal")


def _run(io: ReadyIO, scenario: Any) -> list[dict[str, Any]]:
    """Run ``scenario`` recording what reached the loop's exception handler."""
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
        await asyncio.wait_for(scenario(), 5)

    try:
        asyncio.run(main())
    finally:
        io.close()
    return errors


def test_readies_arriving_while_a_thread_trip_runs_take_the_next_trip_in_order(
    tmp_path: Path, journal: NodeJournal
) -> None:
    io = ReadyIO()
    log: list[str] = []

    async def scenario() -> None:
        rs = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "abc"]
        busy = BusyThread(io)
        first = asyncio.ensure_future(io.handle(rs[0], ready(1), [reply("a")]))
        await asyncio.sleep(0.01)  # a's trip waits for the thread
        assert io._drain_task is not None and not io._drain_task.done()
        later = [asyncio.ensure_future(io.handle(r, ready(1), [reply(r.group)])) for r in rs[1:]]
        await asyncio.sleep(0.01)
        assert not io._scheduled  # the running task takes them: no second drainer
        busy.release()
        await asyncio.gather(first, *later)
        for r in rs:
            r.wal.close()

    assert _run(io, scenario) == []
    # a's trip on the thread (its send handed to the loop: before or after its apply), then
    # b's and c's in ONE later trip, in their order, on the loop.
    assert sorted(log[:3]) == ["apply a", "persist a", "send a"] and log[0] == "persist a"
    assert log[3:] == ["persist b", "persist c", "send b", "send c", "apply b", "apply c"]
    assert io.stats()["batches"] == 2 and io.stats()["inline"] == 1  # the second on the loop


def test_a_ready_handled_from_a_trips_send_goes_in_a_later_whole_trip(
    tmp_path: Path, journal: NodeJournal
) -> None:
    """Re-entrancy: a trip's send that wakes another replica (its Ready handled at once, as a
    local delivery would) does not nest a trip inside the running one."""
    io = ReadyIO()
    log: list[str] = []
    tasks: list[asyncio.Task[dict[int, ApplyResult]]] = []

    class Waking(FakeReplica):
        def _send_all(self, messages: list[AnyMessage]) -> None:
            super()._send_all(messages)
            tasks.append(asyncio.get_running_loop().create_task(io.handle(b, ready(1), [])))

    async def scenario() -> None:
        nonlocal b
        a = Waking("a", open_wal(tmp_path, journal, "a"), journal, log)
        b = FakeReplica("b", open_wal(tmp_path, journal, "b"), journal, log)
        await io.handle(a, ready(1), [reply("a")])
        await asyncio.gather(*tasks)
        a.wal.close()
        b.wal.close()

    b: Any = None
    assert _run(io, scenario) == []
    assert log == ["persist a", "send a", "apply a", "persist b", "apply b"]
    assert io.stats()["batches"] == 2 and io._drain_task is None


def test_an_inline_trips_failed_fsync_fails_every_waiting_replica_and_not_the_loop(
    tmp_path: Path, journal: NodeJournal
) -> None:
    io = ReadyIO()
    log: list[str] = []

    def failing(wals: Any) -> None:
        raise OSError(5, "injected fsync failure")

    async def scenario() -> None:
        rs = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        journal.sync = failing  # type: ignore[method-assign]
        out = await asyncio.gather(
            *(io.handle(r, ready(1), [reply(r.group)]) for r in rs), return_exceptions=True
        )
        assert [type(o) for o in out] == [OSError, OSError]
        assert all(not r.sent for r in rs)  # no fsync, no reply
        # The next Ready still gets a trip (nothing stuck: _scheduled was reset).
        del journal.sync
        assert await io.handle(rs[0], ready(2), []) == {}
        for r in rs:
            r.wal.close()

    assert _run(io, scenario) == []
    assert io.stats()["inline"] == 2


def test_a_waiter_cancelled_before_the_callback_runs_hangs_nobody(
    tmp_path: Path, journal: NodeJournal
) -> None:
    """Stop: the replica's task cancelled while its Ready waits for the queued callback (its
    replica closing); the trip still runs for the others, the closing one is not persisted."""
    io = ReadyIO()
    log: list[str] = []

    async def scenario() -> None:
        rs = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        ta = asyncio.ensure_future(io.handle(rs[0], ready(1), [reply("a")]))
        tb = asyncio.ensure_future(io.handle(rs[1], ready(1), [reply("b")]))
        await asyncio.sleep(0)  # both queued; the callback is queued behind them
        assert io._scheduled
        rs[0].closing = True
        ta.cancel()
        assert (await tb) == {}
        assert ta.cancelled()
        for r in rs:
            r.wal.close()

    assert _run(io, scenario) == []
    assert log == ["persist b", "send b", "apply b"]


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_an_apply_raising_stop_iteration_fails_its_replica(
    tmp_path: Path, journal: NodeJournal, where: str
) -> None:
    """BUG (LOW, pre-existing, in _settle): Future.set_exception refuses a StopIteration
    (TypeError), so the trip ends before settling: that replica and the ones after it in the
    batch wait for ever, where an apply's error should fail its replica (fail-stop)."""
    io = ReadyIO()
    log: list[str] = []

    class Broken(FakeReplica):
        def _apply(self, rd: Ready) -> dict[int, ApplyResult]:
            return {next(iter([])): ApplyResult(True)}  # a bug in an apply: StopIteration

    async def scenario() -> None:
        a = Broken("a", open_wal(tmp_path, journal, "a"), journal, log)
        b = FakeReplica("b", open_wal(tmp_path, journal, "b"), journal, log)
        busy = BusyThread(io) if where == "thread" else None
        trips = [asyncio.ensure_future(io.handle(r, ready(1), [])) for r in (a, b)]
        await asyncio.sleep(0.01)
        if busy is not None:
            busy.release()
        done, _ = await asyncio.wait(trips, timeout=1)
        for t in trips:
            t.cancel()
        a.wal.close()
        b.wal.close()
        assert len(done) == 2, "a replica still waits for its Ready's outcome"
        assert trips[0].exception() is not None and trips[1].result() == {}

    _run(io, scenario)
