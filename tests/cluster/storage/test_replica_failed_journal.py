"""A replica of a 3-member group whose node's journal failed and was closed (node.stop closes
the journal before the replicas, client connections still open): its late trip must not make
a write count, nor answer it, on one copy that the next start cuts away."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.consensus.messages import AnyMessage, AppendResponse, HardState
from cluster.consensus.raft import Role
from cluster.storage.commands import PutCommand, encode_command
from cluster.storage.journal import NodeJournal
from cluster.storage.layout import wal_dir
from cluster.storage.readyio import ReadyIO
from cluster.storage.replica import Replica, ReplicaSettings
from tests.cluster.storage.test_journal import entries

NODES = ("n1", "n2", "n3")


def put(key: str) -> bytes:
    return encode_command(PutCommand("t", key.encode(), b"", {"v": {"S": key}}))


def test_a_late_leader_trip_after_a_failed_journal_closed_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's AppendEntries for E leave before its own persist (split_messages), one
    follower persists E and acknowledges it. Before the leader's own trip for E runs (its I/O
    thread busy), another group's journal flush on its node fails and the node stops: links
    first, then the journal. The trip then runs: its write of E is refused (the newest
    generation still lists the WAL; the next start would cut a self-fsynced E away), so the
    leader never counts its own copy: E is not committed and not answered. It used to fsync
    E in the WAL, commit it with the follower's ack and answer, and the next start left E on
    one node of three (session 10 safety review)."""
    real_fdatasync = os.fdatasync
    journals = {n: NodeJournal.open(tmp_path / n / "journal") for n in NODES}
    failing: set[str] = set()  # journal directories whose fsync fails from now on

    def fdatasync(fd: int) -> None:
        if any(f"/{n}/journal/" in os.readlink(f"/proc/self/fd/{fd}") for n in failing):
            raise OSError(5, "EIO (injected)")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)

    async def scenario() -> tuple[bool, dict[str, list[int]], int, int]:
        loop = asyncio.get_running_loop()
        replicas: dict[str, Replica] = {}
        cut: set[str] = set()  # nodes whose links are down
        acks: list[AppendResponse] = []

        def sender(src: str) -> Callable[[AnyMessage], None]:
            def send(msg: AnyMessage) -> None:
                if src in cut or msg.dst in cut:
                    return
                if isinstance(msg, AppendResponse) and msg.success:
                    acks.append(msg)
                loop.call_soon(replicas[msg.dst].step, msg)

            return send

        ios = {n: ReadyIO() for n in NODES}
        for n in NODES:
            replicas[n] = await Replica.open(
                n, "g", frozenset(NODES), tmp_path / n / "g", ReplicaSettings(), sender(n),
                journal=journals[n], ready_io=ios[n],
            )  # fmt: skip
            journals[n].register("g", replicas[n].wal)
        leader = None
        for _ in range(2000):  # ticks until a leader commits its first write
            for r in replicas.values():
                r.tick()
            await asyncio.sleep(0.002)
            leader = next((n for n, r in replicas.items() if r.raft.role is Role.LEADER), None)
            if leader is not None:
                break
        assert leader is not None
        await replicas[leader].propose(put("first"), timeout=10)
        follower, other = (n for n in NODES if n != leader)
        cut.add(other)  # E reaches one follower only
        lead = replicas[leader]
        # The leader's I/O thread is busy: its trip for E waits (the review's stall).
        started, go = threading.Event(), threading.Event()
        ios[leader].executor.submit(lambda: started.set() or go.wait(10))
        assert await asyncio.to_thread(started.wait, 5)
        e_index = lead.raft.log.last_index() + 1
        answer = asyncio.ensure_future(lead.propose(put("E"), timeout=10))
        for _ in range(1000):  # the follower persisted E and its ack reached the leader
            if any(a.src == follower and a.match_index >= e_index for a in acks):
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the follower never acknowledged E")
        # Another group's records on the leader's node: their flush fails (EIO).
        xwal, _ = journals[leader].recover("x", tmp_path / leader / "x" / "wal", 4096)
        journals[leader].register("x", xwal)
        failing.add(leader)
        with pytest.raises(OSError):
            journals[leader].save("x", xwal, HardState(1, leader, 0), entries(1, 1))
        # node.stop: links first, then the journal (the replicas after).
        cut.add(leader)
        journals[leader].close()
        go.set()  # the leader's trip for E runs now
        # Answered, or the replica's loop ended on the refused write (no answer then).
        assert lead.task is not None
        await asyncio.wait([answer, lead.task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        acknowledged = answer.done() and not answer.cancelled() and answer.exception() is None
        commit = lead.raft.log.commit
        for n, r in replicas.items():
            try:
                await r.close()
            except OSError:
                assert n == leader  # its loop ended on the refused write
        xwal.close()
        for io in ios.values():
            io.close()
        failing.clear()
        copies: dict[str, list[int]] = {}
        for n in NODES:  # the next start of every node (no power loss needed)
            again = NodeJournal.open(tmp_path / n / "journal")
            wal, state = again.recover("g", wal_dir(tmp_path / n / "g"), 4 * 1024 * 1024)
            copies[n] = [e.index for e in state.entries]
            wal.close()
        answer.cancel()
        return acknowledged, copies, commit, e_index

    acknowledged, copies, commit, e_index = asyncio.run(scenario())
    holders = [n for n, c in copies.items() if e_index in c]
    if acknowledged:  # an acknowledged write is on a majority after the restart
        assert len(holders) >= 2, f"E (index {e_index}) acknowledged, held by {holders} only"
    assert not acknowledged, "refused: the leader's own copy of E never counted"
    assert commit < e_index, "E was not committed by the leader"
