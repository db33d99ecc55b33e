"""StorageNode.stop after failures (b80ea92; from the session 11 safety review, where three breaks
passed test_node_stop.py: no pending proposal failed at close, replicas closed before the
journal, the old _close_files).

1. The closing order is unchanged: peer links, journal, each replica, I/O thread, even when
   parts fail (links raise, journal close raises, a replica's loop died).
2. After a stop that failed (p0's loop died on a journal EIO, journal close raising), a restart
   on the same data keeps every acknowledged write of every group; the unacknowledged one is
   answered OutcomeUnknown (never success) and may or may not be there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.storage.node import StopFailed
from cluster.storage.replica import OutcomeUnknown
from tests.cluster.storage.test_node_stop import (
    GROUPS,
    fail_journal_io,
    make_node,
    put,
    write_each,
)


def test_closing_order_unchanged_when_parts_fail(tmp_path: Path) -> None:
    order: list[str] = []

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        real_links_stop = node.links.stop

        async def links_stop() -> None:
            await real_links_stop()
            order.append("links")
            raise RuntimeError("links (injected)")

        node.links.stop = links_stop  # type: ignore[method-assign]
        journal = node.journal
        assert journal is not None
        real_close = journal.close

        def journal_close() -> None:
            real_close()
            order.append("journal")
            raise OSError(28, "ENOSPC (injected)")

        journal.close = journal_close  # type: ignore[method-assign]
        for group, replica in node.replicas.items():
            real = replica.close

            async def rclose(real=real, group=group) -> None:  # type: ignore[no-untyped-def]
                await real()
                order.append(group)

            replica.close = rclose  # type: ignore[method-assign]
        real_io_close = node.ready_io.close

        def io_close() -> None:
            real_io_close()
            order.append("io")

        node.ready_io.close = io_close  # type: ignore[method-assign]
        with pytest.raises(StopFailed, match="closing peer links failed") as stopped:
            await node.stop()
        assert [p for p, _ in stopped.value.failures] == ["peer links", "journal"]

    asyncio.run(scenario())
    assert order == ["links", "journal", *GROUPS, "io"]


def test_restart_after_a_failed_stop_keeps_every_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = fail_journal_io(monkeypatch, "fdatasync")

    async def first_run() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)  # k0 in p0, k1 in p1, k2 in p2: acknowledged
        p0 = node.replicas["p0"]
        failing[0] = True
        answer = asyncio.ensure_future(p0.propose(put(9), 5.0))
        assert p0.task is not None
        await asyncio.wait([p0.task], timeout=10)
        assert p0.task.done()
        with pytest.raises(StopFailed):
            await node.stop()
        # Failed by close itself (not by propose's own 5 s timeout), as unknown: never success.
        with pytest.raises(OutcomeUnknown):
            await asyncio.wait_for(answer, 1.0)

    async def second_run() -> dict[str, set[bytes]]:
        node = make_node(tmp_path)
        await node.start()
        try:
            await write_each(node)  # each group elected and writing again
            found: dict[str, set[bytes]] = {}
            for i, group in enumerate(GROUPS):
                replica = node.replicas[group]

                def keys(store, i=i):  # type: ignore[no-untyped-def]
                    return {
                        f"k{j}".encode()
                        for j in (i, 9)
                        if store.get("t", f"k{j}".encode(), b"") is not None
                    }

                found[group] = await replica.read_consistent(keys, 5.0)
            return found
        finally:
            await node.stop()

    asyncio.run(first_run())
    failing[0] = False
    found = asyncio.run(second_run())
    for i, group in enumerate(GROUPS):
        assert f"k{i}".encode() in found[group], f"{group}: acknowledged k{i} lost"


def test_a_failing_forget_still_closes_the_wal_and_the_store(tmp_path: Path) -> None:
    """The journal open (a group dropped or rebuilt while the node runs): forget raising
    (the WAL's fsync failed: the journal fails, the group stays registered) still closes the
    WAL and the store, and close raises it. Under node.stop forget never raises (the journal
    is closed first: fd -1), so test_node_stop does not cover this ExitStack."""
    import sqlite3

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        journal = node.journal
        assert journal is not None
        p0 = node.replicas["p0"]

        def forget(group: str) -> None:  # as the real one when the WAL's fsync fails
            journal._failed = OSError(5, "EIO (injected)")
            raise journal._failed

        journal.forget = forget  # type: ignore[method-assign]
        with pytest.raises(OSError, match="EIO"):
            await p0.close()
        assert p0.wal._fd < 0, "WAL left open"
        with pytest.raises(sqlite3.ProgrammingError):
            p0.store._db.execute("SELECT 1")
        del journal.forget  # the real one again, for the stop
        node.replicas.pop("p0")
        await node.stop()  # a failed journal's close skips its last generation: no raise

    asyncio.run(scenario())
