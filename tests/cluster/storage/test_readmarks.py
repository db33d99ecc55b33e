"""Read marks: TransactGetItems' proof that items did not change between two reads."""

from __future__ import annotations

from pathlib import Path

from cluster.consensus.messages import Entry, EntryKind
from cluster.storage.commands import (
    BatchWriteCommand,
    Condition,
    DeleteTableCommand,
    PutCommand,
    TxnPrepareCommand,
    TxnResolveCommand,
    UpdateCommand,
    encode_command,
)
from cluster.storage.intents import lock_table
from cluster.storage.itemstore import ItemStore, encode_key_value
from cluster.storage.readmarks import ReadMarks
from cluster.storage.statemachine import StateMachine, WriteLog

A = ("t", encode_key_value({"S": "a"}), b"")
B = ("t", encode_key_value({"S": "b"}), b"")


def test_a_mark_holds_until_its_item_is_written() -> None:
    marks = ReadMarks()
    marks.mark("r1", [A, B], now=1.0)
    marks.mark("r2", [A], now=1.0)
    marks.written([B])
    assert marks.check("r1", [A, B]) == [True, False]
    assert marks.check("r1", [A, B]) == [False, False]  # checked: the reader's marks are gone
    marks.written([(lock_table("t"), A[1], A[2])])  # an intent placed on A counts as a write
    assert marks.check("r2", [A]) == [False]
    assert len(marks) == 0


def test_marks_of_a_reader_that_never_checks_expire_and_a_new_store_clears_them() -> None:
    marks = ReadMarks(ttl=5.0)
    marks.mark("gone", [A], now=1.0)
    marks.mark("r", [B], now=7.0)  # marking sweeps readers older than the ttl
    assert len(marks) == 1 and marks.check("gone", [A]) == [False]
    marks.mark("r", [B], now=7.0)
    marks.dropped_table("t")
    assert marks.check("r", [B]) == [False]
    marks.mark("r", [A], now=8.0)
    marks.clear()
    assert marks.check("r", [A]) == [False]


def test_the_state_machine_reports_every_item_an_apply_wrote(tmp_path: Path) -> None:
    store = ItemStore(tmp_path / "items.sqlite")
    seen: list[WriteLog] = []
    machine = StateMachine(store, on_written=seen.append)
    item = {"id": {"S": "a"}}
    absent = Condition("attribute_not_exists(id)")
    cmds = [
        PutCommand("t", A[1], b"", item),
        PutCommand("t", A[1], b"", item, absent),  # refused: writes nothing
        BatchWriteCommand((PutCommand("t", B[1], b"", {"id": {"S": "b"}}),)),
    ]
    entries = [Entry(i + 1, 1, EntryKind.NORMAL, encode_command(c)) for i, c in enumerate(cmds)]
    results = machine.apply(entries)
    assert [r.ok for r in results.values()] == [True, False, True]
    assert seen[-1].keys == {A, B} and not seen[-1].tables
    bump = UpdateCommand(
        "t", A[1], b"", item, "SET n = :one", {}, {":one": {"N": "1"}}, key_names=("id",)
    )
    prepare = TxnPrepareCommand("x1", {}, 1.0, (bump,), False)
    machine.apply([Entry(4, 1, EntryKind.NORMAL, encode_command(prepare))])
    assert seen[-1].keys == {(lock_table("t"), A[1], A[2])}  # the intent beside A
    resolve = TxnResolveCommand("x1", True, (A,))
    machine.apply([Entry(5, 1, EntryKind.NORMAL, encode_command(resolve))])
    assert seen[-1].keys == {A, (lock_table("t"), A[1], A[2])}
    machine.apply([Entry(6, 1, EntryKind.NORMAL, encode_command(DeleteTableCommand("t")))])
    assert "t" in seen[-1].tables
    count = len(seen)
    machine.apply(
        [Entry(7, 1, EntryKind.NORMAL, encode_command(PutCommand("t", A[1], b"", item, absent)))]
    )
    machine.apply(
        [Entry(8, 1, EntryKind.NORMAL, encode_command(PutCommand("t", A[1], b"", item, absent)))]
    )
    assert len(seen) == count + 1  # the refused second put reported nothing
    store.close()
