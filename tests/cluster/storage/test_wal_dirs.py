"""A new WAL's directories are durable entries of their parents before anything is appended.

The segments' fsyncs, and wal/'s fsync of their entries, do not make wal/ itself (nor a new
replica directory above it) an entry that survives a power loss: each new directory is fsynced
into its parent when it is made (ext4 happens to commit it with the file's fsync; POSIX does
not promise it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cluster.storage.wal as wal_module
from cluster.storage.wal import WriteAheadLog


def test_each_directory_a_new_wal_makes_is_fsynced_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = wal_module._fsync_dir

    def recording(directory: Path) -> None:
        synced.append(directory)
        real(directory)

    monkeypatch.setattr(wal_module, "_fsync_dir", recording)
    wal_dir = tmp_path / "groups" / "orders.p0" / "wal"
    log, _ = WriteAheadLog.open(wal_dir)
    log.close()
    for made in (tmp_path / "groups", tmp_path / "groups" / "orders.p0", wal_dir):
        assert made.parent in synced, f"{made.name}'s entry in {made.parent} never fsynced"
    synced.clear()
    log, _ = WriteAheadLog.open(wal_dir)  # existing: nothing made, no extra directory fsync
    log.close()
    assert tmp_path / "groups" not in synced
