"""``NodeJournal.sync`` refuses a WAL that is not journaled its own fsync once the journal failed
(d3fb8e2): that check keeps a trip that straddles a failed close from acknowledging a record the
next start cuts away. From the session 11 safety review: without the check every other storage
test passed.

The interleaving is the product's: node.stop runs ``journal.close`` on a worker thread
(asyncio.to_thread) while the replicas still run, so the event loop's inline trip (readyio.py:
``_persist`` = save(wait=False), then ONE ``journal.sync``) may lose the journal lock to close
in between. close() flushes the queued record R and that fdatasync fails: R is written to the
journal file but not durable; fd -1, the WAL stays listed by the generation on disk. The trip's
sync() then finds R's WAL "not journaled" (fd -1): without the check it fsyncs R in the WAL and
returns (the leader counts its copy, replies leave); after a power loss the next start cuts the
WAL back to its checkpoint position and replays a journal that lacks R: R is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.consensus.messages import HardState
from cluster.storage.journal import NodeJournal
from tests.cluster.storage.test_journal import PowerLoss, entries


@pytest.mark.parametrize("restart", ["crash", "power-loss"])
def test_a_trip_straddling_a_failed_close_acknowledges_nothing_the_next_start_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: str
) -> None:
    power = PowerLoss(tmp_path, monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    wal, _ = journal.recover("p0", tmp_path / "p0" / "wal", 4096)
    journal.register("p0", wal)  # listed by the open generation: journaled
    for i in range(1, 4):
        journal.save("p0", wal, HardState(1, "n1", i - 1), entries(i, i))
    # The trip's _persist: R queued for the trip's one fsync (the journal's queue + the WAL).
    journal.save("p0", wal, HardState(1, "n1", 3), entries(4, 4), wait=False)
    real_fdatasync = os.fdatasync

    def eio(fd: int) -> None:
        raise OSError(5, "EIO (injected)")

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(OSError):
        journal.close()  # node.stop's close (another thread) flushes R: its fsync fails
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    acked = 3
    try:
        journal.sync([("p0", wal)])  # the trip's one fsync
        acked = 4  # the trip goes on: replies leave, the leader counts its copy
    except OSError:
        pass  # refused: nothing of R promised
    wal.close()
    if restart == "power-loss":
        power.lose()
    again = NodeJournal.open(tmp_path / "journal")
    wal2, state = again.recover("p0", tmp_path / "p0" / "wal", 4096)
    got = [e.index for e in state.entries]
    wal2.close()
    assert got[:acked] == list(range(1, acked + 1)), f"acknowledged up to {acked}, got {got}"
