"""StorageNode.stop closes every part whatever fails: each replica (its WAL and store), the I/O
thread and the journal. A replica whose loop ended on a failed journal, or a failing journal
close, used to abort the stop there: the other parts stayed open and the process exited with
a traceback (session 11)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from cluster.consensus.raft import RaftConfig
from cluster.storage import node as node_module
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.node import NodeConfig, StopFailed, StorageNode
from cluster.storage.replica import OutcomeUnknown

GROUPS = ("p0", "p1", "p2")  # the replicas close in this order: p0 first


def put(i: int) -> bytes:
    return encode_command(PutCommand("t", f"k{i}".encode(), b"", {"v": {"N": str(i)}}))


def make_node(tmp_path: Path) -> StorageNode:
    return StorageNode(
        NodeConfig(
            node_id="n1",
            listen="127.0.0.1:0",
            admin="127.0.0.1:0",
            data_dir=tmp_path / "n1",
            groups={g: ("n1",) for g in GROUPS},
            tick_seconds=0.01,
            raft=RaftConfig(),
        )
    )


def fail_journal_io(monkeypatch: pytest.MonkeyPatch, call: str) -> list[bool]:
    """``os.<call>`` raises EIO on the journal's generations once ``failing[0]`` is True."""
    real = getattr(os, call)
    failing = [False]

    def injected(fd: int) -> None:
        if failing[0] and "/journal/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(5, "EIO (injected)")
        real(fd)

    monkeypatch.setattr(os, call, injected)
    return failing


async def write_each(node: StorageNode) -> None:
    for i, group in enumerate(GROUPS):
        for _ in range(300):  # until the single member has elected itself
            try:
                assert (await node.replica({"group": group}).propose(put(i), 5.0)).ok
                break
            except node_module.NotLeader:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"{group} never elected its one member")


def assert_all_closed(node: StorageNode) -> None:
    for group, replica in node.replicas.items():
        assert replica.wal._fd < 0, f"{group}: WAL left open"
        with pytest.raises(sqlite3.ProgrammingError):  # closed database
            replica.store._db.execute("SELECT 1")
    assert not any(t.is_alive() for t in node.ready_io.executor._threads), "I/O thread runs"


def test_a_replica_whose_loop_died_on_a_failed_journal_does_not_stop_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """p0's trip fails (the journal's fsync: EIO), so its loop ends with that error, which
    its close raises. The stop still closes p1, p2 and the I/O thread, logs p0's failure
    once and raises it (StopFailed) at the end."""
    failing = fail_journal_io(monkeypatch, "fdatasync")

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        assert any(t.is_alive() for t in node.ready_io.executor._threads)
        p0 = node.replicas["p0"]
        failing[0] = True
        answer = asyncio.ensure_future(p0.propose(put(9), 5.0))
        assert p0.task is not None
        await asyncio.wait([p0.task], timeout=10)
        assert p0.task.done() and isinstance(p0.task.exception(), OSError)  # ended on the EIO
        # said when it happened, not only at the stop
        assert "replica p0 stopped on OSError" in caplog.text, caplog.text
        with pytest.raises(StopFailed, match="closing p0 failed: OSError") as stopped:
            await node.stop()
        assert stopped.value.failures[0][0] == "p0"
        assert_all_closed(node)
        with pytest.raises(OutcomeUnknown):  # never acknowledged
            await answer

    caplog.set_level(logging.CRITICAL, logger="cluster.storage.replica")
    with caplog.at_level(logging.ERROR, logger=node_module.__name__):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if r.name == node_module.__name__]
    assert sum("closing p0 failed" in m for m in said) == 1


def test_a_failing_journal_close_still_closes_every_replica(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """journal.close raising (it fails the journal: 9a69498) used to end the stop before any
    replica closed."""

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        journal = node.journal
        assert journal is not None
        real_close = journal.close

        def close() -> None:
            real_close()
            raise OSError(28, "ENOSPC (injected)")

        journal.close = close  # type: ignore[method-assign]
        with pytest.raises(StopFailed, match="closing journal failed: OSError"):
            await node.stop()
        assert_all_closed(node)

    with caplog.at_level(logging.ERROR, logger=node_module.__name__):
        asyncio.run(scenario())
    assert "closing journal failed" in caplog.text
