"""ReadyIO._drain settles every Ready it took, whatever happens to the trip (from the session 11
safety review of 35d2c38: the first two breaks below passed every other storage test).

1. A trip on the loop that raises after its fsync (before the applies) fails every item it did
   not finish. Settling them with ``{}`` (success) would make replica._run call raft.advance for
   entries the store never applied (a leader would count its copy, ``applied`` would move).
2. A drain cancelled while its trip waits for the thread settles the Readies that queued up
   meanwhile, not only its batch: otherwise those replicas wait for ever.
3. The thread's trip raising anything else settles its batch the same way as the loop's trip
   (liveness: was unsettled)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.consensus.messages import Entry, HardState
from cluster.consensus.raft import Ready
from cluster.storage import readyio
from cluster.storage.journal import NodeJournal
from cluster.storage.readyio import ReadyClosed, ReadyIO
from tests.cluster.storage.test_readyio import BusyThread, FakeReplica, open_wal, reply


def committing(index: int) -> Ready:
    entry = Entry(index, 1, data=b"x")
    return Ready(HardState(1, "n1", index), None, [entry], [], [entry])


def test_a_loop_trip_that_raises_after_its_fsync_fails_every_unfinished_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = NodeJournal.open(tmp_path / "journal")
    log: list[str] = []
    io = ReadyIO()

    def boom(late: object) -> None:
        raise RuntimeError("send_late raised (injected)")

    monkeypatch.setattr(readyio, "_send_late", boom)

    async def scenario() -> list[object]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(io.handle(r, committing(1), [reply(r.group)]) for r in replicas),
                return_exceptions=True,
            ),
            5,
        )
        for r in replicas:
            r.wal.close()
        return list(outcomes)

    try:
        outcomes = asyncio.run(scenario())
    finally:
        io.close()
    assert io.inline == 1  # (the loop ran the trip)
    assert not any(line.startswith("apply") for line in log)
    # Not {} (success): the replica would advance past entries it never applied.
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes


def test_a_drain_cancelled_mid_trip_settles_the_readies_queued_meanwhile(tmp_path: Path) -> None:
    journal = NodeJournal.open(tmp_path / "journal")
    log: list[str] = []
    io = ReadyIO()

    async def scenario() -> list[object]:
        a, b = (FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab")
        busy = BusyThread(io)
        first = asyncio.ensure_future(io.handle(a, committing(1), []))
        await asyncio.sleep(0.01)  # a's trip waits for the thread
        second = asyncio.ensure_future(io.handle(b, committing(1), []))
        await asyncio.sleep(0.01)  # b waits for the next trip
        assert io._drain_task is not None
        io._drain_task.cancel()
        done, _ = await asyncio.wait([first, second], timeout=5)
        busy.release()
        outcomes = [t.exception() if t in done else "still waiting" for t in (first, second)]
        a.wal.close()
        b.wal.close()
        return outcomes

    try:
        outcomes = asyncio.run(scenario())
    finally:
        io.close()
    assert all(isinstance(o, ReadyClosed) for o in outcomes), outcomes


def test_a_thread_trip_that_raises_settles_every_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = NodeJournal.open(tmp_path / "journal")
    log: list[str] = []
    io = ReadyIO()

    def boom(self: ReadyIO, late: object) -> None:
        raise ValueError("wake_send raised (injected)")

    monkeypatch.setattr(ReadyIO, "_wake_send", boom)

    async def scenario() -> list[object]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        busy = BusyThread(io)
        tasks = [asyncio.ensure_future(io.handle(r, committing(1), [reply(r.group)]))
                 for r in replicas]  # fmt: skip
        await asyncio.sleep(0.01)
        busy.release()
        done, _ = await asyncio.wait(tasks, timeout=3)
        if io._drain_task is not None and io._drain_task.done():  # (consumed: no GC-time log)
            io._drain_task.exception()
        for r in replicas:
            r.wal.close()
        return [t.exception() if t in done else "still waiting" for t in tasks]

    try:
        outcomes = asyncio.run(scenario())
    finally:
        io.close()
    assert not any(line.startswith("apply") for line in log)
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
