"""The WAL archive: checksummed segments and bases, and reference replicas rebuilt from them
alone that match a replica which applied the same log."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cluster.consensus.messages import Entry, EntryKind
from cluster.storage.archive import (
    ArchiveCorruption,
    ArchiveGap,
    DirectoryArchive,
    base_key,
    decode_segment,
    encode_base,
    encode_segment,
    list_group,
    main,
    rebuild_reference,
    segment_key,
)
from cluster.storage.commands import UpdateCommand, encode_command
from cluster.storage.itemstore import ItemStore, encode_key_value
from cluster.storage.statemachine import StateMachine

G = "t.p0"


def bump(key: str, by: int) -> bytes:
    """Not idempotent on purpose: applying an entry twice would show in the digest."""
    pk = encode_key_value({"S": key})
    return encode_command(
        UpdateCommand(
            "t",
            pk,
            b"",
            {"id": {"S": key}},
            "SET n = if_not_exists(n, :zero) + :by",
            {},
            {":zero": {"N": "0"}, ":by": {"N": str(by)}},
            key_names=("id",),
        )
    )


def log(n: int, seed: int = 7) -> list[Entry]:
    rng = random.Random(seed)
    entries = [Entry(1, 1, EntryKind.NOOP)]
    for i in range(2, n + 1):
        entries.append(Entry(i, 1, EntryKind.NORMAL, bump(f"k{rng.randrange(20)}", i)))
    return entries


def applied(tmp: Path, entries: list[Entry]) -> ItemStore:
    store = ItemStore(tmp / "replica.sqlite")
    StateMachine(store).apply(entries)
    return store


def write(archive: DirectoryArchive, entries: list[Entry]) -> None:
    archive.put(segment_key(G, entries[0].index, entries[-1].index), encode_segment(entries))


def test_segments_round_trip_and_any_flipped_byte_is_caught() -> None:
    entries = log(30)
    data = encode_segment(entries)
    assert decode_segment("k", data) == entries
    for offset in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        with pytest.raises(ArchiveCorruption):
            decode_segment("k", bytes(damaged))


def test_reference_rebuilt_from_overlapping_segments_matches_a_replica(tmp_path: Path) -> None:
    entries = log(300)
    archive = DirectoryArchive(tmp_path / "archive")
    write(archive, entries[:120])
    write(archive, entries[100:250])  # a new leader re-archived a few entries
    write(archive, entries[250:])
    replica = applied(tmp_path, entries)
    ref = rebuild_reference(archive, G, tmp_path / "ref")
    assert (ref.index, ref.digest, ref.segments) == (300, replica.digest(), 3)
    # ... and at an earlier index too
    early = rebuild_reference(archive, G, tmp_path / "ref-early", upto=180)
    then = ItemStore(tmp_path / "then.sqlite")
    StateMachine(then).apply(entries[:180])
    assert (early.index, early.digest) == (180, then.digest())
    assert list_group(archive, G).end() == 300


def test_a_base_snapshot_fills_a_gap_and_state_past_its_index_is_not_applied_twice(
    tmp_path: Path,
) -> None:
    entries = log(200)
    archive = DirectoryArchive(tmp_path / "archive")
    write(archive, entries[:50])  # then a leader that had compacted past 50 took over
    ahead = applied(tmp_path, entries[:130])  # compaction waited: the dump is at 130
    archive.put(base_key(G, 120), encode_base(120, 1, ahead.dump()))
    write(archive, entries[120:])
    ref = rebuild_reference(archive, G, tmp_path / "ref")
    full = ItemStore(tmp_path / "full.sqlite")
    StateMachine(full).apply(entries)
    assert (ref.index, ref.digest) == (200, full.digest())
    assert list_group(archive, G).end() == 200


def test_damaged_or_disagreeing_archive_is_reported(tmp_path: Path) -> None:
    entries = log(100)
    archive = DirectoryArchive(tmp_path / "archive")
    write(archive, entries[:60])
    other = [Entry(e.index, e.term, e.kind, bump("x", 1)) for e in entries[50:]]
    write(archive, other)
    with pytest.raises(ArchiveCorruption, match="differs"):
        rebuild_reference(archive, G, tmp_path / "ref")
    archive = DirectoryArchive(tmp_path / "archive2")
    write(archive, entries)
    key = segment_key(G, 1, 100)
    data = bytearray(archive.get(key))
    data[len(data) // 2] ^= 1
    archive.put(key, bytes(data))
    with pytest.raises(ArchiveCorruption, match="checksum"):
        rebuild_reference(archive, G, tmp_path / "ref")
    with pytest.raises(ArchiveGap, match="does not reach"):
        rebuild_reference(DirectoryArchive(tmp_path / "empty"), G, tmp_path / "r", upto=5)


def test_offline_rebuild_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = log(50)
    archive = DirectoryArchive(tmp_path / "archive")
    write(archive, entries)
    out = tmp_path / "ref"
    assert main(["--archive", str(tmp_path / "archive"), "--group", G, "--out", str(out)]) == 0
    assert "applied up to 50" in capsys.readouterr().out
    assert ItemStore(out / "items.sqlite").digest() == applied(tmp_path, entries).digest()


def test_incremental_reference_goes_on_from_the_last_one(tmp_path: Path) -> None:
    entries = log(300)
    archive = DirectoryArchive(tmp_path / "archive")
    write(archive, entries[:150])
    ref = rebuild_reference(archive, G, tmp_path / "ref", upto=120, incremental=True)
    assert ref.index == 120
    write(archive, entries[150:])
    later = rebuild_reference(archive, G, tmp_path / "ref", upto=280, incremental=True)
    scratch = rebuild_reference(archive, G, tmp_path / "scratch", upto=280)
    assert (later.index, later.digest) == (280, scratch.digest)
    assert later.segments == 2  # only what came after index 120 was read
    # asked for an index it has passed: it starts afresh
    back = rebuild_reference(archive, G, tmp_path / "ref", upto=200, incremental=True)
    assert back.digest == rebuild_reference(archive, G, tmp_path / "s2", upto=200).digest
