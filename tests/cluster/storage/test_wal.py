"""The write-ahead log: round trips, raft overwrite, rotation and release, crash recovery."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.consensus.messages import Entry, EntryKind, HardState, Membership, SnapshotMeta
from cluster.storage.wal import HEADER_SIZE, WalCorruptionError, WriteAheadLog

REPO = Path(__file__).resolve().parents[3]
MEMBERS = Membership(frozenset({"n1", "n2", "n3"}), log_only=frozenset({"n3"}))


def entries(lo: int, hi: int, term: int = 1, size: int = 8) -> list[Entry]:
    """Entries lo..hi inclusive, with data that tells index and term apart."""
    return [
        Entry(i, term, data=f"{i}:{term}:".encode().ljust(size, b"x")) for i in range(lo, hi + 1)
    ]


def only_segment(directory: Path) -> Path:
    (path,) = sorted(directory.glob("*.wal"))
    return path


def save_each(directory: Path, batch: list[Entry]) -> list[int]:
    """Save a hard state, then one entry per call; return each entry record's offset."""
    wal, _ = WriteAheadLog.open(directory)
    wal.save(HardState(term=1, vote="n1"), [])
    offsets = []
    for e in batch:
        offsets.append(only_segment(directory).stat().st_size)
        wal.save(None, [e])
    wal.close()
    return offsets


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_fresh_directory_is_created_empty(tmp_path: Path) -> None:
    wal, state = WriteAheadLog.open(tmp_path / "a" / "wal")
    assert state.hard_state == HardState()
    assert state.snapshot is None
    assert state.entries == []
    assert state.truncated_bytes == 0
    assert [p.name for p in wal.segment_paths()] == ["00000000000000000001.wal"]
    wal.close()


def test_round_trip(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    batch = [
        *entries(1, 3),
        Entry(4, 1, EntryKind.CONFIG, MEMBERS.encode()),
        Entry(5, 2, EntryKind.NOOP),
    ]
    wal.save(HardState(term=2, vote="n1", commit=3), batch)
    wal.save(HardState(term=2, vote="n1", commit=5), [])
    wal.close()
    wal.close()  # idempotent
    wal, state = WriteAheadLog.open(tmp_path)
    assert state.hard_state == HardState(term=2, vote="n1", commit=5)
    assert state.entries == batch
    assert state.truncated_bytes == 0
    wal.close()


def test_overwrite_discards_the_conflicting_suffix(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(HardState(term=1), entries(1, 5, term=1))
    wal.save(HardState(term=3, vote="n2"), entries(3, 4, term=3))
    wal.save(None, entries(5, 5, term=3))
    wal.save(None, entries(5, 5, term=4))  # overwrite the very last entry again
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.entries == entries(1, 2, term=1) + entries(3, 4, term=3) + entries(5, 5, term=4)
    assert state.hard_state == HardState(term=3, vote="n2")


def test_snapshot_mark_drops_covered_entries_and_keeps_the_rest(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(HardState(term=1, commit=6), entries(1, 10))
    meta = SnapshotMeta(index=6, term=1, membership=MEMBERS)
    wal.mark_snapshot(meta)
    wal.save(None, entries(11, 11))
    wal.close()
    wal, state = WriteAheadLog.open(tmp_path)
    assert state.snapshot == meta
    assert state.entries == entries(7, 11)
    # A snapshot past the end of the log (installed from a leader) leaves an empty log.
    wal.mark_snapshot(SnapshotMeta(index=20, term=2, membership=MEMBERS))
    wal.save(None, entries(21, 22, term=2))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.snapshot is not None and state.snapshot.index == 20
    assert state.entries == entries(21, 22, term=2)


def test_save_refuses_entries_that_do_not_continue_the_log(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(None, entries(1, 3))
    with pytest.raises(ValueError, match="gap"):
        wal.save(None, entries(5, 5))
    with pytest.raises(ValueError, match="gap"):
        wal.save(None, [*entries(4, 4), *entries(6, 6)])
    wal.mark_snapshot(SnapshotMeta(index=2, term=1))
    with pytest.raises(ValueError, match="snapshot"):
        wal.save(None, entries(2, 2))
    with pytest.raises(ValueError, match="older"):
        wal.mark_snapshot(SnapshotMeta(index=1, term=1))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)  # nothing of the refused batches was written
    assert state.entries == entries(3, 3)


def test_rotation_and_release_before(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=1024)
    for i in range(1, 201):
        wal.save(HardState(term=1, vote="n1", commit=i - 1), entries(i, i, size=64))
    segments = wal.segment_paths()
    assert len(segments) > 10
    assert all(p.stat().st_size < 1024 + 200 for p in segments)
    with pytest.raises(ValueError, match="snapshot"):
        wal.release_before(100)  # nothing is snapshotted yet
    assert wal.release_before(1) == 0
    meta = SnapshotMeta(index=150, term=1, membership=MEMBERS)
    wal.mark_snapshot(meta)
    released = wal.release_before(151)
    assert released > 0
    assert wal.segment_paths() == segments[released:]
    assert not any(p.exists() for p in segments[:released])
    wal.save(HardState(term=1, vote="n1", commit=200), entries(201, 205, size=64))
    wal.close()
    wal, state = WriteAheadLog.open(tmp_path, segment_bytes=1024)
    assert state.hard_state == HardState(term=1, vote="n1", commit=200)
    assert state.snapshot == meta
    assert state.entries == entries(151, 205, size=64)
    # Everything snapshotted: all but the active segment may go, and no more.
    wal.mark_snapshot(SnapshotMeta(index=205, term=1, membership=MEMBERS))
    wal.release_before(206)
    assert len(wal.segment_paths()) == 1
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.hard_state == HardState(term=1, vote="n1", commit=200)
    assert state.snapshot is not None and state.snapshot.index == 205
    assert state.entries == []


def test_release_keeps_segments_an_overwrite_depends_on(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=512)
    wal.save(None, entries(1, 30, size=64))  # one big segment
    wal.save(None, entries(10, 12, term=2, size=64))  # rotates: overwrites 10.. in segment 2
    wal.save(None, entries(13, 13, term=2, size=64))
    wal.mark_snapshot(SnapshotMeta(index=11, term=2))
    # Segment 1 holds entries up to 30 >= 12: it must stay, or old 12..30 would be lost and
    # the overwrite of 10.. would not be replayed against them.
    assert wal.release_before(12) == 0
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.entries == entries(12, 13, term=2, size=64)


def test_reopen_and_append_many_times(tmp_path: Path) -> None:
    expected: list[Entry] = []
    for round_ in range(5):
        wal, state = WriteAheadLog.open(tmp_path, segment_bytes=300)
        assert state.entries == expected
        assert state.truncated_bytes == 0
        batch = entries(len(expected) + 1, len(expected) + 7, term=round_ + 1)
        wal.save(HardState(term=round_ + 1), batch)
        expected += batch
        wal.close()


@pytest.mark.parametrize("cut", [1, 4, 7, 8, 9, 12, "half", "all-but-one"])
def test_torn_tail_is_truncated_and_appends_continue(tmp_path: Path, cut: int | str) -> None:
    offsets = save_each(tmp_path, entries(1, 5, size=40))
    path = only_segment(tmp_path)
    size = path.stat().st_size
    record = size - offsets[-1]
    keep = {"half": record // 2, "all-but-one": record - 1}.get(str(cut), cut)
    assert isinstance(keep, int)
    os.truncate(path, offsets[-1] + keep)
    wal, state = WriteAheadLog.open(tmp_path)
    assert state.truncated_bytes == keep
    assert state.entries == entries(1, 4, size=40)
    assert state.hard_state == HardState(term=1, vote="n1")
    assert path.stat().st_size == offsets[-1]
    wal.save(None, entries(5, 6))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.truncated_bytes == 0
    assert state.entries == entries(1, 4, size=40) + entries(5, 6)


@pytest.mark.parametrize(
    "damage", ["zeros-appended", "zeroed-record", "zeroed-record-then-zeros", "crc", "payload"]
)
def test_damaged_last_record_is_a_torn_tail(tmp_path: Path, damage: str) -> None:
    offsets = save_each(tmp_path, entries(1, 5))
    path = only_segment(tmp_path)
    size = path.stat().st_size
    if damage == "zeros-appended":  # e.g. a filesystem that extended the file, then crashed
        with path.open("ab") as f:
            f.write(bytes(4096))
        expect_entries, expect_cut = entries(1, 5), 4096
    else:
        if damage.startswith("zeroed-record"):  # the frame made it to disk, the payload did not
            with path.open("r+b") as f:
                f.seek(offsets[-1] + 8)
                f.write(bytes(size - offsets[-1] - 8 + (300 if "then" in damage else 0)))
            size = path.stat().st_size
        else:
            flip(path, offsets[-1] + (5 if damage == "crc" else size - offsets[-1] - 1))
        expect_entries, expect_cut = entries(1, 4), size - offsets[-1]
    wal, state = WriteAheadLog.open(tmp_path)
    assert state.truncated_bytes == expect_cut
    assert state.entries == expect_entries
    wal.save(None, entries(len(expect_entries) + 1, 9))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.entries == entries(1, len(expect_entries)) + entries(len(expect_entries) + 1, 9)


@pytest.mark.parametrize(
    ("record", "where"),
    [(2, "payload"), (2, "crc"), (0, "length-up"), (3, "length-down"), (4, "length-huge")],
)
def test_damage_in_the_middle_of_the_last_segment_is_corruption(
    tmp_path: Path, record: int, where: str
) -> None:
    offsets = save_each(tmp_path, entries(1, 6))
    path = only_segment(tmp_path)
    at = offsets[record]
    if where == "payload":
        flip(path, at + 12)
    elif where == "crc":
        flip(path, at + 4)
    else:  # lengths are little-endian: byte 0 is the low byte, byte 3 the high byte
        data = bytearray(path.read_bytes())
        data[at + (3 if where == "length-huge" else 0)] ^= 0x01 if where == "length-down" else 0x20
        path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptionError) as err:
        WriteAheadLog.open(tmp_path)
    assert err.value.path == path and err.value.offset == at
    assert path.name in str(err.value) and f"offset {at}" in str(err.value)


def test_bad_last_record_followed_by_data_is_corruption(tmp_path: Path) -> None:
    offsets = save_each(tmp_path, entries(1, 3))
    path = only_segment(tmp_path)
    flip(path, offsets[-1] + 5)
    with path.open("ab") as f:
        f.write(b"\x01" * 20)
    with pytest.raises(WalCorruptionError) as err:
        WriteAheadLog.open(tmp_path)
    assert err.value.offset == offsets[-1]


def rotated(tmp_path: Path) -> list[Path]:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=400)
    for i in range(1, 31):
        wal.save(HardState(term=1, commit=i), entries(i, i, size=50))
    paths = wal.segment_paths()
    wal.close()
    assert len(paths) >= 4
    return paths


@pytest.mark.parametrize("damage", ["last-byte", "truncated", "zeros-appended", "header"])
def test_damage_in_an_earlier_segment_is_corruption(tmp_path: Path, damage: str) -> None:
    path = rotated(tmp_path)[1]
    size = path.stat().st_size
    if damage == "last-byte":
        flip(path, size - 1)
    elif damage == "truncated":
        os.truncate(path, size - 3)
    elif damage == "zeros-appended":
        with path.open("ab") as f:
            f.write(bytes(100))
    else:
        flip(path, 2)
    with pytest.raises(WalCorruptionError) as err:
        WriteAheadLog.open(tmp_path)
    assert err.value.path == path
    assert path.name in str(err.value)
    if damage == "header":
        assert err.value.offset == 0
    else:
        assert HEADER_SIZE < err.value.offset <= size


def test_missing_segment_in_the_middle_is_corruption(tmp_path: Path) -> None:
    paths = rotated(tmp_path)
    paths[2].unlink()
    with pytest.raises(WalCorruptionError, match="missing"):
        WriteAheadLog.open(tmp_path)


@pytest.mark.parametrize("length", [0, 3, HEADER_SIZE - 1, "zeros"])
def test_torn_segment_creation_is_removed(tmp_path: Path, length: int | str) -> None:
    paths = rotated(tmp_path)
    torn = paths[-1].with_name(f"{len(paths) + 1:020d}.wal")
    header = paths[0].read_bytes()[:HEADER_SIZE]
    torn.write_bytes(bytes(4096) if length == "zeros" else header[: int(length)])
    wal, state = WriteAheadLog.open(tmp_path, segment_bytes=400)
    assert not torn.exists()
    assert state.truncated_bytes == (4096 if length == "zeros" else length)
    assert state.entries == entries(1, 30, size=50)
    wal.save(None, entries(31, 40, size=50))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.entries == entries(1, 40, size=50)


def test_segment_torn_right_after_its_header_gets_its_state_back(tmp_path: Path) -> None:
    paths = rotated(tmp_path)
    os.truncate(paths[-1], HEADER_SIZE + 5)  # the state prefix was torn
    wal, state = WriteAheadLog.open(tmp_path, segment_bytes=400)
    assert state.truncated_bytes > 0
    last = state.entries[-1].index
    wal.mark_snapshot(SnapshotMeta(index=last, term=1))
    # The rewritten prefix makes the torn segment self-contained: everything older may go.
    closed = len(wal.segment_paths()) - 1
    assert wal.release_before(last + 1) == closed
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.hard_state.commit == last
    assert state.snapshot is not None and state.snapshot.index == last


CHILD = """
import sys
from pathlib import Path
from cluster.consensus.messages import Entry, HardState
from cluster.storage.wal import WriteAheadLog

wal, state = WriteAheadLog.open(Path(sys.argv[1]), segment_bytes=4096)
i = state.entries[-1].index if state.entries else 0
while True:
    i += 1
    batch = [Entry(i, 1, data=b"%d" % i * (20 if i % 5 else 20000))]  # some big, to tear
    wal.save(HardState(term=1, vote="n1", commit=i), batch)
    print(i, flush=True)
"""


def test_sigkill_never_loses_an_acknowledged_entry(tmp_path: Path) -> None:
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acked = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env, cwd=REPO
        )
        assert child.stdout is not None
        first = int(child.stdout.readline())  # the child is up and appending
        assert first == acked + 1
        last = first
        for _ in range(rng.randint(20, 60)):
            last = int(child.stdout.readline())
        time.sleep(rng.uniform(0, 0.02))
        os.kill(child.pid, signal.SIGKILL)
        out = child.stdout.read()  # the rest of what it acknowledged before it died
        child.wait()
        assert child.returncode == -signal.SIGKILL
        acked = max([last, *map(int, out.split())])
        wal, state = WriteAheadLog.open(tmp_path)
        wal.close()
        indexes = [e.index for e in state.entries]
        assert indexes == list(range(1, len(indexes) + 1))
        assert len(indexes) >= acked  # at most one unacknowledged entry beyond
        assert all(
            e.data == b"%d" % e.index * (20 if e.index % 5 else 20000) for e in state.entries
        )
        assert state.hard_state.commit >= acked
        acked = len(indexes)
    assert acked > 60


def test_installed_snapshot_discards_a_diverging_log(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(HardState(1, None, 0), [Entry(1, 1), Entry(2, 1), Entry(3, 1)])
    # The leader's snapshot at index 2 has term 2: our entries 1..3 (term 1) diverged.
    wal.mark_snapshot(SnapshotMeta(2, 2, Membership(frozenset({"a", "b", "c"}))))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert state.snapshot is not None and state.snapshot.index == 2
    assert state.entries == []


def test_compaction_mark_keeps_the_tail(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(None, [Entry(1, 1), Entry(2, 1), Entry(3, 2)])
    wal.mark_snapshot(SnapshotMeta(2, 1, Membership(frozenset({"a"}))))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path)
    assert [e.index for e in state.entries] == [3]


@pytest.mark.parametrize("lag", [0, 3, 7])
def test_release_keeps_every_entry_when_segments_are_smaller_than_a_compaction(
    tmp_path: Path, lag: int
) -> None:
    """Large items: a segment holds a few entries, a compaction covers many, and its mark is
    recorded ``lag`` entries later (when its dump is done). Once old segments are released,
    the kept segments start with marks below their first entry (a late mark, or a new
    segment's copy of the latest one): replay took those for snapshots installed over a
    diverged log and dropped acknowledged entries, on a clean restart too."""
    wal, _ = WriteAheadLog.open(tmp_path, 4096)
    released = 0
    for i in range(1, 61):
        wal.save(HardState(1, "n1", i - 1), entries(i, i, size=1500))
        if i % 10 == 0:  # a compaction every 10 entries
            wal.mark_snapshot(SnapshotMeta(i - lag, 1, MEMBERS))
            released += wal.release_before(i - lag + 1)
    wal.close()
    assert released > 10
    wal, state = WriteAheadLog.open(tmp_path, 4096)
    assert state.snapshot is not None and state.snapshot.index == 60 - lag
    assert [e.index for e in state.entries] == list(range(61 - lag, 61))
    assert state.hard_state == HardState(1, "n1", 59)
    wal.save(None, entries(61, 61))  # and the log goes on
    wal.close()


def test_a_snapshot_installed_over_a_diverged_log_after_a_release_still_drops_it(
    tmp_path: Path,
) -> None:
    """The other side of the rule above: a mark below our first entry keeps the log, so a
    diverged log must still go once the leader's entries after the installed snapshot come."""
    wal, _ = WriteAheadLog.open(tmp_path, 256)
    for i in range(1, 21):
        wal.save(HardState(1, "n1", 12), entries(i, i))
    wal.mark_snapshot(SnapshotMeta(12, 1, MEMBERS))  # compaction on our entry 12
    assert wal.release_before(13) > 0
    for i in range(21, 27):
        wal.save(HardState(2, "n1", 12), entries(i, i, term=2))
    wal.mark_snapshot(SnapshotMeta(22, 3, MEMBERS))  # the leader's: our 22 (term 2) diverged
    wal.save(HardState(3, "n2", 23), entries(23, 24, term=3))
    wal.close()
    _, state = WriteAheadLog.open(tmp_path, 256)
    assert state.snapshot is not None and state.snapshot.index == 22
    assert [(e.index, e.term) for e in state.entries] == [(23, 3), (24, 3)]


def test_what_open_read_is_durable_before_the_caller_builds_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that died (not the machine) leaves appends it never fsynced in the page
    cache: the next open reads them like the rest, and its caller takes them as persisted (a
    Raft core counts those entries as its copy; a follower acknowledges them again without a
    new fsync). So open makes them durable: a power loss afterwards keeps what it returned.
    They used to stay unsynced until the next append's fsync: a power loss took them back."""
    from tests.cluster.storage.test_journal import PowerLoss

    power = PowerLoss(tmp_path, monkeypatch)
    wal, _ = WriteAheadLog.open(tmp_path / "wal")
    wal.save(HardState(1, "n1", 0), entries(1, 3))
    wal.save(HardState(1, "n1", 3), entries(4, 6), sync=False)  # never fsynced: it dies here
    with monkeypatch.context() as m:  # (its file closes without an fsync)
        m.setattr(os, "fsync", lambda fd: None)
        wal.close()
    again, state = WriteAheadLog.open(tmp_path / "wal")  # its next start (no power loss)
    assert [e.index for e in state.entries] == [1, 2, 3, 4, 5, 6]
    power.lose()
    again.close()
    _, state = WriteAheadLog.open(tmp_path / "wal")
    assert [e.index for e in state.entries] == [1, 2, 3, 4, 5, 6]
    assert state.hard_state == HardState(1, "n1", 3)
