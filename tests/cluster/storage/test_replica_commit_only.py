"""A Ready that only moved the commit index writes nothing (no WAL record, no journal record):
the commit index a restart starts from may lag, which Raft allows; nothing committed is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cluster.consensus.messages import AnyMessage, Entry, HardState
from cluster.consensus.raft import Role
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.journal import NodeJournal
from cluster.storage.readyio import ReadyIO
from cluster.storage.replica import Replica, ReplicaSettings
from cluster.storage.wal import WriteAheadLog

NODES = ("n1", "n2", "n3")


def put(key: str) -> bytes:
    return encode_command(PutCommand("t", key.encode(), b"", {"v": {"S": key}}))


async def open_group(tmp_path: Path) -> tuple[dict[str, Replica], list[Callable[[], None]]]:
    """Three replicas of group "g" on three in-process "nodes" (journal + ReadyIO each)."""
    loop = asyncio.get_running_loop()
    replicas: dict[str, Replica] = {}

    def sender(msg: AnyMessage) -> None:
        loop.call_soon(replicas[msg.dst].step, msg)

    closers: list[Callable[[], None]] = []
    for n in NODES:
        journal = NodeJournal.open(tmp_path / n / "journal")
        io = ReadyIO()
        replicas[n] = await Replica.open(
            n, "g", frozenset(NODES), tmp_path / n / "g", ReplicaSettings(), sender,
            journal=journal, ready_io=io,
        )  # fmt: skip
        journal.register("g", replicas[n].wal)
        closers += [io.close, journal.close]
    return replicas, closers


async def elect(replicas: dict[str, Replica]) -> Replica:
    for _ in range(3000):
        for r in replicas.values():
            r.tick()
        await asyncio.sleep(0.002)
        leader = next((r for r in replicas.values() if r.raft.role is Role.LEADER), None)
        if leader is not None:
            return leader
    raise AssertionError("no leader")


async def applied_everywhere(replicas: dict[str, Replica], index: int) -> None:
    for _ in range(3000):  # followers learn the commit index from the next heartbeat
        if all(r.raft.applied_index >= index for r in replicas.values()):
            return
        for r in replicas.values():
            r.tick()
        await asyncio.sleep(0.002)
    raise AssertionError(f"not applied up to {index} everywhere")


def test_commit_only_readies_write_nothing_and_a_restart_loses_no_committed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[tuple[str, HardState | None, int]] = []  # (wal dir, hard state, entries)
    real_save = WriteAheadLog.save

    def save(
        wal: WriteAheadLog, hard_state: HardState | None, entries: Sequence[Entry], **kw: bool
    ) -> bytes:
        saved.append((str(wal._dir), hard_state, len(entries)))
        return real_save(wal, hard_state, entries, **kw)

    monkeypatch.setattr(WriteAheadLog, "save", save)

    async def first_run() -> int:
        replicas, closers = await open_group(tmp_path)
        leader = await elect(replicas)
        for i in range(20):
            await leader.propose(put(f"k{i}"), timeout=10)
        last = leader.raft.log.last_index()
        await applied_everywhere(replicas, last)
        for r in replicas.values():
            await r.close()
        for close in closers:
            close()
        return last

    last = asyncio.run(first_run())
    # Every record written carries entries, or a term or vote of its own (never the commit
    # index alone): the hard state differs from the WAL's previous one in term or vote.
    previous: dict[str, tuple[int, str | None]] = {}
    commit_only = 0
    for wal, hs, n_entries in saved:
        if hs is not None and not n_entries:
            commit_only += (hs.term, hs.vote) == previous.get(wal)
        if hs is not None:
            previous[wal] = (hs.term, hs.vote)
    assert saved and commit_only == 0, saved

    async def second_run() -> None:
        replicas, closers = await open_group(tmp_path)
        for r in replicas.values():  # every applied write is still there
            assert r.raft.applied_index >= last, (r.node_id, r.raft.applied_index, last)
            for i in range(20):
                assert r.store.get("t", f"k{i}".encode(), b"") == {"v": {"S": f"k{i}"}}
        leader = await elect(replicas)
        await leader.propose(put("after"), timeout=10)
        await applied_everywhere(replicas, leader.raft.log.last_index())
        for r in replicas.values():
            await r.close()
        for close in closers:
            close()

    asyncio.run(second_run())
