"""Transaction intents and locks in a partition group's state machine (the participant side).

The cross-partition transaction protocol (its coordinator is ``cluster/router/txncoord.py``,
which documents the whole protocol) asks every partition group it touches to *prepare*: one
Raft-committed command that, for each of the group's items in the transaction, checks that no
other transaction holds the item, evaluates the item's condition against the committed state and
computes the item's new image, and, only if every item of the group passes, stores an intent
beside each item. An intent is a row in the same replicated SQLite store, under the reserved
table ``#lock:<table>`` at the item's own key, so it is written, snapshotted, scrubbed and
rebuilt exactly like the items themselves:

    {"txn": attempt id, "rec": where the decision lives, "ts": coordinator's start time,
     "kind": "put" | "delete" | "check", "image": the new item (None: deleted / unchanged)}

A read prepare takes shared read locks instead: ``{"kind": "read", "readers": {attempt:
ts}}``. TransactGetItems no longer uses them (it reads optimistically, with the in-memory marks
of ``readmarks.py``), but logs may hold such prepares, so they still apply, and are honoured,
exactly as before. While an item holds an intent or a read lock, every other write to it
(PutItem, UpdateItem, DeleteItem, BatchWriteItem, another transaction) is refused with
TransactionConflict, so the item cannot change between prepare and resolution.

*Resolve* removes the intents of one attempt: with ``commit`` it first writes each intent's
image as the item. It is idempotent (an intent of another attempt, or none, is left alone), so
any router may resolve any intent once it knows the attempt's decision.

These functions are pure over a batch view (the state machine's overlay of one apply batch)
and the commands of ``cluster/storage/commands.py``; the state machine is their only caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from cluster.dynamo.values import item_size

from .commands import TxnPrepareCommand, TxnResolveCommand

Item = dict[str, Any]
ItemKey = tuple[str, bytes, bytes]

LOCK_PREFIX = "#lock:"
"""Table names starting with ``#`` are not valid DynamoDB names: no user table can collide."""
RECORDS = "#txn"
"""The reserved table holding transaction records (the coordinator's decisions)."""

NONE = "None"
CONFLICT = "TransactionConflict"
CONDITION_FAILED = "ConditionalCheckFailed"
VALIDATION = "ValidationError"
CONFLICT_MESSAGE = "Transaction is ongoing for the item"


class BatchView(Protocol):
    def get(self, key: ItemKey) -> Item | None: ...

    def write(self, key: ItemKey, item: Item | None) -> None: ...


Decision = tuple[bool, Item | None, str | None]
"""What the state machine decides for one op on its old item: (condition held, the item it
would leave (None: none), the validation error that refused it, if any)."""
Decide = Callable[[Any, Item | None], Decision]


def lock_table(tbl: str) -> str:
    return LOCK_PREFIX + tbl


def lock_key(key: ItemKey) -> ItemKey:
    return (lock_table(key[0]), key[1], key[2])


def conflict(lock: Item) -> Item:
    """The cancellation reason for an item held by ``lock`` (the lock rides along, for the
    router to resolve it; it is never shown to clients)."""
    return {"Code": CONFLICT, "Message": CONFLICT_MESSAGE, "lock": lock}


def prepare(cmd: TxnPrepareCommand, batch: BatchView, decide: Decide) -> tuple[bool, Item]:
    """Prepare ``cmd``'s ops in this group, all or none.

    Returns (every op passed, ``{"reasons": [...], "items": [...], "sizes": [...], "records":
    [...]}``): one cancellation reason per op, in order (``{"Code": "None"}`` for a passing op),
    for a read prepare the committed item (or None) of each op as it is while locked, each op's
    item size in bytes for capacity units (the larger of before and after), and whether each of
    ``cmd.records`` (conditional puts) held (else ``{"Code": "ConditionalCheckFailed", "old":
    the row there}``). Nothing is written unless every op and every record passes. An op whose
    item already holds this attempt's intent passes again (a retried prepare changes nothing).
    """
    reasons: list[Item] = []
    items: list[Item | None] = []
    sizes: list[int] = []
    staged: list[tuple[ItemKey, Item]] = []
    for op in cmd.ops:
        key: ItemKey = (op.tbl, op.pk, op.sk)
        lock = batch.get(lock_key(key))
        old = batch.get(key)
        sizes.append(item_size(old or {}))
        if cmd.read:
            items.append(old)
            if lock is not None and lock.get("kind") != "read":
                reasons.append(conflict(lock))
                continue
            readers = dict(lock["readers"]) if lock is not None else {}
            readers[cmd.txn] = cmd.ts
            staged.append((lock_key(key), {"kind": "read", "readers": readers}))
            reasons.append({"Code": NONE})
            continue
        if lock is not None:
            reasons.append({"Code": NONE} if lock.get("txn") == cmd.txn else conflict(lock))
            continue
        held, new, error = decide(op, old)
        sizes[-1] = max(sizes[-1], item_size(new or {}))
        if error is not None:
            reasons.append({"Code": VALIDATION, "Message": error})
        elif not held:
            reasons.append(
                {"Code": CONDITION_FAILED, "Message": "The conditional request failed", "old": old}
            )
        else:
            kind = _kind(op, new)
            image = new if kind == "put" else None
            intent = {"txn": cmd.txn, "rec": cmd.record, "ts": cmd.ts, "kind": kind}
            staged.append((lock_key(key), {**intent, "image": image}))
            reasons.append({"Code": NONE})
    records: list[Item] = []
    for put in cmd.records:  # conditional puts of transaction records, with the intents
        key = (put.tbl, put.pk, put.sk)
        old = batch.get(key)
        held, new, error = decide(put, old)
        if held and error is None:
            staged.append((key, new or {}))
            records.append({"Code": NONE})
        else:
            records.append({"Code": CONDITION_FAILED, "old": old})
    passed = all(r["Code"] == NONE for r in reasons + records)
    if passed:
        for key, row in staged:
            batch.write(key, row)
    return passed, {"reasons": reasons, "items": items, "sizes": sizes, "records": records}


def _kind(op: Any, new: Item | None) -> str:
    if type(op).__name__ == "CheckCommand":
        return "check"
    return "delete" if new is None else "put"


def resolve(cmd: TxnResolveCommand, batch: BatchView) -> Item:
    """Remove attempt ``cmd.txn``'s intents (and read locks) from ``cmd.keys``; with ``commit``
    write each intent's image first. Returns ``{"held": [bool per key]}``: whether the key
    still held this attempt's intent or lock (a TransactGetItems proves with it that no one
    took its locks away while it read)."""
    held: list[bool] = []
    for key in cmd.keys:
        lkey = lock_key(key)
        lock = batch.get(lkey)
        if lock is None:
            held.append(False)
            continue
        if lock.get("kind") == "read":
            readers = dict(lock.get("readers") or {})
            mine = readers.pop(cmd.txn, None) is not None
            held.append(mine)
            if mine:
                batch.write(lkey, {"kind": "read", "readers": readers} if readers else None)
            continue
        if lock.get("txn") != cmd.txn:
            held.append(False)
            continue
        held.append(True)
        if cmd.commit and lock.get("kind") in ("put", "delete"):
            batch.write(key, lock.get("image"))
        batch.write(lkey, None)
    return {"held": held}
