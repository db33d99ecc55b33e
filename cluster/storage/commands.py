"""The commands a partition group's log carries, their results, and their wire format.

A command is a frozen dataclass (PutCommand, UpdateCommand, the transaction phases, ...); the
router builds one per write, ``encode_command`` turns it into the msgpack map a log entry holds,
and every replica's state machine (``cluster.storage.statemachine``) decodes it strictly and
applies it. ``ApplyResult`` is what applying hands back to the proposer, also on the wire.

    cmd = encode_command(PutCommand("users", pk, b"", {"id": {"S": "a"}},
                                    Condition("attribute_not_exists(id)")))
    decode_command(cmd) == PutCommand(...)   # True; an unknown or mistyped field: CommandError
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from cluster.dynamo import AttributeValue

from .itemstore import Item

T = TypeVar("T")

PUT_RETURNS = frozenset({"NONE", "ALL_OLD"})
DELETE_RETURNS = PUT_RETURNS
UPDATE_RETURNS = frozenset({"NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"})
CONDITION_FAILED = "The conditional request failed"
TXN_CONFLICT = "TransactionConflictException"
TXN_CANCELED = "TransactionCanceledException"


# --- commands --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """A ConditionExpression and the placeholder maps it is evaluated with."""

    expression: str
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PutCommand:
    """PutItem: replace the whole item, if ``condition`` (None: always) holds for the old one."""

    tbl: str
    pk: bytes
    sk: bytes  # b"" for a table without a sort key
    item: Item
    condition: Condition | None = None
    returns: str = "NONE"  # NONE | ALL_OLD

    def __post_init__(self) -> None:
        _check_returns(self.returns, PUT_RETURNS)


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    """DeleteItem: remove the item (a missing one is fine), if ``condition`` holds."""

    tbl: str
    pk: bytes
    sk: bytes
    condition: Condition | None = None
    returns: str = "NONE"  # NONE | ALL_OLD

    def __post_init__(self) -> None:
        _check_returns(self.returns, DELETE_RETURNS)


@dataclass(frozen=True, slots=True)
class UpdateCommand:
    """UpdateItem: apply ``update`` (None: no change) to the item, or to ``key`` if it is missing.

    ``key`` holds the key attributes and ``key_names`` names them (the update may not touch
    them); ``names`` / ``values`` are the update's placeholder maps. ``returns`` follows
    DynamoDB's ReturnValues; UPDATED_OLD / UPDATED_NEW carry the top-level attributes that the
    update's actions name, as they were before / are after it.
    """

    tbl: str
    pk: bytes
    sk: bytes
    key: Item
    update: str | None
    names: dict[str, str]
    values: dict[str, AttributeValue]
    condition: Condition | None = None
    returns: str = "NONE"
    key_names: tuple[str, ...] = field(kw_only=True)

    def __post_init__(self) -> None:
        _check_returns(self.returns, UPDATE_RETURNS)
        if not self.key_names or sorted(self.key_names) != sorted(self.key):
            raise ValueError(f"key_names {self.key_names!r} must name the key's attributes")


@dataclass(frozen=True, slots=True)
class BatchWriteCommand:
    """BatchWriteItem's writes for one partition: unconditional puts and deletes, in order."""

    writes: tuple[PutCommand | DeleteCommand, ...]

    def __post_init__(self) -> None:
        if not self.writes:
            raise ValueError("a batch write needs at least one write")
        for write in self.writes:
            if not isinstance(write, PutCommand | DeleteCommand):
                raise ValueError(f"a batch write holds puts and deletes only, not {write!r}")
            if write.condition is not None or write.returns != "NONE":
                raise ValueError("the writes of a batch are unconditional and return nothing")


@dataclass(frozen=True, slots=True)
class DeleteTableCommand:
    """Remove every item of a table from this replica."""

    tbl: str


@dataclass(frozen=True, slots=True)
class ScrubCommand:
    """A scrub mark (DESIGN.md "Continuous verification"): changes no item, but every replica
    that applies it verifies its data exactly at this log index, so their digests compare."""

    scrub_id: str


@dataclass(frozen=True, slots=True)
class CheckCommand:
    """A transaction's ConditionCheck (or, with no condition, a TransactGetItems read)."""

    tbl: str
    pk: bytes
    sk: bytes
    condition: Condition | None = None
    returns: str = "NONE"


TxnOp = PutCommand | DeleteCommand | UpdateCommand | CheckCommand


@dataclass(frozen=True, slots=True)
class TxnPrepareCommand:
    """Phase one of a transaction in this group (cluster/storage/intents.py): check and lock
    every op's item, all or none. ``read``: shared read locks for a TransactGetItems."""

    txn: str  # the attempt id
    record: dict[str, str]  # where the attempt's decision lives (only routers read it)
    ts: float  # the coordinator's wall clock at the attempt's start
    ops: tuple[TxnOp, ...]
    read: bool = False
    # Transaction records written with the intents, all or none (the home group's prepare
    # creates the attempt's record, and its ClientRequestToken row, in the same entry).
    records: tuple[PutCommand, ...] = ()

    def __post_init__(self) -> None:
        if not self.ops:
            raise ValueError("a transaction prepare needs at least one op")


@dataclass(frozen=True, slots=True)
class TxnResolveCommand:
    """Phase two: apply (``commit``) or drop the attempt's intents on ``keys``."""

    txn: str
    commit: bool
    keys: tuple[tuple[str, bytes, bytes], ...]


Command = (
    PutCommand
    | DeleteCommand
    | UpdateCommand
    | BatchWriteCommand
    | DeleteTableCommand
    | ScrubCommand
    | TxnPrepareCommand
    | TxnResolveCommand
)
ScrubHook = Callable[[int, str], None]  # (log index, scrub id), called with the store at index


def _check_returns(returns: str, allowed: frozenset[str]) -> None:
    if returns not in allowed:
        raise ValueError(f"returns must be one of {sorted(allowed)}, not {returns!r}")


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of one command, handed back to whoever proposed it.

    ``old`` / ``new`` carry what the command's ``returns`` asked for (None when nothing), except
    on ConditionalCheckFailedException, where ``old`` is the item as it is (None: missing) so
    that the router can honour ReturnValuesOnConditionCheckFailure=ALL_OLD. ``sizes`` holds,
    for each item a successful put, delete, update or batch wrote (in order), the size in bytes
    its write capacity is charged by: the larger of the item before and after (DynamoDB's
    rule; a delete: the deleted item). Empty when the command wrote no item. It is metering,
    not outcome: results compare equal whatever their sizes.
    """

    ok: bool
    error: str | None = None  # a DynamoDB error type, e.g. ConditionalCheckFailedException
    message: str | None = None
    old: Item | None = None
    new: Item | None = None
    sizes: tuple[int, ...] = field(default=(), compare=False)

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "message": self.message,
            "old": self.old,
            "new": self.new,
            "sizes": list(self.sizes),
        }

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> ApplyResult:
        """Inverse of ``to_wire``; fields it lacks (an older node's reply) are None / empty."""
        get = body.get
        sizes = tuple(int(n) for n in get("sizes") or ())
        return cls(bool(body["ok"]), get("error"), get("message"), get("old"), get("new"), sizes)


# --- wire format -----------------------------------------------------------------------------
#
# One msgpack map per command; bytes are msgpack bin, items and values DynamoDB typed JSON.
#   {"op": "put", "tbl": str, "pk": bin, "sk": bin, "item": {...}, [cond], [returns]}
#   {"op": "delete", "tbl", "pk", "sk", [cond], [returns]}
#   {"op": "update", "tbl", "pk", "sk", "key": {...}, "key_names": [str], [update]: str,
#    [names]: {str: str}, [values]: {str: {...}}, [cond], [returns]}
#   {"op": "batch", "writes": [put or delete map without cond / returns, ...]}
#   {"op": "delete_table", "tbl": str}
# where cond is {"expr": str, [names], [values]}. Fields in brackets are left out when they
# hold their default (no condition, "NONE", no update, empty map), so a plain put is the same
# map as before conditions existed. Decoding is strict: a missing or unknown field, or a field
# of the wrong type, makes the command undecodable (an unknown field could be a condition that
# this version would otherwise silently ignore).


class CommandError(ValueError):
    """A log entry whose data is not a command we understand."""


def encode_command(cmd: Command) -> bytes:
    packed: bytes = msgpack.packb(_command_body(cmd), use_bin_type=True)
    return packed


def _command_body(cmd: Command | CheckCommand) -> dict[str, Any]:
    body: dict[str, Any]
    match cmd:
        case PutCommand():
            body = {"op": "put", "tbl": cmd.tbl, "pk": cmd.pk, "sk": cmd.sk, "item": cmd.item}
        case DeleteCommand():
            body = {"op": "delete", "tbl": cmd.tbl, "pk": cmd.pk, "sk": cmd.sk}
        case UpdateCommand():
            body = {"op": "update", "tbl": cmd.tbl, "pk": cmd.pk, "sk": cmd.sk, "key": cmd.key}
            body["key_names"] = list(cmd.key_names)
            if cmd.update is not None:
                body["update"] = cmd.update
            _put_maps(body, cmd.names, cmd.values)
        case BatchWriteCommand():
            return {"op": "batch", "writes": [_command_body(w) for w in cmd.writes]}
        case DeleteTableCommand():
            return {"op": "delete_table", "tbl": cmd.tbl}
        case ScrubCommand():
            return {"op": "scrub", "id": cmd.scrub_id}
        case CheckCommand():
            body = {"op": "check", "tbl": cmd.tbl, "pk": cmd.pk, "sk": cmd.sk}
        case TxnPrepareCommand():
            ops = [_command_body(op) for op in cmd.ops]
            head = {"op": "txn_prepare", "txn": cmd.txn, "record": cmd.record, "ts": cmd.ts}
            body = head | {"ops": ops, "read": cmd.read}
            if cmd.records:
                body["records"] = [_command_body(r) for r in cmd.records]
            return body
        case TxnResolveCommand():
            keys = [list(k) for k in cmd.keys]
            return {"op": "txn_resolve", "txn": cmd.txn, "commit": cmd.commit, "keys": keys}
    if cmd.condition is not None:
        cond = {"expr": cmd.condition.expression}
        body["cond"] = _put_maps(cond, cmd.condition.names, cmd.condition.values)
    if cmd.returns != "NONE":
        body["returns"] = cmd.returns
    return body


def _put_maps(
    body: dict[str, Any], names: dict[str, str], values: dict[str, Any]
) -> dict[str, Any]:
    if names:
        body["names"] = names
    if values:
        body["values"] = values
    return body


def decode_command(data: bytes) -> Command:
    """Inverse of ``encode_command``; raises CommandError for anything else."""
    try:
        body = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CommandError(f"undecodable command: {exc}") from exc
    try:
        return _decode_body(body, batched=False)
    except ValueError as exc:  # a dataclass refusing its fields, e.g. an unknown ReturnValues
        if isinstance(exc, CommandError):
            raise
        raise CommandError(f"invalid command: {exc}") from exc


_PLAIN_PUT = frozenset({"op", "tbl", "pk", "sk", "item"})


def _decode_body(body: Any, *, batched: bool) -> Command:
    if isinstance(body, dict) and body.keys() == _PLAIN_PUT and body["op"] == "put":
        # Most entries: a put without condition or ReturnValues. The same checks as the
        # general path below, without its per-field bookkeeping (every replica decodes each).
        tbl, pk, sk, item = body["tbl"], body["pk"], body["sk"], body["item"]
        if (
            type(tbl) is str
            and type(pk) is bytes
            and type(sk) is bytes
            and type(item) is dict
            and all(type(k) is str and type(v) is dict for k, v in item.items())
        ):
            return PutCommand(tbl, pk, sk, item)
    fields = _Fields(body, "command")
    op = fields.take("op", str)
    if batched and op not in ("put", "delete"):
        raise CommandError(f"a batch write cannot hold {op!r}")
    decode = _DECODERS.get(op)
    if decode is None:
        raise CommandError(f"unknown command {op!r}")
    cmd = decode(fields)
    fields.finish()
    return cmd


class _Fields:
    """Reads the fields of one map, checking their types and that no unknown one is left."""

    def __init__(self, body: Any, what: str) -> None:
        if not isinstance(body, dict):
            raise CommandError(f"a {what} must be a map, not {type(body).__name__}")
        self.body: dict[Any, Any] = body
        self.what = what
        self.read: set[str] = set()

    def take(self, name: str, kind: type[T], default: T | None = None) -> T:
        """The field ``name``, which must be a ``kind``; ``default`` (if given) when absent."""
        self.read.add(name)
        if name not in self.body:
            if default is None:
                raise CommandError(f"{self.what} lacks field {name!r}")
            return default
        value = self.body[name]
        if not isinstance(value, kind):
            raise CommandError(f"{self.what} field {name!r} is not a {kind.__name__}: {value!r}")
        return value

    def key(self) -> tuple[str, bytes, bytes]:
        return self.take("tbl", str), self.take("pk", bytes), self.take("sk", bytes)

    def item(self, name: str) -> Item:
        item = self.take(name, dict)
        if not all(isinstance(k, str) and isinstance(v, dict) for k, v in item.items()):
            raise CommandError(f"{self.what} field {name!r} is not an item")
        return item

    def names(self) -> dict[str, str]:
        names = self.take("names", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
            raise CommandError(f"{self.what} field 'names' is not a map of names")
        return names

    def values(self) -> dict[str, AttributeValue]:
        return self.item("values") if "values" in self.body else {}

    def condition(self) -> Condition | None:
        if "cond" not in self.body:
            self.read.add("cond")
            return None
        cond = _Fields(self.take("cond", dict), "condition")
        condition = Condition(cond.take("expr", str), cond.names(), cond.values())
        cond.finish()
        return condition

    def returns(self) -> str:
        return self.take("returns", str, "NONE")

    def finish(self) -> None:
        unknown = set(self.body) - self.read
        if unknown:
            raise CommandError(f"{self.what} has unknown fields {sorted(map(str, unknown))}")


def _decode_put(f: _Fields) -> PutCommand:
    return PutCommand(*f.key(), f.item("item"), f.condition(), f.returns())


def _decode_delete(f: _Fields) -> DeleteCommand:
    return DeleteCommand(*f.key(), f.condition(), f.returns())


def _decode_update(f: _Fields) -> UpdateCommand:
    key_names = f.take("key_names", list)
    if not all(isinstance(name, str) for name in key_names):
        raise CommandError("command field 'key_names' is not a list of names")
    update = f.take("update", str) if "update" in f.body else None
    key, names, values = f.item("key"), f.names(), f.values()
    condition, returns = f.condition(), f.returns()
    return UpdateCommand(
        *f.key(), key, update, names, values, condition, returns, key_names=tuple(key_names)
    )


def _decode_batch(f: _Fields) -> BatchWriteCommand:
    writes = [_decode_body(w, batched=True) for w in f.take("writes", list)]
    return BatchWriteCommand(tuple(w for w in writes if isinstance(w, PutCommand | DeleteCommand)))


def _decode_check(f: _Fields) -> CheckCommand:
    return CheckCommand(*f.key(), f.condition())


def _decode_txn_prepare(f: _Fields) -> TxnPrepareCommand:
    ops: list[TxnOp] = []
    for body in f.take("ops", list):
        op = _Fields(body, "transaction op")
        decode = _TXN_OPS.get(op.take("op", str))
        if decode is None:
            raise CommandError(f"a transaction cannot hold {body.get('op')!r}")
        ops.append(decode(op))
        op.finish()
    record = f.take("record", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in record.items()):
        raise CommandError("command field 'record' is not a map of strings")
    ts = f.take("ts", float)
    records: list[PutCommand] = []
    for body in f.take("records", list, []):
        put = _Fields(body, "transaction record")
        if put.take("op", str) != "put":
            raise CommandError("a transaction record is written by a put")
        records.append(_decode_put(put))
        put.finish()
    txn, read = f.take("txn", str), f.take("read", bool)
    return TxnPrepareCommand(txn, record, ts, tuple(ops), read, tuple(records))


def _decode_txn_resolve(f: _Fields) -> TxnResolveCommand:
    keys: list[tuple[str, bytes, bytes]] = []
    for key in f.take("keys", list):
        if not (isinstance(key, list) and len(key) == 3 and isinstance(key[0], str)):
            raise CommandError(f"not an item key: {key!r}")
        if not (isinstance(key[1], bytes) and isinstance(key[2], bytes)):
            raise CommandError(f"not an item key: {key!r}")
        keys.append((key[0], key[1], key[2]))
    return TxnResolveCommand(f.take("txn", str), f.take("commit", bool), tuple(keys))


def _decode_delete_table(f: _Fields) -> DeleteTableCommand:
    return DeleteTableCommand(f.take("tbl", str))


def _decode_scrub(f: _Fields) -> ScrubCommand:
    return ScrubCommand(f.take("id", str))


_DECODERS: dict[str, Callable[[_Fields], Command]] = {
    "scrub": _decode_scrub,
    "put": _decode_put,
    "delete": _decode_delete,
    "update": _decode_update,
    "batch": _decode_batch,
    "delete_table": _decode_delete_table,
    "txn_prepare": _decode_txn_prepare,
    "txn_resolve": _decode_txn_resolve,
}
_TXN_OPS: dict[str, Callable[[_Fields], TxnOp]] = {
    "put": _decode_put,
    "delete": _decode_delete,
    "update": _decode_update,
    "check": _decode_check,
}
