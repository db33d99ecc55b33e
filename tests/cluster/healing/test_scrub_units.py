"""Scrub's parts without processes: the scrub mark in the state machine, row checksums, the
fresh-connection verification of a store, WAL segment checks, the verdict, and the event log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cluster.consensus.messages import Entry, EntryKind, HardState
from cluster.healing.events import EventCollector, EventKind, EventLog
from cluster.storage.commands import PutCommand, ScrubCommand, decode_command, encode_command
from cluster.storage.itemstore import ItemCorruption, ItemStore, encode_key_value
from cluster.storage.scrub import ReplicaReport, judge, verify_replica, verify_wal_segment
from cluster.storage.statemachine import StateMachine
from cluster.storage.wal import WriteAheadLog


def put(key: str, value: str) -> bytes:
    pk = encode_key_value({"S": key})
    return encode_command(PutCommand("t", pk, b"", {"id": {"S": key}, "v": {"S": value}}))


def test_scrub_mark_verifies_the_store_exactly_at_its_index(tmp_path: Path) -> None:
    store = ItemStore(tmp_path / "s.sqlite")
    seen: list[tuple[int, str, int, str]] = []

    def on_scrub(index: int, scrub_id: str) -> None:
        snap = store.open_snapshot()
        seen.append((index, scrub_id, snap.applied, snap.verify().digest))
        snap.close()

    mark = encode_command(ScrubCommand("s1"))
    assert decode_command(mark) == ScrubCommand("s1")
    entries = [
        Entry(1, 1, EntryKind.NORMAL, put("a", "1")),
        Entry(2, 1, EntryKind.NORMAL, mark),
        Entry(3, 1, EntryKind.NORMAL, put("b", "2")),
    ]
    results = StateMachine(store, on_scrub).apply(entries)
    assert all(r.ok for r in results.values()) and store.applied().index == 3
    before = ItemStore(tmp_path / "before.sqlite")
    StateMachine(before).apply(entries[:1])
    assert seen == [(2, "s1", 2, before.digest())]  # b is not in it: it came after the mark
    # A mark as the last entry of a batch commits nothing twice.
    assert StateMachine(store, on_scrub).apply([Entry(4, 1, EntryKind.NORMAL, mark)])[4].ok
    assert store.applied().index == 4


def test_flipped_row_fails_its_checksum_on_read_and_in_verification(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = ItemStore(path)
    StateMachine(store).apply(
        [Entry(i, 1, EntryKind.NORMAL, put(f"k{i}", f"value-{i:03d}")) for i in range(1, 50)]
    )
    store.checkpoint()
    store.close()
    data = path.read_bytes()
    at = data.find(b"value-007") + 8
    with path.open("r+b") as f:
        f.seek(at)
        f.write(bytes([data[at] ^ 0x01]))
    store = ItemStore(path)
    with pytest.raises(ItemCorruption):
        store.get("t", encode_key_value({"S": "k7"}), b"")
    assert store.get("t", encode_key_value({"S": "k8"}), b"") is not None
    snap = store.open_snapshot()
    result = snap.verify()
    snap.close()
    assert result.items == 49 and any("checksum" in p for p in result.problems)


def test_stores_from_before_row_checksums_still_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE items (tbl TEXT NOT NULL, pk BLOB NOT NULL, sk BLOB NOT NULL, "
        "item TEXT NOT NULL, PRIMARY KEY (tbl, pk, sk)) WITHOUT ROWID;"
        "CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB);"
        "INSERT INTO items VALUES ('t', x'53', x'', '{\"id\":{\"S\":\"\"}}');"
    )
    db.close()
    store = ItemStore(path)
    assert store.get("t", b"S", b"") == {"id": {"S": ""}}  # no checksum: not checked


def test_wal_segment_verification_finds_flipped_records_and_lengths(
    tmp_path: Path,
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path / "wal")
    wal.save(
        HardState(1, "n1", 0), [Entry(i, 1, EntryKind.NORMAL, b"x" * 50) for i in range(1, 20)]
    )
    (path,) = wal.segment_paths()
    wal.close()
    size = path.stat().st_size
    assert verify_wal_segment(path, size) == []
    assert "bad length" in verify_wal_segment(path, size - 3)[0]  # a length past the end
    data = bytearray(path.read_bytes())
    data[size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    problems = verify_wal_segment(path, size)
    assert problems and "checksum" in problems[0]
    report = verify_replica(5, "log", None, [(path, size)])
    assert report.digest is None and report.problems[0].startswith("WAL ")


def report(digest: str | None, *problems: str) -> ReplicaReport:
    return ReplicaReport(10, "full" if digest else "log", digest, 3, tuple(problems))


def test_verdict_majority_reference_problems_and_log_replicas() -> None:
    v = judge({"a": report("x"), "b": report("x"), "c": report("y")}, None)
    assert v.agreed == "x" and set(v.bad) == {"c"} and v.reference_ok is None
    # the reference breaks a tie between two full replicas (a third is a log replica)
    v = judge({"a": report("x"), "b": report("y"), "c": report(None)}, "y")
    assert v.agreed == "y" and set(v.bad) == {"a"} and v.reference_ok is True
    # a checksum problem is bad whatever the digest says
    v = judge({"a": report("x"), "b": report("x", "WAL bad"), "c": report("x")}, "x")
    assert set(v.bad) == {"b"} and v.agreed == "x"
    # replicas agree, the archive does not: the reference is what is flagged
    v = judge({"a": report("x"), "b": report("x"), "c": report("x")}, "z")
    assert not v.bad and v.reference_ok is False
    # no majority: nothing is repaired
    v = judge({"a": report("x"), "b": report("y")}, None)
    assert v.undecided and not v.bad


def test_event_log_keeps_a_timeline_a_file_and_metrics(tmp_path: Path) -> None:
    events = EventLog("sn-a1", tmp_path / "events.jsonl")
    first = events.record(EventKind.NODE_SUSPECTED, node="sn-b1", groups=["t.p0"])
    events.record(EventKind.MEMBER_REMOVED, "t.p0", "sn-b1")
    assert [e.kind for e in events.since(0.0)] == ["node_suspected", "member_removed"]
    assert [e.kind for e in events.since(first.time, "member_removed")] in (
        [EventKind.MEMBER_REMOVED],
        [],  # both in the same clock tick
    )
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 2
    metrics = {m.name: m for m in EventCollector(events).collect()}
    counts = {s.labels["kind"]: s.value for s in metrics["healing_events"].samples}
    assert counts["member_removed"] == 1 and counts["log_replica_added"] == 0
