"""Transaction prepare and resolve in the state machine (the participant side of 2PC).

Each test drives a real state machine on a real SQLite store with encoded commands, as a
group's replicas apply them from the Raft log: intents are stored beside items, block every
other write, and are applied or dropped only by their own attempt's resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.storage.commands import (
    BatchWriteCommand,
    CheckCommand,
    Condition,
    DeleteCommand,
    DeleteTableCommand,
    PutCommand,
    TxnPrepareCommand,
    TxnResolveCommand,
    decode_command,
    encode_command,
)
from cluster.storage.intents import lock_table
from tests.cluster.storage.test_statemachine import A, B, Machine, item, put, update

REC = {"tbl": "t", "group": "t.p0"}
CONFLICT = "TransactionConflictException"


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[Machine]:
    m = Machine(tmp_path / "items.sqlite")
    yield m
    m.store.close()


def prepare(txn: str, *ops: object, read: bool = False) -> TxnPrepareCommand:
    return TxnPrepareCommand(txn, REC, 100.0, tuple(ops), read)  # type: ignore[arg-type]


def resolve(txn: str, commit: bool, *pks: bytes) -> TxnResolveCommand:
    return TxnResolveCommand(txn, commit, tuple(("t", pk, b"") for pk in pks))


def debit(pk: bytes, amount: int) -> object:
    return update(
        pk,
        "SET n = n - :a",
        {":a": {"N": str(amount)}},
        cond=Condition("n >= :a", {}, {":a": {"N": str(amount)}}),
    )


def test_commands_round_trip_through_the_wire_format() -> None:
    cmds = [
        prepare("x", debit(A, 5), CheckCommand("t", B, b"", Condition("attribute_exists(id)"))),
        prepare("r", CheckCommand("t", A, b""), read=True),
        resolve("x", True, A, B),
    ]
    for cmd in cmds:
        assert decode_command(encode_command(cmd)) == cmd  # type: ignore[arg-type]


def test_prepare_locks_and_commit_applies_the_images(sm: Machine) -> None:
    sm.apply(put(A, item(A, n=10)), put(B, item(B, n=0)))
    result = sm.one(prepare("x", debit(A, 4), update(B, "SET n = n + :a", {":a": {"N": "4"}})))
    assert result.ok and [r["Code"] for r in result.new["reasons"]] == ["None", "None"]  # type: ignore[index]
    # Nothing is visible yet; the intents hold the new images.
    assert sm.get(A) == item(A, n=10) and sm.get(B) == item(B, n=0)
    lock = sm.store.get(lock_table("t"), A, b"")
    assert lock is not None and lock["txn"] == "x" and lock["image"] == item(A, n=6)
    # Every other write to a held item is refused, with the lock for the router to resolve.
    refused = sm.one(put(A, item(A, n=99)))
    assert refused.error == CONFLICT and refused.old == lock
    assert sm.one(BatchWriteCommand((put(B, item(B, n=7)),))).error == CONFLICT
    assert sm.one(DeleteCommand("t", B, b"")).error == CONFLICT
    other = sm.one(prepare("y", debit(A, 1)))
    assert not other.ok and other.new["reasons"][0]["Code"] == "TransactionConflict"  # type: ignore[index]
    # Commit: the images become the items, the intents go; a repeat changes nothing.
    assert sm.one(resolve("x", True, A, B)).new == {"held": [True, True]}
    assert sm.get(A) == item(A, n=6) and sm.get(B) == item(B, n=4)
    assert sm.one(resolve("x", True, A, B)).new == {"held": [False, False]}
    assert sm.get(A) == item(A, n=6)
    assert sm.one(put(A, item(A, n=1))).ok


def test_a_failed_condition_prepares_nothing(sm: Machine) -> None:
    sm.apply(put(A, item(A, n=3)), put(B, item(B, n=0)))
    result = sm.one(prepare("x", debit(B, 1), debit(A, 5)))
    assert not result.ok and result.error == "TransactionCanceledException"
    reasons = result.new["reasons"]  # type: ignore[index]
    assert [r["Code"] for r in reasons] == ["ConditionalCheckFailed", "ConditionalCheckFailed"]
    assert reasons[1]["old"] == item(A, n=3)
    assert sm.store.get(lock_table("t"), A, b"") is None
    assert sm.one(put(A, item(A, n=4))).ok


def test_abort_drops_intents_and_only_the_owner_resolves(sm: Machine) -> None:
    sm.apply(put(A, item(A, n=10)))
    assert sm.one(prepare("x", debit(A, 4), DeleteCommand("t", B, b""))).ok
    assert sm.one(prepare("x", debit(A, 4))).ok  # a retried prepare of the same attempt passes
    assert sm.one(resolve("someone-else", True, A, B)).new == {"held": [False, False]}
    assert sm.get(A) == item(A, n=10)
    assert sm.one(resolve("x", False, A, B)).new == {"held": [True, True]}
    assert sm.get(A) == item(A, n=10)
    assert sm.one(put(A, item(A, n=1))).ok and sm.one(put(B, item(B, n=1))).ok


def test_read_locks_are_shared_and_block_writers(sm: Machine) -> None:
    sm.apply(put(A, item(A, n=10)))
    first = sm.one(prepare("r1", CheckCommand("t", A, b""), CheckCommand("t", B, b""), read=True))
    assert first.ok and first.new["items"] == [item(A, n=10), None]  # type: ignore[index]
    assert sm.one(prepare("r2", CheckCommand("t", A, b""), read=True)).ok
    assert sm.one(put(A, item(A, n=11))).error == CONFLICT
    assert not sm.one(prepare("w", debit(A, 1))).ok
    assert sm.one(resolve("r1", False, A, B)).new == {"held": [True, True]}
    assert sm.one(put(A, item(A, n=11))).error == CONFLICT  # r2 still reads it
    assert sm.one(resolve("r2", False, A)).new == {"held": [True]}
    assert sm.one(resolve("r2", False, A)).new == {"held": [False]}  # a lock taken away shows
    assert sm.one(put(A, item(A, n=11))).ok
    # A reader cannot lock an item a writer holds.
    assert sm.one(prepare("w", debit(A, 1))).ok
    assert not sm.one(prepare("r3", CheckCommand("t", A, b""), read=True)).ok


def test_condition_check_locks_without_changing(sm: Machine) -> None:
    sm.apply(put(A, item(A, n=10)))
    check = CheckCommand("t", A, b"", Condition("n = :ten", {}, {":ten": {"N": "10"}}))
    assert sm.one(prepare("x", check, put(B, item(B, n=1)))).ok
    assert sm.one(put(A, item(A, n=0))).error == CONFLICT
    sm.one(resolve("x", True, A, B))
    assert sm.get(A) == item(A, n=10) and sm.get(B) == item(B, n=1)


def test_delete_table_drops_its_intents(sm: Machine) -> None:
    sm.apply(put(A, item(A, n=10)))
    assert sm.one(prepare("x", debit(A, 1))).ok
    assert sm.one(DeleteTableCommand("t")).ok
    assert sm.store.get(lock_table("t"), A, b"") is None
    assert sm.one(put(A, item(A, n=1))).ok


def test_records_are_written_with_the_intents_or_not_at_all(sm: Machine) -> None:
    absent = Condition("attribute_not_exists(id)")
    record = PutCommand("#txn", B, b"", item(B, n=1), absent)
    assert sm.one(TxnPrepareCommand("x", REC, 1.0, (debit(A, 1),), records=(record,))).ok is False
    assert sm.store.get("#txn", B, b"") is None  # the debit failed (no item A): no record
    sm.apply(put(A, item(A, n=10)))
    assert sm.one(TxnPrepareCommand("x", REC, 1.0, (debit(A, 1),), records=(record,))).ok
    assert sm.store.get("#txn", B, b"") == item(B, n=1)
    sm.one(resolve("x", False, A))
    again = sm.one(TxnPrepareCommand("y", REC, 1.0, (debit(A, 1),), records=(record,)))
    assert not again.ok and again.new["records"] == [  # type: ignore[index]
        {"Code": "ConditionalCheckFailed", "old": item(B, n=1)}
    ]
    assert sm.store.get(lock_table("t"), A, b"") is None


def test_a_lock_table_known_empty_costs_no_sql_and_every_lock_still_blocks(
    sm: Machine, tmp_path: Path
) -> None:
    """Writes look up their item's lock without SQL while the store knows the lock table is
    empty (ItemStore.has_rows); a lock written by an apply, or brought by a snapshot restore,
    is seen at once; a resolution that empties the table lets plain writes through again."""
    sm.apply(put(A, item(A, n=10)))  # the lock table is probed once here: empty
    selects: list[str] = []
    sm.store._db.set_trace_callback(lambda sql: selects.append(sql) if "SELECT" in sql else None)
    assert sm.one(put(B, item(B, n=1))).ok
    assert len(selects) == 1  # the old item only (its size is the answer's); no lock lookup
    sm.store._db.set_trace_callback(None)
    # A lock written after the probe blocks, in a later batch and in the same one.
    assert sm.one(prepare("x", debit(A, 1))).ok
    assert sm.one(put(A, item(A, n=2))).error == CONFLICT
    same = sm.apply(prepare("y", debit(B, 1)), put(B, item(B, n=5)))
    assert same[0].ok and same[1].error == CONFLICT
    sm.apply(resolve("x", False, A), resolve("y", False, B))
    assert sm.one(put(A, item(A, n=3))).ok  # the table is empty again (asked, not assumed)
    # A snapshot restored over a store that knew its lock table empty brings a lock along.
    held = Machine(tmp_path / "held.sqlite")
    held.apply(put(A, item(A, n=10)), prepare("z", debit(A, 1)))
    dump = held.store.dump()
    held.store.close()
    assert sm.store.has_rows(lock_table("t")) is False
    sm.store.restore(dump)
    sm.index = sm.store.applied().index
    assert sm.one(put(A, item(A, n=4))).error == CONFLICT
