"""WriteAheadLog.open fsyncs the active segment AND its directory (80b9032). The PowerLoss model
of test_journal.py rolls files back to their last fsync but keeps every directory entry, so
without the directory fsync every other storage test passed (session 11 safety review). This
model also loses directory entries made since the directory's last fsync.

The case it pins: the process dies while rolling over to a new segment, after the segment's
file was created (and fsynced) but before its directory was fsynced. The next start opens the
WAL and appends into that segment (the active one), fsyncing only the file: a power loss then
drops the segment's directory entry, and with it writes that were acknowledged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.consensus.messages import HardState
from cluster.storage import wal as walmod
from cluster.storage.wal import WriteAheadLog
from tests.cluster.storage.test_journal import PowerLoss
from tests.cluster.storage.test_wal import entries


class DirPowerLoss(PowerLoss):
    """PowerLoss, and a file created in a directory since that directory's last fsync is gone."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.listed: dict[str, set[str]] = {}
        super().__init__(root, monkeypatch)

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        file_wrapper = super()._wrap(real)

        def synced(fd: int) -> None:
            file_wrapper(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isdir(path):
                self.listed[path] = set(os.listdir(path))

        return synced

    def lose(self) -> None:
        super().lose()
        for directory, names in self.listed.items():
            for name in os.listdir(directory):
                p = Path(directory) / name
                if name not in names and p.is_file():
                    p.unlink()


class Died(BaseException):
    """The process stops here."""


def test_a_segment_created_by_a_process_that_died_is_durable_once_open_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    power = DirPowerLoss(tmp_path, monkeypatch)
    wal, _ = WriteAheadLog.open(tmp_path / "wal", 512)
    wal.save(HardState(1, "n1", 0), entries(1, 1))
    armed = [True]
    real_fsync_dir = walmod._fsync_dir

    def dying_fsync_dir(directory: Path) -> None:
        if armed[0]:
            armed[0] = False
            raise Died  # after the new segment's file, before its directory entry is durable
        real_fsync_dir(directory)

    monkeypatch.setattr(walmod, "_fsync_dir", dying_fsync_dir)
    last = 1
    with pytest.raises(Died):
        for i in range(2, 200):  # until a save rolls over to a new segment
            wal.save(HardState(1, "n1", i - 1), entries(i, i))
            last = i
    assert len(list((tmp_path / "wal").iterdir())) == 2
    with monkeypatch.context() as m:  # the process is gone: its files close, nothing fsynced
        m.setattr(os, "fsync", lambda fd: None)
        wal.close()
    again, state = WriteAheadLog.open(tmp_path / "wal", 512)  # the next start
    assert [e.index for e in state.entries][-1] == last
    acked = last + 3
    for i in range(last + 1, acked + 1):  # appended into the new (active) segment, fsynced
        again.save(HardState(1, "n1", i - 1), entries(i, i))
    power.lose()
    again.close()
    _, state = WriteAheadLog.open(tmp_path / "wal", 512)
    assert [e.index for e in state.entries] == list(range(1, acked + 1))
