"""A node that fails while it runs stops by itself (fail-stop; node.py ``_fail_stop``).

Since 9a69498/d3fb8e2 a journal I/O failure fails the node's journal, which then refuses every
write, and a replica's loop that ends on such an error serves its group no more. The process
stayed up all the same (status with frozen roles, a live endpoint for peers, so healing never
replaced it): now ``StorageNode.failed`` is set at once and ``python -m cluster.storage`` stops
the node and exits with one line, status 1 (test_node_fail_stop_process.py runs the process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from cluster.storage import __main__ as main_module
from cluster.storage.node import StopFailed, StorageNode
from cluster.storage.replica import OutcomeUnknown
from tests.cluster.storage.test_node_stop import (
    GROUPS,
    fail_journal_io,
    make_node,
    put,
    write_each,
)

BOUND = 10.0  # an upper bound for a failure to be noticed, not its expected time (~ms)


async def failed(node: StorageNode) -> str:
    await asyncio.wait_for(node.failed.wait(), BOUND)
    assert node.failure is not None
    return str(node.failure)


def test_a_failed_journal_flush_fails_the_node_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = fail_journal_io(monkeypatch, "fdatasync")

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        assert not node.failed.is_set()
        failing[0] = True
        answer = asyncio.ensure_future(node.replicas["p0"].propose(put(9), 5.0))
        said = await failed(node)
        assert said.startswith("node n1: journal failed: OSError: [Errno 5] EIO (injected); ")
        assert "stopped (fail-stop)" in said and "\n" not in said
        with pytest.raises(StopFailed):  # p0's loop died on the EIO: its close says so
            await node.stop()
        with pytest.raises(OutcomeUnknown):  # never acknowledged
            await answer

    asyncio.run(scenario())


def test_a_failed_checkpoint_fails_the_node_though_no_loop_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a group checkpoints the journal; that fsync fails outside any replica's loop
    (nothing was written since): the journal's own failure stops the node."""
    failing = fail_journal_io(monkeypatch, "fsync")

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        failing[0] = True
        with pytest.raises(OSError, match="EIO"):
            await node.create_group("p9", ["n1"])
        said = await failed(node)
        assert said.startswith("node n1: journal failed: OSError: [Errno 5] EIO (injected)")
        assert not any(r.task is not None and r.task.done() for r in node.replicas.values())
        failing[0] = False
        await node.stop()  # the failed journal closes without a last generation: no error

    asyncio.run(scenario())


def test_a_replica_loop_that_dies_fails_the_node(tmp_path: Path) -> None:
    """p1's loop ends on an I/O error of its own (its WAL, not the journal): p1 is never
    served again by this process, so the node stops."""

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        p1 = node.replicas["p1"]

        def persist(*args: object, **kwargs: object) -> None:
            raise OSError(28, "ENOSPC (injected)")

        p1._persist = persist  # type: ignore[method-assign]
        answer = asyncio.ensure_future(p1.propose(put(9), 5.0))
        said = await failed(node)
        assert said.startswith("node n1: replica p1 failed: OSError: [Errno 28] ENOSPC")
        with pytest.raises(StopFailed, match="closing p1 failed"):
            await node.stop()
        with pytest.raises(OutcomeUnknown):
            await answer

    asyncio.run(scenario())


def test_closing_replicas_and_stopping_fail_nothing(tmp_path: Path) -> None:
    """A replica's loop also ends when it closes (dropped, rebuilt, the node stopping)."""

    async def scenario() -> None:
        node = make_node(tmp_path)
        await node.start()
        await write_each(node)
        assert await node.drop_group(GROUPS[-1])
        await node.stop()
        await asyncio.sleep(0)  # the loops' done callbacks have run
        assert not node.failed.is_set() and node.failure is None

    asyncio.run(scenario())


def test_the_process_exits_with_the_failure_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m cluster.storage``: a node that failed is stopped (its StopFailed is expected
    then, each part's failure logged) and the process exits with the failure, status 1."""
    stops: list[str] = []

    class FailingNode(StorageNode):
        async def start(self) -> None:
            self._fail_stop("journal", OSError(5, "EIO"))
            # A serve that waits only for a signal gets one (bounded, not a hung test).
            asyncio.get_running_loop().call_later(BOUND, os.kill, os.getpid(), signal.SIGTERM)

        async def stop(self) -> None:
            stops.append("stop")
            raise StopFailed("n1", [("p0", OSError(5, "EIO"))])

    monkeypatch.setattr(main_module, "StorageNode", FailingNode)
    base = ["--node-id", "n1", "--listen", "127.0.0.1:1", "--admin", "127.0.0.1:2"]
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main_module.main([*base, "--data-dir", str(tmp_path), "--healing", "off"])
    assert time.monotonic() - started < BOUND, "stopped by the guard's SIGTERM, not the failure"
    assert stops == ["stop"]
    assert exited.value.code == (
        "node n1: journal failed: OSError: [Errno 5] EIO; stopped (fail-stop): restart it to "
        "recover"
    )
    assert exited.value.__suppress_context__
