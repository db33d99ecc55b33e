"""The node's I/O thread: many replicas' Readies in one trip, one fsync, then send and apply."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cluster.consensus.messages import AnyMessage, AppendResponse, Entry, HardState
from cluster.consensus.raft import Ready
from cluster.storage import journal as journal_module
from cluster.storage.commands import ApplyResult
from cluster.storage.journal import NodeJournal
from cluster.storage.readyio import ReadyClosed, ReadyIO
from cluster.storage.wal import WriteAheadLog


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
        self.sent += messages


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
    tmp_path: Path, journal: NodeJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    real = os.fdatasync
    monkeypatch.setattr(journal_module.os, "fdatasync", lambda fd: log.append("fsync") or real(fd))
    io = ReadyIO()

    async def scenario() -> tuple[list[FakeReplica], list[dict[int, ApplyResult]]]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "abcd"]
        log.clear()  # registering checkpointed the journal (fsyncs of its own)
        results = await asyncio.gather(
            *(io.handle(r, ready(1), [reply(r.group)]) for r in replicas)
        )
        await asyncio.sleep(0)  # the replies leave through the loop (call_soon_threadsafe)
        return replicas, results

    try:
        replicas, results = asyncio.run(scenario())
    finally:
        io.close()
    assert results == [{}] * 4  # nothing committed: nothing applied
    assert io.stats() == {"batches": 1, "readies": 4}
    # Every group appended, then the one fsync, then (only then) each applied.
    persist = [f"persist {g}" for g in "abcd"]
    assert log == [*persist, "fsync", *(f"apply {g}" for g in "abcd")]
    assert [len(r.sent) for r in replicas] == [1, 1, 1, 1]
    for r in replicas:
        r.wal.close()


def test_a_failed_fsync_sends_and_applies_nothing(
    tmp_path: Path, journal: NodeJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []

    def broken(fd: int) -> None:
        raise OSError(5, "EIO")

    io = ReadyIO()

    async def scenario() -> tuple[list[FakeReplica], list[object]]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        monkeypatch.setattr(journal_module.os, "fdatasync", broken)
        outcomes = await asyncio.gather(
            *(io.handle(r, ready(1), [reply(r.group)]) for r in replicas), return_exceptions=True
        )
        await asyncio.sleep(0)
        return replicas, list(outcomes)

    try:
        replicas, outcomes = asyncio.run(scenario())
    finally:
        io.close()
    assert all(isinstance(o, OSError) for o in outcomes), outcomes
    assert not any(line.startswith("apply") for line in log)
    assert [r.sent for r in replicas] == [[], []]


def test_a_closing_replica_s_ready_is_not_persisted(tmp_path: Path, journal: NodeJournal) -> None:
    log: list[str] = []
    io = ReadyIO()

    async def scenario() -> FakeReplica:
        closing = FakeReplica("a", open_wal(tmp_path, journal, "a"), journal, log)
        closing.closing = True
        with pytest.raises(ReadyClosed):
            await io.handle(closing, ready(1), [reply("a")])
        return closing

    try:
        closing = asyncio.run(scenario())
    finally:
        io.close()
    assert log == []
    assert closing.sent == []


def test_readies_that_only_move_commit_indexes_cost_no_fsync(
    tmp_path: Path, journal: NodeJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    real = os.fdatasync
    monkeypatch.setattr(journal_module.os, "fdatasync", lambda fd: log.append("fsync") or real(fd))
    io = ReadyIO()
    commit_only = Ready(HardState(1, "n1", 1), None, [], [], [Entry(1, 1, data=b"x")], False)

    async def scenario() -> list[dict[int, ApplyResult]]:
        replicas = [FakeReplica(g, open_wal(tmp_path, journal, g), journal, log) for g in "ab"]
        log.clear()
        return list(await asyncio.gather(*(io.handle(r, commit_only, []) for r in replicas)))

    try:
        results = asyncio.run(scenario())
    finally:
        io.close()
    assert results == [{1: ApplyResult(True)}] * 2
    assert log == ["persist a", "persist b", "apply a", "apply b"]  # no fsync
