"""A Ready that only moved the commit index writes nothing (no WAL record, no journal record):
the commit index a restart starts from may lag, which Raft allows; nothing committed is lost."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cluster.consensus.messages import AnyMessage, Entry, HardState
from cluster.consensus.raft import Role
from cluster.storage.commands import Condition, PutCommand, UpdateCommand, encode_command
from cluster.storage.itemstore import ItemStore
from cluster.storage.journal import NodeJournal
from cluster.storage.layout import items_file, wal_dir
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


async def elect(replicas: dict[str, Replica], avoid: str | None = None) -> Replica:
    for _ in range(3000):
        for r in replicas.values():
            r.tick()
        await asyncio.sleep(0.002)
        leader = next((r for r in replicas.values() if r.raft.role is Role.LEADER), None)
        if leader is not None and leader.node_id != avoid:
            return leader
        if leader is not None:  # the replica to crash must be a follower: hand it over
            leader.transfer_leadership(next(n for n in NODES if n != avoid))
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


# A replica that crashes after applying restarts with its WAL's commit index BELOW its store's
# applied mark: nothing may be applied twice (counters, conditional puts), skipped or served
# wrong, after a process crash (files as written) and after a power loss of the store's
# unsynced commits.
SETTINGS = ReplicaSettings(compact_every=100_000)  # no compaction: the WAL keeps every entry
INCREMENTS = 12


def bump() -> bytes:
    return encode_command(
        UpdateCommand(
            "t", b"counter", b"", {"id": {"S": "counter"}}, "SET v = v + :one", {},
            {":one": {"N": "1"}}, returns="UPDATED_NEW", key_names=("id",),
        )
    )  # fmt: skip


def put_if_absent(key: str, value: str) -> bytes:
    item = {"id": {"S": key}, "v": {"S": value}}
    return encode_command(
        PutCommand("t", key.encode(), b"", item, Condition("attribute_not_exists(id)"))
    )


async def open_group_with_io(
    base: Path,
) -> tuple[dict[str, Replica], dict[str, ReadyIO], list[Callable[[], None]]]:
    loop = asyncio.get_running_loop()
    replicas: dict[str, Replica] = {}
    ios: dict[str, ReadyIO] = {}

    def sender(msg: AnyMessage) -> None:
        if msg.dst in replicas:
            loop.call_soon(replicas[msg.dst].step, msg)

    closers: list[Callable[[], None]] = []
    for n in NODES:
        journal = NodeJournal.open(base / n / "journal")
        io = ReadyIO()
        replicas[n] = await Replica.open(
            n, "g", frozenset(NODES), base / n / "g", SETTINGS, sender,
            journal=journal, ready_io=io,
        )  # fmt: skip
        journal.register("g", replicas[n].wal)
        ios[n] = io
        closers += [io.close, journal.close]
    return replicas, ios, closers


async def close_group(replicas: dict[str, Replica], closers: list[Callable[[], None]]) -> None:
    for r in replicas.values():
        await r.close()
    for close in closers:
        close()


def recovered_commit(node_dir: Path) -> int:
    """The commit index the next start of this node's replica begins with (from its WAL)."""
    journal = NodeJournal.open(node_dir / "journal")
    wal, state = journal.recover("g", wal_dir(node_dir / "g"), SETTINGS.segment_bytes)
    wal.close()
    return state.hard_state.commit


def store_applied(node_dir: Path) -> int:
    store = ItemStore(items_file(node_dir / "g"))
    try:
        return store.applied().index
    finally:
        store.close()


@pytest.mark.parametrize("power_loss", [False, True])
def test_a_replica_restarted_with_its_commit_below_its_applied_mark_applies_nothing_twice(
    tmp_path: Path, power_loss: bool
) -> None:
    victim = "n3"
    image = tmp_path / "image"

    async def first_run() -> int:
        replicas, ios, closers = await open_group_with_io(tmp_path)
        leader = await elect(replicas, avoid=victim)
        start = {"id": {"S": "counter"}, "v": {"N": "0"}}
        await leader.propose(encode_command(PutCommand("t", b"counter", b"", start)), 10)
        for i in range(INCREMENTS):
            result = await leader.propose(bump(), 10)
            assert result.ok and result.new == {"v": {"N": str(i + 1)}}, result
            first = await leader.propose(put_if_absent(f"c{i}", "first"), 10)
            second = await leader.propose(put_if_absent(f"c{i}", "second"), 10)
            assert first.ok and not second.ok, (first, second)
        last = leader.raft.log.last_index()
        await applied_everywhere(replicas, last)
        # The victim's files as a crash (SIGKILL) leaves them: taken while no trip runs (the
        # node's I/O thread lock: every trip, inline or on the thread, holds it).
        with ios[victim].executor.lock:
            shutil.copytree(tmp_path / victim, image)
        await close_group(replicas, closers)
        return last

    last = asyncio.run(first_run())
    shutil.rmtree(tmp_path / victim)
    image.rename(tmp_path / victim)
    if power_loss:  # the store's commits since its last checkpoint were never fsynced
        for suffix in ("-wal", "-shm"):
            Path(str(items_file(tmp_path / victim / "g")) + suffix).unlink(missing_ok=True)
    applied = store_applied(tmp_path / victim)
    commit = recovered_commit(tmp_path / victim)
    if not power_loss:
        assert applied == last, (applied, last)
        # The case under review: the WAL's commit index lags the store's applied mark.
        assert commit < applied, (commit, applied)

    async def second_run() -> None:
        replicas, _, closers = await open_group_with_io(tmp_path)
        r = replicas[victim]
        assert r.raft.applied_index == applied
        assert r.raft.log.commit >= applied  # the store's mark is the snapshot: committed
        leader = await elect(replicas)
        result = await leader.propose(bump(), 10)
        assert result.ok and result.new == {"v": {"N": str(INCREMENTS + 1)}}, result
        await applied_everywhere(replicas, leader.raft.log.last_index())
        digests = set()
        for n, rep in replicas.items():
            counter = rep.store.get("t", b"counter", b"")
            assert counter == {"id": {"S": "counter"}, "v": {"N": str(INCREMENTS + 1)}}, n
            for i in range(INCREMENTS):
                item = rep.store.get("t", f"c{i}".encode(), b"")
                assert item == {"id": {"S": f"c{i}"}, "v": {"S": "first"}}, (n, i, item)
            digests.add((rep.store.applied().index, rep.store.digest()))
        assert len(digests) == 1, digests
        # A consistent read on the leader sees the last write.
        got = await leader.read_consistent(lambda s: s.get("t", b"counter", b""), 5)
        assert got is not None and got["v"] == {"N": str(INCREMENTS + 1)}
        await close_group(replicas, closers)

    asyncio.run(second_run())
