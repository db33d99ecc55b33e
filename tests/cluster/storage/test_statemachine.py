"""The replicated state machine on a real SQLite store: commands decided at apply time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from cluster.consensus.messages import Entry, EntryKind
from cluster.storage.commands import (
    ApplyResult,
    BatchWriteCommand,
    Command,
    CommandError,
    Condition,
    DeleteCommand,
    DeleteTableCommand,
    PutCommand,
    TxnPrepareCommand,
    TxnResolveCommand,
    UpdateCommand,
    decode_command,
    encode_command,
)
from cluster.storage.itemstore import ItemStore, encode_key_value
from cluster.storage.statemachine import StateMachine

Item = dict[str, Any]
A = encode_key_value({"S": "a"})
B = encode_key_value({"S": "b"})
CCF = "ConditionalCheckFailedException"


def key(pk: bytes) -> Item:
    return {"id": {"S": pk[1:].decode()}}


def item(pk: bytes, **numbers: int) -> Item:
    return key(pk) | {name: {"N": str(n)} for name, n in numbers.items()}


def put(pk: bytes, it: Item, cond: Condition | None = None, returns: str = "NONE") -> PutCommand:
    return PutCommand("t", pk, b"", it, cond, returns)


def update(
    pk: bytes,
    text: str | None,
    values: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
    cond: Condition | None = None,
    returns: str = "NONE",
) -> UpdateCommand:
    return UpdateCommand(
        "t", pk, b"", key(pk), text, names or {}, values or {}, cond, returns, key_names=("id",)
    )


ABSENT = Condition("attribute_not_exists(id)")
ONE = {":one": {"N": "1"}}


class Machine:
    """A state machine on its own store, fed consecutive log indexes."""

    def __init__(self, path: Path) -> None:
        self.store = ItemStore(path)
        self.machine = StateMachine(self.store)
        self.index = 0

    def apply(self, *cmds: Command | bytes) -> list[ApplyResult]:
        """Apply ``cmds`` as the entries of one batch; their results in order."""
        entries = []
        for cmd in cmds:
            self.index += 1
            data = cmd if isinstance(cmd, bytes) else encode_command(cmd)
            entries.append(Entry(self.index, 1, EntryKind.NORMAL, data))
        results = self.machine.apply(entries)
        return [results[e.index] for e in entries]

    def one(self, cmd: Command | bytes) -> ApplyResult:
        (result,) = self.apply(cmd)
        return result

    def get(self, pk: bytes, tbl: str = "t") -> Item | None:
        return self.store.get(tbl, pk, b"")


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[Machine]:
    m = Machine(tmp_path / "items.sqlite")
    yield m
    m.store.close()


# --- puts and deletes ----------------------------------------------------------------------


def test_put_and_delete_return_only_what_was_asked(sm: Machine) -> None:
    assert sm.one(put(A, item(A, n=1))) == ApplyResult(True)
    assert sm.get(A) == item(A, n=1)
    assert sm.one(put(A, item(A, n=2), returns="ALL_OLD")) == ApplyResult(True, old=item(A, n=1))
    assert sm.one(put(B, item(B), returns="ALL_OLD")) == ApplyResult(True)  # nothing was there
    assert sm.one(DeleteCommand("t", A, b"", returns="ALL_OLD")).old == item(A, n=2)
    assert sm.get(A) is None
    assert sm.one(DeleteCommand("t", A, b"")) == ApplyResult(True)  # deleting nothing is fine
    assert sm.one(DeleteCommand("t", A, b"", returns="ALL_OLD")) == ApplyResult(True)


def test_put_if_absent(sm: Machine) -> None:
    assert sm.one(put(A, item(A, n=1), ABSENT)).ok
    failed = sm.one(put(A, item(A, n=2), ABSENT))
    assert failed == ApplyResult(False, CCF, "The conditional request failed", old=item(A, n=1))
    assert sm.get(A) == item(A, n=1)
    assert sm.store.applied().index == 2  # a failed command still advances the applied index


def test_conditional_delete(sm: Machine) -> None:
    sm.one(put(A, item(A, v=3)))
    stale = Condition("v = :v", values={":v": {"N": "2"}})
    assert sm.one(DeleteCommand("t", A, b"", stale)).error == CCF
    assert sm.get(A) == item(A, v=3)
    fresh = Condition("#v = :v", {"#v": "v"}, {":v": {"N": "3"}})
    assert sm.one(DeleteCommand("t", A, b"", fresh, "ALL_OLD")) == ApplyResult(
        True, old=item(A, v=3)
    )
    assert sm.get(A) is None
    failed = sm.one(DeleteCommand("t", A, b"", Condition("attribute_exists(id)")))
    assert failed.error == CCF and failed.old is None


# --- updates ----------------------------------------------------------------------------------


def test_versioned_update_succeeds_once_per_version(sm: Machine) -> None:
    sm.one(put(A, item(A, version=1, n=10)))

    def bump(expected: int) -> UpdateCommand:
        cond = Condition("#v = :expected", {"#v": "version"}, {":expected": {"N": str(expected)}})
        values = ONE | {":ten": {"N": "10"}}
        return update(A, "SET #v = #v + :one, n = n + :ten", values, {"#v": "version"}, cond)

    assert sm.one(bump(1)).ok
    stale = sm.one(bump(1))
    assert stale.error == CCF and stale.old == item(A, version=2, n=20)
    assert sm.one(bump(2)).ok
    assert sm.get(A) == item(A, version=3, n=30)


def test_update_of_a_missing_item_starts_from_its_key(sm: Machine) -> None:
    created = sm.one(update(A, "SET n = :one", ONE, returns="ALL_NEW"))
    assert created == ApplyResult(True, new=item(A, n=1))
    assert sm.get(A) == item(A, n=1)
    touched = sm.one(update(B, None, returns="ALL_NEW"))  # no UpdateExpression: just the key
    assert touched.new == key(B) and sm.get(B) == key(B)
    missing = sm.one(update(A + b"x", "SET n = n + :one", ONE))  # n does not exist yet
    assert missing.error == "ValidationException"
    assert missing.message and "does not exist" in missing.message
    assert sm.get(A + b"x") is None


def test_removing_from_a_missing_item_creates_nothing(sm: Machine) -> None:
    gone = sm.one(update(A, "REMOVE n, m.x", returns="ALL_NEW"))
    assert gone == ApplyResult(True) and sm.get(A) is None
    drop = {":s": {"SS": ["x"]}}
    assert sm.one(update(A, "DELETE s :s", drop)) == ApplyResult(True) and sm.get(A) is None
    sm.one(update(A, "SET n = :one", ONE))  # an existing item keeps its key after REMOVE
    assert sm.one(update(A, "REMOVE n")).ok and sm.get(A) == key(A)


OLD = item(A, n=1) | {"keep": {"S": "x"}, "gone": {"S": "y"}, "m": {"M": {"a": {"N": "1"}}}}
ADDED = {"S": "z"}
NEW = item(A, n=2) | {"keep": OLD["keep"], "m": {"M": {"a": {"N": "2"}}}, "added": ADDED}


@pytest.mark.parametrize(
    ("returns", "old", "new"),
    [
        ("NONE", None, None),
        ("ALL_OLD", OLD, None),
        # top-level attributes the actions name: m whole, though only m.a changed
        ("UPDATED_OLD", {"n": OLD["n"], "gone": OLD["gone"], "m": OLD["m"]}, None),
        ("ALL_NEW", None, NEW),
        ("UPDATED_NEW", None, {"n": NEW["n"], "m": NEW["m"], "added": ADDED}),
    ],
)
def test_update_return_values(
    sm: Machine, returns: str, old: Item | None, new: Item | None
) -> None:
    sm.one(put(A, OLD))
    text = "SET n = n + :one, added = :z, m.a = m.a + :one REMOVE gone"
    result = sm.one(update(A, text, ONE | {":z": ADDED}, returns=returns))
    assert result == ApplyResult(True, old=old, new=new)
    assert sm.get(A) == NEW


def test_updated_old_of_a_new_item_is_empty(sm: Machine) -> None:
    assert sm.one(update(A, "SET n = :one", ONE, returns="UPDATED_OLD")) == ApplyResult(True)
    assert sm.one(update(A, "REMOVE n", returns="UPDATED_NEW")) == ApplyResult(True)
    assert sm.get(A) == key(A)


def test_update_type_error_is_a_validation_exception_and_writes_nothing(sm: Machine) -> None:
    sm.one(put(A, item(A, n=1)))
    result = sm.one(update(A, "SET n = n + :s", {":s": {"S": "x"}}))
    assert result == ApplyResult(
        False,
        "ValidationException",
        "An operand in the update expression has an incorrect data type",
    )
    assert sm.get(A) == item(A, n=1)
    add = sm.one(update(A, "ADD n :ss", {":ss": {"SS": ["x"]}}))
    assert add.error == "ValidationException" and sm.get(A) == item(A, n=1)


def test_update_past_the_item_size_limit_is_refused(sm: Machine) -> None:
    half = {":half": {"S": "x" * 250_000}}
    assert sm.one(update(A, "SET a = :half", half)).ok
    result = sm.one(update(A, "SET b = :half", half))
    assert result.error == "ValidationException"
    assert result.message == "Item size to update has exceeded the maximum allowed size"
    assert set(sm.get(A) or {}) == {"id", "a"}


def test_expression_errors_at_apply_time_are_validation_exceptions(sm: Machine) -> None:
    sm.one(put(A, item(A, n=1)))
    syntax = sm.one(put(A, item(A), Condition("n <<< :x", values={":x": {"N": "1"}})))
    assert syntax.error == "ValidationException" and "Syntax error" in (syntax.message or "")
    undefined = sm.one(update(A, "SET n = :nope"))
    assert undefined.error == "ValidationException"
    assert sm.get(A) == item(A, n=1)


def test_an_engine_failure_fails_the_command_not_the_batch(sm: Machine) -> None:
    # A malformed stored value (here a list that is not a list) trips the engine on every
    # replica alike; the command fails, the rest of the batch goes on.
    sm.one(put(A, key(A) | {"l": {"L": 5}}))
    bad, good = sm.apply(
        put(A, item(A), Condition("contains(l, :x)", values={":x": {"N": "1"}})),
        put(B, item(B)),
    )
    assert bad.error == "InternalServerError" and good.ok
    assert sm.get(B) == item(B)


# --- batches -----------------------------------------------------------------------------------


def test_later_commands_in_a_batch_see_earlier_writes(sm: Machine) -> None:
    results = sm.apply(
        put(A, item(A, n=1)),
        put(A, item(A, n=9), ABSENT),  # sees the put above: fails
        update(A, "SET n = n + :one", ONE, returns="UPDATED_NEW"),
        DeleteCommand("t", B, b""),
        update(B, "SET n = :one", ONE, cond=ABSENT),  # sees the delete: succeeds
    )
    assert [r.ok for r in results] == [True, False, True, True, True]
    assert results[1].old == item(A, n=1)
    assert results[2].new == {"n": {"N": "2"}}
    assert sm.get(A) == item(A, n=2) and sm.get(B) == item(B, n=1)
    assert sm.store.applied().index == 5


def test_batch_write_applies_its_puts_and_deletes_together(sm: Machine) -> None:
    sm.one(put(B, item(B)))
    batch = BatchWriteCommand((put(A, item(A, n=1)), DeleteCommand("t", B, b"")))
    assert sm.one(batch) == ApplyResult(True)
    assert sm.get(A) == item(A, n=1) and sm.get(B) is None
    follow_up, check = sm.apply(
        BatchWriteCommand((DeleteCommand("t", A, b""), put(B, item(B, n=2)))),
        put(B, item(B), ABSENT),
    )
    assert follow_up.ok and check.error == CCF and check.old == item(B, n=2)


def test_writes_report_the_larger_item_size_for_capacity(sm: Machine) -> None:
    """Each written item is charged by the larger of its size before and after (DynamoDB's
    rule): a small put over a big item costs the big one, a delete the deleted item."""
    big = key(A) | {"blob": {"S": "x" * 3000}}  # id + a + blob + 3000 bytes
    big_size = len("id") + 1 + len("blob") + 3000
    assert sm.one(put(A, big)).sizes == (big_size,)
    assert sm.one(put(A, item(A, n=1))).sizes == (big_size,)  # replaced: the old one counts
    assert sm.one(update(A, "SET n = n + :one", ONE)).sizes == (len("id") + 1 + 1 + 2,)
    sm.one(put(A, big))
    assert sm.one(DeleteCommand("t", A, b"")).sizes == (big_size,)
    assert sm.one(DeleteCommand("t", A, b"")).sizes == (0,)  # nothing there
    assert sm.one(put(B, item(B), ABSENT)).ok
    assert sm.one(put(B, item(B), ABSENT)).sizes == ()  # refused: wrote nothing
    sm.one(put(A, big))
    batch = BatchWriteCommand((put(A, item(A)), DeleteCommand("t", B, b""), put(B, big)))
    batch_sizes = sm.one(batch).sizes  # in order; B's put sees the batch's own delete
    assert batch_sizes == (big_size, len("id") + 1, big_size)
    wire = ApplyResult.from_wire(sm.one(put(A, big)).to_wire())
    assert wire.sizes == (big_size,)


def test_delete_table_removes_only_that_table(sm: Machine) -> None:
    sm.apply(put(A, item(A)), put(B, item(B)), PutCommand("other", A, b"", item(A)))
    assert sm.one(DeleteTableCommand("t")) == ApplyResult(True)
    assert sm.store.count("t") == 0 and sm.get(A, "other") == item(A)


def test_delete_table_within_a_batch(sm: Machine) -> None:
    sm.apply(put(A, item(A)), put(B, item(B)))
    results = sm.apply(
        put(A, item(A, n=1)),
        DeleteTableCommand("t"),  # hides stored items and earlier writes of the batch
        put(A, item(A, n=2), ABSENT),
        update(B, "SET n = :one", ONE, cond=ABSENT),
        DeleteCommand("t", A + b"x", b"", Condition("attribute_exists(id)")),
    )
    assert [r.ok for r in results] == [True, True, True, True, False]
    assert sm.get(A) == item(A, n=2) and sm.get(B) == item(B, n=1)
    assert sm.store.count("t") == 2


def test_noop_and_config_entries_only_advance_the_applied_index(sm: Machine) -> None:
    entries = [
        Entry(1, 1, EntryKind.NOOP),
        Entry(2, 1, EntryKind.CONFIG, b"members"),
        Entry(3, 1, EntryKind.NORMAL, encode_command(put(A, item(A)))),
    ]
    assert set(sm.machine.apply(entries)) == {3}
    assert sm.store.applied().membership == b"members" and sm.store.applied().index == 3


# --- the wire format ---------------------------------------------------------------------------

VERSIONED = Condition("#v = :v", {"#v": "version"}, {":v": {"N": "1"}})
COMMANDS: list[Command] = [
    put(A, item(A, n=1)),
    put(A, item(A) | {"b": {"B": "AAE="}, "l": {"L": [{"NULL": True}]}}, ABSENT, "ALL_OLD"),
    DeleteCommand("t", A, b"sk"),
    DeleteCommand("t", A, b"", VERSIONED, "ALL_OLD"),
    update(A, None),
    update(A, "SET n = n + :one", ONE, {"#x": "x"}, VERSIONED, "UPDATED_NEW"),
    UpdateCommand("t", A, B, key(A) | {"s": {"N": "2"}}, "REMOVE x", {}, {}, key_names=("s", "id")),
    BatchWriteCommand((put(A, item(A)), DeleteCommand("t", B, b""), put(B, {}))),
    DeleteTableCommand("t"),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_commands_round_trip(cmd: Command) -> None:
    assert decode_command(encode_command(cmd)) == cmd


def test_a_plain_put_keeps_its_original_encoding() -> None:
    original = {"op": "put", "tbl": "t", "pk": A, "sk": b"", "item": item(A)}
    assert msgpack.unpackb(encode_command(put(A, item(A)))) == original


def test_apply_result_round_trips_on_the_wire() -> None:
    result = ApplyResult(False, CCF, "The conditional request failed", item(A), None)
    assert ApplyResult.from_wire(msgpack.unpackb(msgpack.packb(result.to_wire()))) == result
    assert ApplyResult.from_wire({"ok": True}) == ApplyResult(True)


def body(**fields: Any) -> bytes:
    return bytes(msgpack.packb(fields, use_bin_type=True))


PUT = {"op": "put", "tbl": "t", "pk": A, "sk": b"", "item": item(A)}
UNDECODABLE = {
    "garbage": b"\xc1\xc1",
    "not a map": bytes(msgpack.packb([1, 2])),
    "unknown op": body(op="frobnicate"),
    "unknown field": body(**PUT, ttl=5),
    "missing field": body(op="delete", tbl="t", pk=A),
    "pk not bytes": body(**PUT | {"pk": "a"}),
    "tbl not a string": body(**PUT | {"tbl": 1}),
    "attribute name not a string": body(**PUT | {"item": {1: {"S": "a"}}}),
    "sk an int": body(**PUT | {"sk": 3}),
    "item not a map": body(**PUT | {"item": [1]}),
    "attribute not a map": body(**PUT | {"item": {"id": "a"}}),
    "bad returns": body(**PUT, returns="ALL_NEW"),
    "condition without expr": body(**PUT, cond={"names": {"#a": "a"}}),
    "condition with extra": body(**PUT, cond={"expr": "a = b", "x": 1}),
    "names not strings": body(**PUT, cond={"expr": "#a = b", "names": {"#a": 1}}),
    "update key_names mismatch": body(
        op="update", tbl="t", pk=A, sk=b"", key=key(A), key_names=["other"]
    ),
    "update without key_names": body(op="update", tbl="t", pk=A, sk=b"", key=key(A)),
    "batch holding an update": body(
        op="batch",
        writes=[{"op": "update", "tbl": "t", "pk": A, "sk": b"", "key": {}, "key_names": []}],
    ),
    "batch holding a conditional put": body(op="batch", writes=[PUT | {"cond": {"expr": "a"}}]),
    "nested batch": body(op="batch", writes=[{"op": "batch", "writes": [PUT]}]),
    "empty batch": body(op="batch", writes=[]),
}


@pytest.mark.parametrize("data", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_decoding_is_strict(data: bytes) -> None:
    with pytest.raises(CommandError):
        decode_command(data)


def test_an_undecodable_entry_fails_alone(sm: Machine) -> None:
    bad, good = sm.apply(UNDECODABLE["unknown field"], put(A, item(A)))
    assert bad.ok is False and bad.error == "InternalServerError"
    assert good.ok and sm.get(A) == item(A)


def test_commands_check_their_own_fields() -> None:
    with pytest.raises(ValueError, match="returns"):
        PutCommand("t", A, b"", item(A), returns="ALL_NEW")
    with pytest.raises(ValueError, match="returns"):
        UpdateCommand("t", A, b"", key(A), None, {}, {}, returns="ALL", key_names=("id",))
    with pytest.raises(ValueError, match="key_names"):
        UpdateCommand("t", A, b"", key(A), None, {}, {}, key_names=("id", "sk"))
    with pytest.raises(ValueError, match="unconditional"):
        BatchWriteCommand((put(A, item(A), ABSENT),))
    with pytest.raises(ValueError, match="at least one"):
        BatchWriteCommand(())


# --- determinism -------------------------------------------------------------------------------


def random_command(rng: random.Random) -> Command:
    pk = encode_key_value({"S": rng.choice("abcd")})
    n = {":n": {"N": str(rng.randint(0, 3))}}
    cond = rng.choice(
        [None, ABSENT, Condition("attribute_exists(id)"), Condition("n < :n", values=n)]
    )
    returns = rng.choice(["NONE", "ALL_OLD"])
    match rng.randrange(6):
        case 0:
            return put(pk, item(pk, n=rng.randint(0, 3)), cond, returns)
        case 1:
            return DeleteCommand("t", pk, b"", cond, returns)
        case 2:
            kinds = ["NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"]
            text = rng.choice(["SET n = n + :n", "ADD n :n", "REMOVE n", "SET n = :n, s = :s"])
            values = n | {":s": {"S": "x"}} if ":s" in text else n
            return update(pk, text, values, cond=cond, returns=rng.choice(kinds))
        case 3:
            return BatchWriteCommand((put(pk, item(pk, n=1)), DeleteCommand("t", A, b"")))
        case 4:
            return DeleteTableCommand(rng.choice(["t", "other"]))
    return PutCommand("other", pk, b"", item(pk))


@pytest.mark.parametrize("seed", range(5))
def test_replicas_applying_one_log_agree(tmp_path: Path, seed: int) -> None:
    """Two stores, the same entries cut into different batches: equal results and digests."""
    rng = random.Random(seed)
    cmds = [random_command(rng) for _ in range(300)]
    first, second = Machine(tmp_path / "1.sqlite"), Machine(tmp_path / "2.sqlite")
    results: list[list[ApplyResult]] = [[], []]
    for machine, out, max_batch in ((first, results[0], 1), (second, results[1], 17)):
        i = 0
        while i < len(cmds):
            size = rng.randint(1, max_batch)
            out += machine.apply(*cmds[i : i + size])
            i += size
    assert results[0] == results[1], f"SEED={seed}"
    assert first.store.digest() == second.store.digest(), f"SEED={seed}"
    assert any(not r.ok for r in results[0]) and any(r.ok for r in results[0])
    first.store.close()
    second.store.close()


def random_write_or_lock(rng: random.Random, step: int) -> Command:
    """A random item command, or a transaction locking or releasing an item (plain writes to
    a locked item must fail alike whether or not their result is read)."""
    pk = encode_key_value({"S": rng.choice("abcd")})
    match rng.randrange(8):
        case 0:
            return TxnPrepareCommand(f"x{step}", {"tbl": "t"}, 1.0, (put(pk, item(pk, n=9)),))
        case 1:
            return TxnResolveCommand(f"x{step - rng.randint(1, 9)}", rng.random() < 0.5,
                                     (("t", pk, b""),))  # fmt: skip
    return random_command(rng)


@pytest.mark.parametrize("seed", range(5))
def test_results_nobody_reads_change_no_item(tmp_path: Path, seed: int) -> None:
    """A follower applies with ``wanted`` naming no entry (a leader: its own proposals): it
    skips what only results need, yet writes exactly what a replica computing every result
    writes, and every result it does compute is the same."""
    rng = random.Random(seed)
    cmds = [random_write_or_lock(rng, i) for i in range(400)]
    every, some = Machine(tmp_path / "1.sqlite"), Machine(tmp_path / "2.sqlite")
    i = 0
    while i < len(cmds):
        size = rng.randint(1, 9)
        entries = [
            Entry(i + j + 1, 1, EntryKind.NORMAL, encode_command(cmd))
            for j, cmd in enumerate(cmds[i : i + size])
        ]
        wanted = {e.index for e in entries if rng.random() < 0.3}
        full, part = every.machine.apply(entries), some.machine.apply(entries, wanted)
        for e in entries:
            assert full[e.index].ok == part[e.index].ok, f"SEED={seed} index {e.index}"
            if e.index in wanted:
                assert full[e.index] == part[e.index], f"SEED={seed} index {e.index}"
        i += size
        assert every.store.digest() == some.store.digest(), f"SEED={seed} after {i}"
    assert every.store.applied() == some.store.applied()
    every.store.close()
    some.store.close()
