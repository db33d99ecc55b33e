"""The node's record of DeleteTable's drops (deleted.log, ``DeletedRecord``): appended and
fsynced per drop off the event loop, read back whole at the start, a torn last line ignored,
corruption elsewhere refused, the older deleted.json migrated, compaction losing no entry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from cluster.storage import deletedrecord
from cluster.storage.deletedrecord import DeletedRecord
from cluster.storage.layout import RecordCorruption, deleted_file, deleted_log
from tests.cluster.storage.test_node_incarnation import GROUP, NODES, OLD, Cluster, in_cluster


def _record(node_dir: Path, entries: dict[str, int]) -> DeletedRecord:
    node_dir.mkdir(parents=True, exist_ok=True)
    record = DeletedRecord.open(node_dir)
    for group, incarnation in entries.items():
        record.add(group, incarnation)
    record.close()
    return record


def test_appended_drops_are_read_back_at_the_start(tmp_path: Path) -> None:
    _record(tmp_path, {"a.p0": 5, "b.p0": 7})
    record = DeletedRecord.open(tmp_path)
    assert record.entries() == {"a.p0": 5, "b.p0": 7}
    assert record.is_deleted("a.p0", 5) and record.is_deleted("a.p0", 4)
    assert not record.is_deleted("a.p0", 6) and not record.is_deleted("c.p0", 0)
    record.add("a.p0", 9)
    record.add("a.p0", 8)  # an older table's late drop: the newest kept, nothing written
    record.close()
    assert DeletedRecord.open(tmp_path).entries() == {"a.p0": 9, "b.p0": 7}
    assert len(deleted_log(tmp_path).read_text().splitlines()) == 3


def test_a_torn_last_line_is_ignored_at_every_point_of_the_append(tmp_path: Path) -> None:
    """A crash during an append leaves a prefix of its line (never acknowledged: the drop
    answers after the fsync of the whole line). Each prefix reads as the entries before it;
    the file is rewritten without it, so the next append does not follow a torn line."""
    _record(tmp_path, {"a.p0": 5})
    good = deleted_log(tmp_path).read_bytes()
    _record(tmp_path / "line", {"b.p0": 7})
    line = deleted_log(tmp_path / "line").read_bytes()
    for cut in range(1, len(line)):
        deleted_log(tmp_path).write_bytes(good + line[:cut])
        record = DeletedRecord.open(tmp_path)
        assert record.entries() == {"a.p0": 5}, line[:cut]
        assert deleted_log(tmp_path).read_bytes() == good
        record.add("c.p0", cut)
        record.close()
        assert DeletedRecord.open(tmp_path).entries() == {"a.p0": 5, "c.p0": cut}
        deleted_log(tmp_path).write_bytes(good)
    # A complete last line that fails its check (zeros where a torn append's first bytes were).
    deleted_log(tmp_path).write_bytes(good + b"\0" * (len(line) - 3) + line[-3:])
    assert DeletedRecord.open(tmp_path).entries() == {"a.p0": 5}


@pytest.mark.parametrize(
    "damage",
    [
        lambda lines: [lines[0], lines[1].replace(b'"a.p0": 5', b'"a.p0": 3'), lines[2]],  # CRC
        lambda lines: [lines[0], b"garbage", lines[2]],
        lambda lines: [lines[0], b"\0" * len(lines[1]), lines[2]],
        lambda lines: [lines[0], lines[1][:-4], lines[2]],  # torn, then appended after
        lambda lines: [lines[0], lines[1], lines[2][:-4] + b"\n" + lines[0][:5]],
    ],
)
def test_corruption_before_the_last_line_stops_the_start_naming_the_file(
    tmp_path: Path, damage: object
) -> None:
    _record(tmp_path, {"z.p0": 1, "a.p0": 5, "b.p0": 7})
    lines = deleted_log(tmp_path).read_bytes().splitlines()
    assert callable(damage)
    deleted_log(tmp_path).write_bytes(b"\n".join(damage(lines)) + b"\n")
    with pytest.raises(RecordCorruption, match=r"deleted\.log: line \d+ is corrupt.*expected"):
        DeletedRecord.open(tmp_path)


def test_the_older_deleted_json_is_merged_and_kept_for_a_rollback(tmp_path: Path) -> None:
    """A data directory of the whole-JSON record: its entries are merged into the log (the
    greater incarnation wins), written durably; deleted.json stays as it was, so that the code
    that wrote it, run again (a rollback), still refuses the tables deleted before the upgrade
    (it was deleted: such a rollback forgot every drop; review15a, session 15)."""
    _record(tmp_path, {"a.p0": 5, "b.p0": 2})  # a node that ran both versions: both exist
    legacy = json.dumps({"b.p0": 7, "c.p0": 1, "a.p0": 4}, indent=1)
    deleted_file(tmp_path).write_text(legacy)
    record = DeletedRecord.open(tmp_path)
    assert record.entries() == {"a.p0": 5, "b.p0": 7, "c.p0": 1}
    assert deleted_file(tmp_path).read_text() == legacy, "the pre-upgrade record is gone"
    record.add("d.p0", 3)
    record.close()
    assert deleted_file(tmp_path).read_text() == legacy  # never written: the log is the record
    log_text = deleted_log(tmp_path).read_text()
    assert DeletedRecord.open(tmp_path).entries() == {"a.p0": 5, "b.p0": 7, "c.p0": 1, "d.p0": 3}
    assert deleted_log(tmp_path).read_text() == log_text  # nothing new merged: not rewritten
    deleted_file(tmp_path).write_text('{"orders.p0": "10"}')  # still refused, named
    with pytest.raises(RecordCorruption, match=r"deleted\.json: not a JSON object of group"):
        DeletedRecord.open(tmp_path)


def test_the_first_append_of_every_opening_makes_the_files_name_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after os.open(O_CREAT) and before the directory's fsync leaves deleted.log
    empty, its name not durable. The next process found it existing ("not created now") and
    appended without fsyncing the directory: its acknowledged drops lived in a file whose name
    a power loss could still take away (review15a, session 15)."""
    deleted_log(tmp_path).write_bytes(b"")  # created by a process that crashed right after
    record = DeletedRecord.open(tmp_path)
    synced: list[bool] = []
    real = deletedrecord.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(deletedrecord, "fsync", spy)
    record.add("a.p0", 5)  # acknowledged once this returns
    record.close()
    assert True in synced, "the directory holding deleted.log was never fsynced"


def test_a_damaged_last_line_that_no_append_could_tear_stops_the_start(tmp_path: Path) -> None:
    """The last line of deleted.log is normally an acknowledged drop (fsynced whole). One of
    its bytes changed (media, a bug) is no torn append (a whole line, no zeros, a wrong CRC):
    it was taken for one, ignored and rewritten away for good, and the deleted table's group
    could be created here again; the same damage on any other line stopped the start. It now
    stops it too (review15a, session 15); a last line with zeros (torn) is still ignored."""
    record = DeletedRecord.open(tmp_path)
    record.add("a.p0", 5)
    record.add("b.p0", 7)
    record.close()
    data = deleted_log(tmp_path).read_bytes()
    deleted_log(tmp_path).write_bytes(data.replace(b'"b.p0": 7', b'"b.p0": 1'))
    with pytest.raises(RecordCorruption, match=r"deleted\.log: line 2 is corrupt"):
        DeletedRecord.open(tmp_path)
    deleted_log(tmp_path).write_bytes(data.replace(b'"b.p0', b"\0\0\0\0\0"))
    assert DeletedRecord.open(tmp_path).entries() == {"a.p0": 5}  # torn: never acknowledged


def test_compaction_keeps_every_groups_newest_incarnation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is rewritten once it has grown to several times the live entries: only lines a
    newer incarnation of the same group superseded go; never an entry."""
    monkeypatch.setattr(deletedrecord, "COMPACT_SLACK", 0)
    monkeypatch.setattr(deletedrecord, "COMPACT_RATIO", 3)
    record = DeletedRecord.open(tmp_path)
    expected: dict[str, int] = {}
    compactions, before = 0, 0
    for incarnation in range(1, 200):
        groups = ["a.p0"] + ["b.p0"] * (incarnation % 3 == 0)
        groups += [f"once{incarnation}.p0"] * (incarnation % 20 == 0)
        for group in groups:
            record.add(group, incarnation)
            expected[group] = incarnation
            lines = len(deleted_log(tmp_path).read_text().splitlines())
            assert lines <= 3 * len(expected), "not compacted"
            compactions += lines < before
            before = lines
            assert DeletedRecord.open(tmp_path).entries() == expected
    assert compactions >= 5 and len(expected) == 11
    record.close()
    assert DeletedRecord.open(tmp_path).entries() == expected


def test_a_failed_append_is_not_recorded_and_the_next_one_rewrites_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append whose fsync fails records nothing (its line may be in the file, whole or
    torn): the next add rewrites the file whole rather than append after it."""
    record = _record(tmp_path, {"a.p0": 5})
    record = DeletedRecord.open(tmp_path)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(deletedrecord, "fsync", failing)
    with pytest.raises(OSError):
        record.add("b.p0", 7)
    assert not record.is_deleted("b.p0", 7)
    deleted_log(tmp_path).write_bytes(deleted_log(tmp_path).read_bytes()[:-5])  # torn by it
    monkeypatch.undo()
    record.add("c.p0", 1)
    record.close()
    assert DeletedRecord.open(tmp_path).entries() == {"a.p0": 5, "c.p0": 1}


def test_a_drop_whose_record_cannot_be_fsynced_fails_and_drops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drop is acknowledged only once its record is fsynced: when the fsync fails, the
    drop fails, the group stays hosted and is not refused; a retry then drops it for good."""

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD, "deleted": True}
        with monkeypatch.context() as patch:
            patch.setattr(deletedrecord, "fsync", failing)
            reply = await b1.handle_request(drop)
        assert reply.get("error") == "OutcomeUnknown", reply
        assert GROUP in b1.replicas and b1.incarnation_of(GROUP) == OLD
        recreate = {"op": "create_group", "group": GROUP, "members": NODES, "incarnation": OLD}
        assert (await b1.handle_request(recreate)) == {"created": False}  # hosted, not refused
        assert (await b1.handle_request(drop)) == {"dropped": True}  # DeleteTable's retry
        await cluster.stop("sn-b1")
        b1 = await cluster.start("sn-b1")
        assert (await b1.handle_request(recreate)).get("error") == "TableDeleted"
        assert GROUP not in b1.replicas

    in_cluster(tmp_path, scenario)


def test_a_drop_cancelled_while_its_record_is_written_still_drops_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's fsync runs in a thread, so a drop can be cancelled there (its connection
    closed: the router gave up). Once begun, the drop ends: cut after the record, the group
    stayed hosted (voting in the deleted table's group) although recorded as deleted."""
    real = deletedrecord.fsync

    def slow(fd: int) -> None:
        time.sleep(0.3)
        real(fd)

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        monkeypatch.setattr(deletedrecord, "fsync", slow)
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD, "deleted": True}
        task = asyncio.create_task(b1.handle_request(drop))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with b1._group_lock:  # the drop, if it goes on, has ended
            assert GROUP not in b1.replicas, "recorded as deleted, yet still hosted"

    in_cluster(tmp_path, scenario)


def test_a_drop_cancelled_twice_holds_the_group_lock_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second cancel while the cancelled caller waits for the drop (``uninterrupted``) no
    longer cancels the drop itself: cut so, it released the group lock while the record's
    write still ran in its thread, and left the group hosted although recorded as deleted
    (review15a, session 15)."""
    real = deletedrecord.fsync

    def slow(fd: int) -> None:
        time.sleep(0.3)
        real(fd)

    async def scenario(cluster: Cluster) -> None:
        b1 = await cluster.start("sn-b1")
        assert await b1.create_group(GROUP, NODES, incarnation=OLD)
        monkeypatch.setattr(deletedrecord, "fsync", slow)
        drop = {"op": "drop_group", "group": GROUP, "incarnation": OLD, "deleted": True}
        task = asyncio.create_task(b1.handle_request(drop))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # the caller is gone: the drop ended
        assert not b1._group_lock.locked(), "the drop still runs, unwatched"
        await asyncio.sleep(0.5)  # (the record's thread, cut loose, ends meanwhile)
        assert b1._deleted.is_deleted(GROUP, OLD)
        assert GROUP not in b1.replicas, "recorded as deleted, yet still hosted"

    in_cluster(tmp_path, scenario)
