"""A journal whose own close() fails BEFORE it creates its last generation (a WAL's fsync in
close's loop, or os.open of the new generation: ENOSPC, EMFILE) fails the journal (9a69498).
Before, close() kept the WALs registered and closed the fd, so the newest generation on disk
still listed every WAL at its checkpoint position, yet a write after that close fsynced its own
WAL and was acknowledged, and the next start cut the WAL back: the write was gone (acked 4,
recovered 1..3). From the session 11 safety review; a break of it passed the storage suite."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import pytest

from cluster.consensus.messages import HardState
from cluster.storage.journal import NodeJournal
from tests.cluster.storage.test_journal import entries


@pytest.mark.parametrize("failure", ["generation-open", "wal-fsync"])
def test_no_write_is_acknowledged_after_a_close_that_failed_before_its_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    journal = NodeJournal.open(tmp_path / "journal")
    wals = {}
    for g in ("p0", "p1"):
        wals[g], _ = journal.recover(g, tmp_path / g / "wal", 4096)
        journal.register(g, wals[g])  # listed by the open generation: journaled
    for i in range(1, 4):
        for g, wal in wals.items():
            journal.save(g, wal, HardState(1, "n1", i - 1), entries(i, i))
    real_open, real_fsync = os.open, os.fsync

    def enospc_open(path: object, *args: object, **kw: object) -> int:
        if str(path).endswith(".jnl"):
            raise OSError(errno.ENOSPC, "ENOSPC (injected)")
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    def p0_eio(fd: int) -> None:
        if "/p0/wal/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, "EIO (injected)")
        real_fsync(fd)

    with monkeypatch.context() as m:
        if failure == "generation-open":
            m.setattr(os, "open", enospc_open)
        else:
            m.setattr(os, "fsync", p0_eio)
        with pytest.raises(OSError):
            journal.close()  # node.stop: it raises, the replicas are not closed
    acked = {"p0": 3, "p1": 3}
    for g, wal in wals.items():  # a replica's trip after the close
        try:
            journal.save(g, wal, HardState(1, "n1", 3), entries(4, 4))
            acked[g] = 4  # acknowledged (its own fsync): it must survive
        except OSError:
            pass  # refused: fine
        with contextlib.suppress(OSError):
            wal.close()
    again = NodeJournal.open(tmp_path / "journal")  # a plain restart, no power loss
    for g in wals:
        wal, state = again.recover(g, tmp_path / g / "wal", 4096)
        got = [e.index for e in state.entries]
        wal.close()
        assert got[: acked[g]] == list(range(1, acked[g] + 1)), f"{g}: acked {acked[g]}, {got}"
