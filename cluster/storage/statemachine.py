"""The replicated state machine: commands in log entries, applied to a replica's ItemStore.

A command (``cluster.storage.commands``: the dataclasses and their msgpack wire format) is
carried as a log entry's data. Every DynamoDB item write is decided
when its entry is applied, not when it is proposed: conditions are evaluated and updates computed
(with ``cluster.dynamo``) against the committed state, so a check-and-write is atomic and every
replica that applies the same log reaches the same items and the same results, which the
convergence checks verify with digests. Applying looks only at the store and the command.

All committed entries of one Ready are applied in one SQLite transaction; commands later in a
batch see the writes of earlier ones through an in-memory overlay. A command whose condition is
false, or whose update the expression engine rejects, writes nothing and reports
``ConditionalCheckFailedException`` / ``ValidationException``.

    cmd = encode_command(PutCommand("users", pk, b"", {"id": {"S": "a"}, "v": {"N": "1"}},
                                    Condition("attribute_not_exists(id)")))
    results = StateMachine(store).apply([Entry(5, 2, EntryKind.NORMAL, cmd)])
    results[5].ok   # True; a second put-if-absent of the key would fail its condition
    bump = UpdateCommand("users", pk, b"", {"id": {"S": "a"}}, "SET v = v + :one", {},
                         {":one": {"N": "1"}}, returns="UPDATED_NEW", key_names=("id",))
    StateMachine(store).apply([Entry(6, 2, EntryKind.NORMAL, encode_command(bump))])[6].new
    # -> {"v": {"N": "2"}}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from cluster.consensus.messages import Entry, EntryKind
from cluster.dynamo import (
    ValidationError,
    apply_update,
    check_item_size,
    evaluate_condition,
    parse_condition,
    parse_update,
)
from cluster.dynamo.expressions import resolve_path
from cluster.dynamo.nodes import DeleteAction, RemoveAction
from cluster.dynamo.values import item_size

from . import intents
from .commands import (
    CONDITION_FAILED,
    TXN_CANCELED,
    TXN_CONFLICT,
    ApplyResult,
    BatchWriteCommand,
    CheckCommand,
    Command,
    CommandError,
    Condition,
    DeleteCommand,
    DeleteTableCommand,
    PutCommand,
    ScrubCommand,
    ScrubHook,
    TxnOp,
    TxnPrepareCommand,
    TxnResolveCommand,
    UpdateCommand,
    decode_command,
)
from .itemstore import DeleteItem, DeleteTable, Item, ItemStore, PutItem, StoreOp

log = logging.getLogger(__name__)


# --- applying --------------------------------------------------------------------------------

ItemKey = tuple[str, bytes, bytes]
_DELETE = None  # what _decide returns as the item to write when the command deletes it


@dataclass(slots=True)
class WriteLog:
    """The items (and whole tables) one ``apply`` call wrote, for ``on_written``."""

    keys: set[ItemKey] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)


WrittenHook = Callable[[WriteLog], None]


class _Batch:
    """The writes of one apply batch: store operations in order, and an overlay to read them."""

    def __init__(self, store: ItemStore, written: WriteLog | None = None) -> None:
        self.store = store
        self.ops: list[StoreOp] = []
        self.items: dict[ItemKey, Item | None] = {}  # None: deleted in this batch
        self.dropped: set[str] = set()  # tables deleted in this batch
        self.written = written if written is not None else WriteLog()

    def get(self, key: ItemKey) -> Item | None:
        if key in self.items:
            return self.items[key]
        if key[0] in self.dropped:
            return None
        return self.store.get(*key)

    def lock(self, key: ItemKey) -> Item | None:
        """The transaction lock held on ``key`` (intents.py), if any: ``get`` of its lock key,
        without SQL while the store knows the lock table is empty (nearly always)."""
        lock = intents.lock_key(key)
        if lock in self.items or self.store.has_rows(lock[0]):
            return self.get(lock)
        return None  # no lock in the store, none written by this batch

    def write(self, key: ItemKey, item: Item | None) -> None:
        self.items[key] = item
        self.ops.append(DeleteItem(*key) if item is None else PutItem(*key, item))
        self.written.keys.add(key)

    def delete_table(self, tbl: str) -> None:
        self.dropped.add(tbl)
        self.written.tables.add(tbl)
        for key in [k for k in self.items if k[0] == tbl]:
            del self.items[key]
        self.ops.append(DeleteTable(tbl))


class StateMachine:
    def __init__(
        self,
        store: ItemStore,
        on_scrub: ScrubHook | None = None,
        on_written: WrittenHook | None = None,
    ) -> None:
        self.store = store
        self.on_scrub = on_scrub
        self.on_written = on_written  # told what each apply call wrote (read marks)

    def apply(
        self, entries: Sequence[Entry], wanted: Container[int] | None = None
    ) -> dict[int, ApplyResult]:
        """Apply committed entries in one transaction; returns the result per NORMAL entry.

        ``wanted`` names the indexes whose results someone reads (a leader's waiting
        proposals; None: all). The others are applied alike, but what only their result needs
        is skipped (``_apply_one``): followers, which every write reaches twice, compute no
        answer nobody reads. The items written never depend on it.

        NOOP and CONFIG entries only advance the applied index (the membership of the last
        CONFIG entry is recorded with it). A command that cannot be decoded is a bug elsewhere,
        but it was committed, so every replica skips it identically and reports it failed.
        A scrub mark commits what comes before it on its own, then calls ``on_scrub`` with the
        store exactly at the mark's index.
        """
        if not entries:
            return {}
        written = WriteLog()
        try:
            return self._apply_entries(entries, written, wanted)
        finally:
            # Even a batch that failed half-way may have written: read marks must not survive
            # it (dropping a mark only ever makes a reader read again).
            if self.on_written is not None and (written.keys or written.tables):
                self.on_written(written)

    def _apply_entries(
        self, entries: Sequence[Entry], written: WriteLog, wanted: Container[int] | None
    ) -> dict[int, ApplyResult]:
        batch = _Batch(self.store, written)
        results: dict[int, ApplyResult] = {}
        membership: bytes | None = None
        pending = False  # entries seen since the last commit of the batch
        for entry in entries:
            pending = True
            if entry.kind is EntryKind.CONFIG:
                membership = entry.data
            if entry.kind is not EntryKind.NORMAL:
                continue
            try:
                cmd = decode_command(entry.data)
            except CommandError as exc:
                log.error("entry %d: %s", entry.index, exc)
                results[entry.index] = ApplyResult(False, "InternalServerError", str(exc))
                continue
            if isinstance(cmd, ScrubCommand):
                self.store.apply_batch(entry.index, entry.term, batch.ops, membership)
                batch, membership, pending = _Batch(self.store, written), None, False
                results[entry.index] = ApplyResult(True)
                if self.on_scrub is not None:
                    self.on_scrub(entry.index, cmd.scrub_id)
                continue
            answer = wanted is None or entry.index in wanted
            results[entry.index] = self._apply_one(entry.index, cmd, batch, answer)
        if pending:
            last = entries[-1]
            self.store.apply_batch(last.index, last.term, batch.ops, membership)
        return results

    def _apply_one(
        self, index: int, cmd: Command, batch: _Batch, answer: bool = True
    ) -> ApplyResult:
        """Apply ``cmd``; with ``answer`` False nobody reads the result: the store reads and
        sizes that only the result needs are skipped. Correctness: every item written is the
        same either way; an unconditional Put or Delete writes its item (or deletes) whatever
        the old one was, so only those skip reading it (a condition or an update reads it
        always, and the transaction lock is checked always: it decides whether to write)."""
        match cmd:
            case TxnPrepareCommand():
                passed, payload = intents.prepare(cmd, batch, _decide_txn_op)
                if passed:
                    return ApplyResult(True, new=payload)
                return ApplyResult(False, TXN_CANCELED, "Transaction cancelled", new=payload)
            case TxnResolveCommand():
                return ApplyResult(True, new=intents.resolve(cmd, batch))
            case BatchWriteCommand():
                for write in cmd.writes:
                    lock = batch.lock((write.tbl, write.pk, write.sk))
                    if lock is not None:
                        return _conflict(lock)
                sizes: list[int] = []
                for write in cmd.writes:
                    key = (write.tbl, write.pk, write.sk)
                    item = write.item if isinstance(write, PutCommand) else _DELETE
                    if answer:
                        sizes.append(_written_size(batch.get(key), item))
                    batch.write(key, item)
                return ApplyResult(True, sizes=tuple(sizes)) if answer else _UNREAD
            case DeleteTableCommand():
                batch.delete_table(cmd.tbl)
                batch.delete_table(intents.lock_table(cmd.tbl))
                return ApplyResult(True)
            case ScrubCommand():
                return ApplyResult(True)  # handled in apply
        key = (cmd.tbl, cmd.pk, cmd.sk)
        lock = batch.lock(key)
        if lock is not None:  # an item in a transaction changes only through its resolution
            return _conflict(lock)
        if not answer and cmd.condition is None and isinstance(cmd, PutCommand | DeleteCommand):
            # Its item does not depend on the old one; only the unread result would.
            batch.write(key, cmd.item if isinstance(cmd, PutCommand) else _DELETE)
            return _UNREAD
        old = batch.get(key)  # store errors propagate: they are this replica's, not the log's
        try:
            result, new = _decide(cmd, old)
        except ValidationError as exc:
            return ApplyResult(False, "ValidationException", exc.message)
        except Exception as exc:
            # A bug in the engine, met on every replica alike (the inputs are the same). Failing
            # the command keeps the group alive; raising would stop every replica at this entry.
            log.exception("entry %d: applying %s failed", index, type(cmd).__name__)
            return ApplyResult(False, "InternalServerError", f"{type(exc).__name__}: {exc}")
        if result.ok:
            batch.write(key, new)
            if not answer:
                return result
            size = _written_size(old, new)  # (dataclasses.replace costs 3x this construction)
            result = ApplyResult(
                result.ok, result.error, result.message, result.old, result.new, (size,)
            )
        return result


_UNREAD = ApplyResult(True)  # the result of an applied write whose result nobody reads


def _written_size(old: Item | None, new: Item | None) -> int:
    """What a write of ``old`` to ``new`` is charged by: the larger item (DynamoDB's rule for
    PutItem, UpdateItem, DeleteItem and each write of a BatchWriteItem)."""
    try:
        return max(item_size(old or {}), item_size(new or {}))
    except Exception:
        # A malformed stored value (a bug elsewhere) is met by every replica alike; metering
        # must not stop the group's log over it: the write is charged its minimum.
        return 0


def _decide(
    cmd: PutCommand | DeleteCommand | UpdateCommand, old: Item | None
) -> tuple[ApplyResult, Item | None]:
    """The result of ``cmd`` on ``old`` and the item it leaves (None: none). Pure.

    Raises ValidationError when the expression engine rejects the command.
    """
    if cmd.condition is not None and not _holds(cmd.condition, old):
        failed = ApplyResult(False, "ConditionalCheckFailedException", CONDITION_FAILED, old)
        return failed, old  # not ok: nothing is written
    all_old = old if cmd.returns == "ALL_OLD" else None
    match cmd:
        case PutCommand():
            return ApplyResult(True, old=all_old), cmd.item
        case DeleteCommand():
            return ApplyResult(True, old=all_old), _DELETE
    new: Item = dict(cmd.key) if old is None else old
    touched: set[str | int] = set()
    if cmd.update is not None:
        ast = parse_update(cmd.update)
        if old is None and all(isinstance(a, RemoveAction | DeleteAction) for a in ast.actions):
            # Removing from an item that does not exist creates nothing, as in DynamoDB.
            return ApplyResult(True), _DELETE
        new = apply_update(ast, new, cmd.names, cmd.values, cmd.key_names)
        touched = {resolve_path(action.path, cmd.names)[0] for action in ast.actions}
        check_item_size(new, updated=True)
    match cmd.returns:
        case "UPDATED_OLD":
            return ApplyResult(True, old=_pick(old, touched)), new
        case "ALL_NEW":
            return ApplyResult(True, new=new), new
        case "UPDATED_NEW":
            return ApplyResult(True, new=_pick(new, touched)), new
    return ApplyResult(True, old=all_old), new


def _conflict(lock: Item) -> ApplyResult:
    """A plain write refused because a transaction holds the item (``old``: its lock)."""
    return ApplyResult(False, TXN_CONFLICT, intents.CONFLICT_MESSAGE, old=lock)


def _decide_txn_op(op: TxnOp, old: Item | None) -> intents.Decision:
    """``_decide`` for an op inside a transaction prepare: (condition held, new item, error)."""
    if isinstance(op, CheckCommand):
        return op.condition is None or _holds(op.condition, old), old, None
    try:
        result, new = _decide(op, old)
    except ValidationError as exc:
        return False, old, exc.message
    return result.ok, new, None


def _holds(condition: Condition, item: Item | None) -> bool:
    ast = parse_condition(condition.expression)
    return evaluate_condition(ast, item, condition.names, condition.values)


def _pick(item: Item | None, names: set[str | int]) -> Item | None:
    """The attributes of ``item`` named in ``names``, in item order; None when there are none."""
    picked = {name: av for name, av in (item or {}).items() if name in names}
    return picked or None
