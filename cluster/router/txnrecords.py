"""Transaction records: the one place a write transaction's fate is decided, and its readers.

The protocol is described in ``txncoord.py``; this module holds what every router needs to meet
another router's transaction: read an attempt's record, make or learn its decision (``P -> C``
or ``P -> A``, Raft-ordered), resolve its intents in a group, and clear a lock met on an item
(resolving it if decided, aborting it if stale). ``txncoord.py`` (the coordinator),
``txntokens.py`` (ClientRequestToken rows), ``txnhooks.py`` (plain item operations) and
``txngc.py`` (the sweeper) build on it.

    state = record_state(await read_record(ctx, home, attempt))    # "P", "C", "A" or None
    state = await decide(ctx, home, attempt, commit=False)         # abort, or learn it committed
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from cluster.metadata.partitionmap import Partition
from cluster.storage.commands import (
    ApplyResult,
    Command,
    Condition,
    PutCommand,
    TxnResolveCommand,
    UpdateCommand,
)
from cluster.storage.intents import RECORDS
from cluster.storage.itemstore import encode_key_value

from .context import RouterContext
from .errors import DynamoError

log = logging.getLogger(__name__)

TXN_STALE = 5.0
"""Seconds after which a pending write transaction may be aborted by anyone who meets it (its
coordinator answers its client well before: four Raft steps of ``request_budget`` each)."""
READ_STALE = 4.0
"""Seconds after which a TransactGetItems' read lock may be taken away by a writer."""

Key = tuple[str, bytes, bytes]


class Unknown(Exception):
    """A step whose outcome is not known (or a group that did not answer)."""

    def __init__(self, error: DynamoError) -> None:
        super().__init__(error.message)
        self.error = error


def record_pk(key: str) -> bytes:
    return encode_key_value({"S": key})


async def write_command(ctx: RouterContext, partition: Partition, cmd: Command) -> ApplyResult:
    """One Raft-committed command; ``Unknown`` if its outcome is not known."""
    try:
        return await ctx.storage.write(partition, cmd, ctx.request_budget)
    except DynamoError as exc:
        if exc.status >= 500:
            raise Unknown(exc) from None
        raise


async def read_record(ctx: RouterContext, home: Partition, key: str) -> dict[str, Any] | None:
    reply = await ctx.storage.read(
        home, "get", True, ctx.request_budget, tbl=RECORDS, pk=record_pk(key), sk=b""
    )
    item: dict[str, Any] | None = reply.get("item")
    return item


def record_state(record: dict[str, Any] | None) -> str | None:
    return None if record is None else str(record.get("st", {}).get("S"))


def ts_of(record: dict[str, Any]) -> float:
    return float(record.get("ts", {}).get("N", "0"))


async def decide(ctx: RouterContext, home: Partition, attempt: str, commit: bool) -> str | None:
    """Make the attempt's decision (``P -> C`` or ``P -> A``) or learn the one already made.

    Returns "C" or "A" (final, Raft-committed), or None if it could not be learnt within the
    budget (the caller must then not claim either outcome)."""
    pk = record_pk(attempt)
    end = time.monotonic() + 2 * ctx.request_budget
    pending = {":p": {"S": "P"}}
    cmd: Command
    if commit:
        cmd = UpdateCommand(
            RECORDS,
            pk,
            b"",
            {"k": {"S": attempt}},
            "SET #s = :to",
            {"#s": "st"},
            {":to": {"S": "C"}},
            Condition("#s = :p", {"#s": "st"}, pending),
            key_names=("k",),
        )
    else:
        tomb = {"k": {"S": attempt}, "st": {"S": "A"}, "ts": {"N": repr(time.time())}}
        cond = Condition("attribute_not_exists(#k) OR #s = :p", {"#k": "k", "#s": "st"}, pending)
        cmd = PutCommand(RECORDS, pk, b"", tomb, cond)
    while True:
        try:
            result = await write_command(ctx, home, cmd)
        except Unknown:
            result = None
        if result is not None:
            if result.ok:
                return "C" if commit else "A"
            state = record_state(result.old)
            if state in ("C", "A"):
                return state
            if state is None:  # no record: a commit cannot apply to it, so it is aborted
                return "A" if not commit else await decide(ctx, home, attempt, False)
        # Unknown: find out what the record says, and try again while there is time.
        try:
            state = record_state(await read_record(ctx, home, attempt))
        except DynamoError:
            state = "P"
        if state in ("C", "A"):
            return state
        if time.monotonic() >= end:
            return None
        await asyncio.sleep(0.05)


async def home_of(ctx: RouterContext, rec: dict[str, Any]) -> Partition:
    layout = await ctx.table(str(rec.get("tbl")))
    for partition in layout.partitions:
        if partition.id == rec.get("group"):
            return partition
    raise DynamoError.unavailable(f"transaction record group {rec.get('group')} is gone")


async def fate(ctx: RouterContext, lock: dict[str, Any]) -> str | None:
    """The decision of the write attempt behind intent ``lock``: "C", "A", or None while it is
    pending and young (or unknowable now). A stale pending attempt is aborted here."""
    rec = lock.get("rec") or {}
    home = await home_of(ctx, rec)
    attempt = str(lock.get("txn"))
    record = await read_record(ctx, home, attempt)
    state = record_state(record)
    if state in ("C", "A"):
        return state
    started = ts_of(record) if record is not None else float(lock.get("ts", 0.0))
    if time.time() - started < TXN_STALE:
        return None
    log.info("aborting stale transaction %s (pending for %.1fs)", attempt, time.time() - started)
    return await decide(ctx, home, attempt, commit=False)


async def resolve(
    ctx: RouterContext, partition: Partition, attempt: str, commit: bool, keys: Sequence[Key]
) -> list[bool] | None:
    """Resolve ``attempt``'s intents on ``keys`` in one group; the held flags, None if the
    group did not answer (the intents stay, and the record still decides them)."""
    try:
        cmd = TxnResolveCommand(attempt, commit, tuple(keys))
        result = await write_command(ctx, partition, cmd)
    except (Unknown, DynamoError) as exc:
        log.info("resolving %s in %s: %s", attempt, partition.id, exc)
        return None
    return [bool(h) for h in (result.new or {}).get("held", [])]


async def clear_lock(
    ctx: RouterContext, partition: Partition, keys: Sequence[Key], lock: dict[str, Any]
) -> bool:
    """Try to remove another transaction's intent or read lock ``lock`` met on one of ``keys``
    (all in ``partition``; resolving an attempt on keys it does not hold changes nothing):
    resolve it if its attempt is decided (or stale, then aborted); True if it is now gone."""
    try:
        if lock.get("kind") == "read":
            now = time.time()
            readers = dict(lock.get("readers") or {})
            stale = [a for a, ts in readers.items() if now - float(ts) > READ_STALE]
            if len(stale) < len(readers):
                return False
            done = [await resolve(ctx, partition, a, False, keys) for a in stale]
            return all(d is not None for d in done)
        state = await fate(ctx, lock)
        if state is None:
            return False
        held = await resolve(ctx, partition, str(lock.get("txn")), state == "C", keys)
        return held is not None
    except DynamoError as exc:
        log.info("could not clear a lock in %s: %s", partition.id, exc.message)
        return False
