"""The replicated state machine: commands in log entries, applied to a replica's ItemStore.

A command is a msgpack map carried as a log entry's data. Applying is deterministic (it looks
only at the store and the command), so every replica that applies the same log holds the same
items, which the convergence checks verify with digests. Every committed entry of one Ready is
applied in one SQLite transaction; commands later in a batch see the writes of earlier ones.

    cmd = encode_command(PutCommand("users", pk, b"", {"id": {"S": "a"}}))
    results = StateMachine(store).apply([Entry(5, 2, EntryKind.NORMAL, cmd)])
    results[5].ok   # True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from cluster.consensus.messages import Entry, EntryKind

from .itemstore import DeleteItem, Item, ItemStore, PutItem, StoreOp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PutCommand:
    tbl: str
    pk: bytes
    sk: bytes
    item: Item


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    tbl: str
    pk: bytes
    sk: bytes


Command = PutCommand | DeleteCommand


@dataclass(frozen=True, slots=True)
class ApplyResult:
    ok: bool
    error: str | None = None  # a DynamoDB error type, e.g. ConditionalCheckFailedException
    old: Item | None = None
    new: Item | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "old": self.old, "new": self.new}


class CommandError(ValueError):
    """A log entry whose data is not a command we understand."""


def encode_command(cmd: Command) -> bytes:
    body: dict[str, Any]
    match cmd:
        case PutCommand():
            body = {"op": "put", "tbl": cmd.tbl, "pk": cmd.pk, "sk": cmd.sk, "item": cmd.item}
        case DeleteCommand():
            body = {"op": "delete", "tbl": cmd.tbl, "pk": cmd.pk, "sk": cmd.sk}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_command(data: bytes) -> Command:
    try:
        body = msgpack.unpackb(data, raw=False)
        op = body["op"]
        key = (str(body["tbl"]), bytes(body["pk"]), bytes(body["sk"]))
        if op == "put":
            return PutCommand(*key, dict(body["item"]))
        if op == "delete":
            return DeleteCommand(*key)
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise CommandError(f"undecodable command: {exc}") from exc
    raise CommandError(f"unknown command {op!r}")


class StateMachine:
    def __init__(self, store: ItemStore) -> None:
        self.store = store

    def apply(self, entries: Sequence[Entry]) -> dict[int, ApplyResult]:
        """Apply committed entries in one transaction; returns the result per NORMAL entry.

        NOOP and CONFIG entries only advance the applied index (the membership of the last
        CONFIG entry is recorded with it). A command that cannot be decoded is a bug elsewhere,
        but it was committed, so every replica skips it identically and reports it failed.
        """
        if not entries:
            return {}
        overlay: dict[tuple[str, bytes, bytes], Item | None] = {}
        ops: list[StoreOp] = []
        results: dict[int, ApplyResult] = {}
        membership: bytes | None = None
        for entry in entries:
            if entry.kind is EntryKind.CONFIG:
                membership = entry.data
            if entry.kind is not EntryKind.NORMAL:
                continue
            try:
                cmd = decode_command(entry.data)
            except CommandError as exc:
                log.error("entry %d: %s", entry.index, exc)
                results[entry.index] = ApplyResult(False, "InternalServerError")
                continue
            results[entry.index] = self._apply_one(cmd, overlay, ops)
        last = entries[-1]
        self.store.apply_batch(last.index, last.term, ops, membership)
        return results

    def _apply_one(
        self,
        cmd: Command,
        overlay: dict[tuple[str, bytes, bytes], Item | None],
        ops: list[StoreOp],
    ) -> ApplyResult:
        key = (cmd.tbl, cmd.pk, cmd.sk)
        old = overlay[key] if key in overlay else self.store.get(*key)
        match cmd:
            case PutCommand():
                overlay[key] = cmd.item
                ops.append(PutItem(cmd.tbl, cmd.pk, cmd.sk, cmd.item))
                return ApplyResult(True, old=old, new=cmd.item)
            case DeleteCommand():
                overlay[key] = None
                ops.append(DeleteItem(cmd.tbl, cmd.pk, cmd.sk))
                return ApplyResult(True, old=old)
