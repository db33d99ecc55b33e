"""The transaction coordinator: atomic TransactWriteItems / TransactGetItems across partitions.

The protocol is two-phase commit whose coordinator state is itself replicated, so that no router
is a single point of failure: any router can finish or roll back a transaction whose router
died, and none ever acknowledges a commit that could still be lost or half-applied.

**Records.** Every write transaction attempt has an id and a *record*: an item of the reserved
table ``#txn`` in the partition group of the transaction's first item (its *home*), written
through that group's Raft log like any item, ``{k: attempt, st: P | C | A, ts}``. The record
is the one place the attempt's fate is decided: ``P`` (pending) becomes ``C`` (committed) or
``A`` (aborted) by a conditional write that requires ``st = P``, so Raft orders the two
possible decisions and exactly one wins. A missing record means "never committed" (a commit is
a conditional update of an existing ``P`` record), and whoever finds one missing writes an
``A`` tombstone, so it can never be created later.

**Write transaction** (three Raft steps, each in parallel over the groups it touches):
  1. Prepare: one ``TxnPrepareCommand`` per participant group. Each group checks its items (no
     other transaction's intent, conditions true against committed state) and, only if all
     pass, stores an intent (the new image) beside each item (cluster/storage/intents.py); the
     home group's prepare also creates the record ``P`` (and the token row, below) in the same
     log entry. Intents block every other write to their item.
  2. Decide: if every group prepared, ``P -> C`` in the record; that Raft commit is the
     transaction's commit point. Otherwise ``P -> A`` and the cancellation reasons go back.
  3. Resolve: ``TxnResolveCommand`` per group writes the images (commit) or drops the intents
     (abort). Only after a committed record is the client told success; resolution failures
     after that are fine, because the record decides (below).

**Recovery.** An intent names its attempt and where its record lives. Whoever meets an intent
(a write refused with TransactionConflict, a consistent GetItem, another transaction) reads the
record: ``C`` or ``A`` -> resolve the intent accordingly; ``P`` and older than ``TXN_STALE`` ->
abort it (``P -> A``, which fails harmlessly if the coordinator committed first) and resolve;
``P`` and young -> the item is busy (TransactionConflict). A router that crashes between prepare
and commit thus leaves intents that the next router to touch them rolls back, and one that
crashes after the commit point leaves intents that are rolled forward.

**Reads.** TransactGetItems takes shared read locks through Raft in every group it reads (a
prepare with ``read``), reads the items under them, then releases them; the release reports
whether each lock was still held, so the items were all unchanged at one instant (after the
last lock was taken, before the first was released): no partial transfer is ever visible.
Locks of readers older than ``READ_STALE`` may be taken away by writers (a reader that lost a
lock retries). A consistent GetItem that meets an intent returns the intent's image if the
record says committed, else the committed item (serializable, as DynamoDB's GetItem is);
Query and Scan return committed items (read-committed, as in DynamoDB).

**Idempotency.** With a ClientRequestToken, a token row ``tok:<sha256>`` in the home group
names the attempt (created by the home prepare only if absent). When it exists already, the
attempt is aborted and the row decides: a retry within 10 minutes with the same parameters
returns success if that attempt committed, TransactionInProgressException while it is pending,
and runs again (replacing the row) if it was aborted; other parameters give
IdempotentParameterMismatchException. (The token is looked up
in the first item's group, so a reuse whose first item differs is not detected.)

Correctness over speed: every step is a Raft-committed write; a step whose outcome is unknown
is never guessed. If the decision itself cannot be learnt within the budget the client gets a
500 (outcome unknown), never a success.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cluster.metadata.partitionmap import Partition, TableLayout
from cluster.storage.commands import (
    ApplyResult,
    Command,
    Condition,
    PutCommand,
    TxnOp,
    TxnPrepareCommand,
    TxnResolveCommand,
    UpdateCommand,
)
from cluster.storage.intents import CONFLICT, CONFLICT_MESSAGE, NONE, RECORDS
from cluster.storage.itemstore import encode_key_value

from .context import RouterContext
from .errors import DynamoError

log = logging.getLogger(__name__)

TXN_STALE = 5.0
"""Seconds after which a pending write transaction may be aborted by anyone who meets it (its
coordinator answers its client well before: four Raft steps of ``request_budget`` each)."""
READ_STALE = 4.0
"""Seconds after which a TransactGetItems' read lock may be taken away by a writer."""
TOKEN_TTL = 600.0
"""ClientRequestToken idempotency window, as DynamoDB's: 10 minutes."""
READ_ROUNDS = 6
WRITE_ROUNDS = 3
_CONFLICT_SHOWN = {"Code": CONFLICT, "Message": CONFLICT_MESSAGE}

Key = tuple[str, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Placed:
    """One op of a transaction, validated and placed on its partition."""

    index: int  # position in TransactItems
    layout: TableLayout
    partition: Partition
    op: TxnOp
    wants_old: bool = False  # ReturnValuesOnConditionCheckFailure=ALL_OLD

    @property
    def key(self) -> Key:
        return (self.op.tbl, self.op.pk, self.op.sk)


class TransactionCanceled(DynamoError):
    """TransactionCanceledException with DynamoDB's shape: ``Message`` and one entry of
    ``CancellationReasons`` per item, ``{"Code": "None"}`` for the items that were fine."""

    def __init__(self, reasons: Sequence[dict[str, Any]]) -> None:
        codes = ", ".join(str(r["Code"]) for r in reasons)
        message = (
            "Transaction cancelled, please refer cancellation reasons for specific reasons "
            f"[{codes}]"
        )
        super().__init__("TransactionCanceledException", message)
        self.reasons = list(reasons)

    def body(self) -> dict[str, Any]:
        return {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": self.message,
            "CancellationReasons": self.reasons,
        }


class _Unknown(Exception):
    """A step whose outcome is not known (or a group that did not answer)."""

    def __init__(self, error: DynamoError) -> None:
        super().__init__(error.message)
        self.error = error


# --- records ---------------------------------------------------------------------------------

_NAMES = {"#k": "k", "#s": "st", "#a": "att"}


def _record_pk(key: str) -> bytes:
    return encode_key_value({"S": key})


async def _write(ctx: RouterContext, partition: Partition, cmd: Command) -> ApplyResult:
    """One Raft-committed command; ``_Unknown`` if its outcome is not known."""
    try:
        return await ctx.storage.write(partition, cmd, ctx.request_budget)
    except DynamoError as exc:
        if exc.status >= 500:
            raise _Unknown(exc) from None
        raise


async def read_record(ctx: RouterContext, home: Partition, key: str) -> dict[str, Any] | None:
    reply = await ctx.storage.read(
        home, "get", True, ctx.request_budget, tbl=RECORDS, pk=_record_pk(key), sk=b""
    )
    item: dict[str, Any] | None = reply.get("item")
    return item


def record_state(record: dict[str, Any] | None) -> str | None:
    return None if record is None else str(record.get("st", {}).get("S"))


def _ts(record: dict[str, Any]) -> float:
    return float(record.get("ts", {}).get("N", "0"))


async def decide(ctx: RouterContext, home: Partition, attempt: str, commit: bool) -> str | None:
    """Make the attempt's decision (``P -> C`` or ``P -> A``) or learn the one already made.

    Returns "C" or "A" (final, Raft-committed), or None if it could not be learnt within the
    budget (the caller must then not claim either outcome)."""
    pk = _record_pk(attempt)
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
            result = await _write(ctx, home, cmd)
        except _Unknown:
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
    started = _ts(record) if record is not None else float(lock.get("ts", 0.0))
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
        result = await _write(ctx, partition, TxnResolveCommand(attempt, commit, tuple(keys)))
    except (_Unknown, DynamoError) as exc:
        log.info("resolving %s in %s: %s", attempt, partition.id, exc)
        return None
    return [bool(h) for h in (result.new or {}).get("held", [])]


async def clear_lock(
    ctx: RouterContext, partition: Partition, key: Key, lock: dict[str, Any]
) -> bool:
    """Try to remove another transaction's intent or read lock from ``key``: resolve it if its
    attempt is decided (or stale, then aborted); True if the item is now free of it."""
    try:
        if lock.get("kind") == "read":
            now = time.time()
            readers = dict(lock.get("readers") or {})
            stale = [a for a, ts in readers.items() if now - float(ts) > READ_STALE]
            if len(stale) < len(readers):
                return False
            done = [await resolve(ctx, partition, a, False, [key]) for a in stale]
            return all(d is not None for d in done)
        state = await fate(ctx, lock)
        if state is None:
            return False
        held = await resolve(ctx, partition, str(lock.get("txn")), state == "C", [key])
        return held is not None
    except DynamoError as exc:
        log.info("could not clear a lock on %r: %s", key, exc.message)
        return False


# --- TransactWriteItems ----------------------------------------------------------------------


def token_key(token: str) -> str:
    return "tok:" + hashlib.sha256(token.encode()).hexdigest()


def _by_group(placed: Sequence[Placed]) -> dict[str, list[Placed]]:
    groups: dict[str, list[Placed]] = {}
    for p in placed:
        groups.setdefault(p.partition.id, []).append(p)
    return groups


async def _prepare(
    ctx: RouterContext,
    ops: list[Placed],
    attempt: str,
    rec: dict[str, str],
    started: float,
    read: bool,
    records: tuple[PutCommand, ...] = (),
) -> tuple[bool, dict[str, Any]]:
    cmd = TxnPrepareCommand(attempt, rec, started, tuple(p.op for p in ops), read, records)
    result = await _write(ctx, ops[0].partition, cmd)
    payload = result.new or {}
    if not result.ok and "reasons" not in payload:
        raise _Unknown(DynamoError.internal(result.message or "prepare failed"))
    return result.ok, payload


def _record_put(attempt: str, started: float) -> PutCommand:
    """The attempt's record, created pending by its home group's prepare (never overwritten:
    an attempt id is a fresh uuid, and a tombstone written by a resolver must win)."""
    item = {"k": {"S": attempt}, "st": {"S": "P"}, "ts": {"N": repr(started)}}
    cond = Condition("attribute_not_exists(#k)", {"#k": "k"})
    return PutCommand(RECORDS, _record_pk(attempt), b"", item, cond)


def _token_put(token: str, attempt: str, digest: str, prev: str | None) -> PutCommand:
    """The ClientRequestToken row naming ``attempt``: new, or replacing attempt ``prev``."""
    tkey = token_key(token)
    item = {
        "k": {"S": tkey},
        "att": {"S": attempt},
        "dg": {"S": digest},
        "ts": {"N": repr(time.time())},
    }
    if prev is None:
        cond = Condition("attribute_not_exists(#k)", {"#k": "k"})
    else:
        cond = Condition("#a = :prev", {"#a": "att"}, {":prev": {"S": prev}})
    return PutCommand(RECORDS, _record_pk(tkey), b"", item, cond)


async def _token_taken(
    ctx: RouterContext, home: Partition, row: dict[str, Any], digest: str
) -> str:
    """What an existing token row means for a new request with the token: raises if the
    request must not run (mismatch, or the earlier attempt still running), returns "done"
    when an earlier attempt committed (the request succeeds without running again), else the
    earlier attempt's id, which the new attempt may replace."""
    prev = str(row.get("att", {}).get("S"))
    if time.time() - _ts(row) >= TOKEN_TTL:
        return prev  # expired: the token starts afresh
    if row.get("dg", {}).get("S") != digest:
        raise DynamoError(
            "IdempotentParameterMismatchException",
            "The request uses the same client token as a previous, but non-identical request.",
        )
    record = await read_record(ctx, home, prev)
    state = record_state(record)
    if state == "P" and record is not None and time.time() - _ts(record) < TXN_STALE:
        raise _in_progress()
    if state != "C":
        state = await decide(ctx, home, prev, commit=False)  # abort a stale or missing one
    if state == "C":
        return "done"
    if state is None:
        raise DynamoError.unavailable("the token's earlier attempt is still undecided")
    return prev


def _in_progress() -> DynamoError:
    return DynamoError(
        "TransactionInProgressException",
        "The transaction with the given request token is already in progress.",
    )


async def transact_write(
    ctx: RouterContext, placed: list[Placed], token: str | None, digest: str
) -> None:
    """Run a write transaction to its end; returns only once it is committed (its record
    says C). Raises TransactionCanceled (definitely not applied), a 4xx, or a 5xx (503: not
    applied; 500: outcome unknown)."""
    home = placed[0].partition
    prev: str | None = None
    end = time.monotonic() + 2 * ctx.request_budget
    for round_ in range(WRITE_ROUNDS):
        # Another round only after this one was cancelled by other transactions' locks alone
        # (cleared if they were decided or stale, else soon released), while time remains; or
        # to replace an aborted attempt under the token.
        attempt = uuid.uuid4().hex
        records = [_record_put(attempt, time.time())]
        if token is not None:
            records.append(_token_put(token, attempt, digest, prev))
        try:
            taken = await _attempt(ctx, placed, attempt, tuple(records))
        except _Conflicted as conflicted:
            if round_ + 1 == WRITE_ROUNDS or time.monotonic() > end:
                raise conflicted.canceled from None
            if not conflicted.cleared:
                await asyncio.sleep(0.05 * 2**round_)
            continue
        if taken is None:
            return
        prev = await _token_taken(ctx, home, taken, digest)
        if prev == "done":
            return
    raise _in_progress()


class _Conflicted(Exception):
    """An attempt cancelled only by other transactions' locks (``cleared``: now gone)."""

    def __init__(self, canceled: TransactionCanceled, cleared: bool) -> None:
        super().__init__(canceled.message)
        self.canceled = canceled
        self.cleared = cleared


async def _attempt(
    ctx: RouterContext, placed: list[Placed], attempt: str, records: tuple[PutCommand, ...]
) -> dict[str, Any] | None:
    """One attempt: prepare everywhere (the home group also creates the record and the token
    row), decide, resolve. Returns None once committed, or the token row that another attempt
    holds (this one is then aborted); raises as ``transact_write``."""
    started = time.time()
    home = placed[0].partition
    rec = {"tbl": placed[0].layout.spec.name, "group": home.id}
    groups = _by_group(placed)
    outcomes = await asyncio.gather(
        *(
            _prepare(ctx, ops, attempt, rec, started, False, records if gid == home.id else ())
            for gid, ops in groups.items()
        ),
        return_exceptions=True,
    )
    reasons: dict[int, dict[str, Any]] = {p.index: {"Code": NONE} for p in placed}
    failure: BaseException | None = None
    all_prepared = True
    home_answered: bool | None = None
    taken: dict[str, Any] | None = None
    for (gid, ops), outcome in zip(groups.items(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            all_prepared, failure = False, outcome
            continue
        ok, payload = outcome
        all_prepared = all_prepared and ok
        if gid == home.id:
            home_answered = not ok  # True: the home group definitely refused
        for p, reason in zip(ops, payload.get("reasons", []), strict=False):
            reasons[p.index] = reason
        if gid == home.id and len(payload.get("records", [])) > 1:
            token_row = payload["records"][1]
            if token_row.get("Code") != NONE and token_row.get("old"):
                taken = token_row["old"]
    if all_prepared:
        state = await decide(ctx, home, attempt, commit=True)
        if state == "C":  # the commit point has passed: roll forward, then acknowledge
            await _resolve_groups(ctx, groups, attempt, True)
            return None
        if state is None:
            raise DynamoError.internal(
                "The transaction's outcome is unknown: its decision could not be confirmed"
            )
        reasons = {i: _CONFLICT_SHOWN for i in reasons}  # someone found it stale: aborted
    elif home_answered is not True:
        # The record exists (home prepared) or may yet be created (its prepare's fate is
        # unknown): decide abort. A home prepare that failed outright created nothing.
        await decide(ctx, home, attempt, commit=False)  # best effort: the record decides
    await _resolve_groups(ctx, groups, attempt, False)
    if taken is not None:
        return taken
    if failure is not None:
        if isinstance(failure, _Unknown):
            raise DynamoError.unavailable(f"the transaction was not applied: {failure}")
        raise failure
    canceled = TransactionCanceled([_client_reason(reasons[p.index], p) for p in placed])
    codes = {r.get("Code") for r in reasons.values()}
    cleared = await _clear_conflicts(ctx, placed, reasons)
    if codes <= {NONE, CONFLICT}:
        raise _Conflicted(canceled, cleared)
    raise canceled


async def _resolve_groups(
    ctx: RouterContext, groups: dict[str, list[Placed]], attempt: str, commit: bool
) -> None:
    await asyncio.gather(
        *(
            resolve(ctx, ops[0].partition, attempt, commit, [p.key for p in ops])
            for ops in groups.values()
        )
    )


async def _clear_conflicts(
    ctx: RouterContext, placed: Sequence[Placed], reasons: dict[int, dict[str, Any]]
) -> bool:
    """Resolve the decided or stale locks the transaction met, so that a retry can pass; True
    if every one was cleared."""
    jobs = [
        clear_lock(ctx, p.partition, p.key, reasons[p.index]["lock"])
        for p in placed
        if reasons[p.index].get("Code") == CONFLICT and reasons[p.index].get("lock")
    ]
    return all(await asyncio.gather(*jobs)) if jobs else False


def _client_reason(reason: dict[str, Any], placed: Placed | None = None) -> dict[str, Any]:
    """A reason as DynamoDB shows it (the lock and the old item are router-internal)."""
    shown = {k: v for k, v in reason.items() if k in ("Code", "Message")}
    old = reason.get("old")
    if placed is not None and old and placed.wants_old:
        shown["Item"] = old
    return shown


# --- TransactGetItems ------------------------------------------------------------------------


async def transact_get(ctx: RouterContext, placed: list[Placed]) -> list[dict[str, Any] | None]:
    """The items of ``placed``, all as they were at one instant (read locks, see above)."""
    groups = _by_group(placed)
    last: list[dict[str, Any]] = []
    end = time.monotonic() + 2 * ctx.request_budget
    for _ in range(READ_ROUNDS):
        attempt = uuid.uuid4().hex
        outcomes = await asyncio.gather(
            *(_prepare(ctx, ops, attempt, {}, time.time(), True) for ops in groups.values()),
            return_exceptions=True,
        )
        items: dict[int, dict[str, Any] | None] = {}
        reasons: dict[int, dict[str, Any]] = {}
        failure: BaseException | None = None
        for ops, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = outcome
                continue
            _, payload = outcome
            for p, item, reason in zip(ops, payload["items"], payload["reasons"], strict=True):
                items[p.index], reasons[p.index] = item, reason
        held = await asyncio.gather(
            *(
                resolve(ctx, ops[0].partition, attempt, False, [p.key for p in ops])
                for ops in groups.values()
            )
        )
        if failure is not None:
            if isinstance(failure, _Unknown):  # a read changes nothing: not applied
                raise DynamoError.unavailable(f"the read could not lock: {failure}")
            raise failure
        if all(r.get("Code") == NONE for r in reasons.values()):
            if all(h is not None and all(h) for h in held):
                return [items[p.index] for p in placed]
            continue  # a lock was taken away (or its release unconfirmed): read again
        last = [_client_reason(reasons[p.index]) for p in placed]
        if time.monotonic() > end:
            break
        if not await _clear_conflicts(ctx, placed, reasons):
            # Held by a young transaction: it commits or aborts within moments.
            await asyncio.sleep(0.05)
    raise TransactionCanceled(last or [_CONFLICT_SHOWN for _ in placed])
