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
     home group's prepare also creates the record ``P`` in the same log entry, naming every
     participant (group and key) for the sweeper. Intents block every other write to their
     item. A prepare whose outcome is unknown (no reply within a write attempt: a busy or
     cut-off leader) is never sent again; it is *learnt* by consistent reads of its items for
     up to one ``request_budget``: this attempt's intent on every one of them means it applied.
  2. Decide: if every group prepared, ``P -> C`` in the record; that Raft commit is the
     transaction's commit point. Otherwise ``P -> A`` and the cancellation reasons go back.
  3. Resolve: ``TxnResolveCommand`` per group writes the images (commit) or drops the intents
     (abort). Only after a committed record is the client told success; resolution failures
     after that are fine, because the record decides (below).

**Recovery.** An intent names its attempt and where its record lives. Whoever meets an intent
(a write refused with TransactionConflict, a consistent GetItem, another transaction) reads the
record: ``C`` or ``A`` -> resolve the intent accordingly; ``P`` and older than ``TXN_STALE`` ->
abort it (``P -> A``, which fails harmlessly if the coordinator committed first) and resolve;
``P`` and young -> the item is busy (TransactionConflict).

**When the coordinating router dies** (killed, powered off, cut off), at each point:
  - before any prepare applied: nothing exists; the client's request failed (or timed out), and
    its retry with the same ClientRequestToken runs afresh once the claim is seen stale;
  - after some or all prepares, before the decision: intents and a ``P`` record (or, if the
    home's prepare never applied, no record) are left. Until ``TXN_STALE`` their items answer
    TransactionConflict; then the first router to meet one (a write, a consistent GetItem,
    another transaction, a TransactGetItems, or the sweeper within ``txngc.SWEEP_SECONDS``)
    writes ``A`` (or an ``A`` tombstone where the record is missing, so that a late prepare can
    never commit) and rolls every intent back as it is met. Nothing was acknowledged;
  - after the commit point (``C`` written), before or during resolution: readers already see
    the new images (a consistent GetItem and TransactGetItems read through the record), and
    whoever meets an intent, or the sweeper, rolls it forward. The client may not have heard
    the success; its retry with the token answers success without running again.
The decision is the only step that changes an attempt's fate, and it is a Raft write in one
group: a dead coordinator can never leave a transaction half committed.

**Plain writes.** PutItem, UpdateItem, DeleteItem and BatchWriteItem that meet an intent (or a
read lock an older router left) resolve it if its attempt is decided or stale and try once
more; while it runs they answer TransactionConflictException (``txnhooks.py``), as DynamoDB
does.

**Reads.** TransactGetItems reads optimistically, as DynamoDB's read-only transactions do,
and takes no Raft step: a first consistent read at each group's leader returns its items with
any transaction intent on them and leaves a *read mark* on each for this reader
(``cluster/storage/readmarks.py``); a second one asks whether every mark is still there. Every
write a replica applies to an item drops its marks, so marks still held on every group (on the
node that read them) prove that no item changed between its two reads: all of them held the
values read at the instant between the last first read and the first second read, and no partial
transfer is ever visible. An item under a write intent cancels the read (TransactionConflict,
as in DynamoDB; a decided or stale intent is resolved first and the read runs again), a check
that fails makes it run again, within the budget. Readers never block writers (DynamoDB's
rule: a write conflicts with a TransactGetItems in progress only by making it fail). A
consistent GetItem that meets an intent returns the intent's image if the record says
committed, else the committed item (serializable, as DynamoDB's GetItem is); Query and Scan
return committed items (read-committed, as in DynamoDB).

**Idempotency.** With a ClientRequestToken, the coordinator claims the token's row while it
prepares (``txntokens.py``: found by the token and the first table, whatever the items): a
retry within
10 minutes with the same parameters returns success if the attempt it names committed,
TransactionInProgressException while it is pending, and runs again (replacing the row) once it
is aborted; any other parameters give IdempotentParameterMismatchException (a reuse whose
first table differs is not seen: the rows live in the tables' own groups, spreading the load a
single place could not carry on a small machine).

**Garbage collection.** Records and token rows are deleted by the routers' sweeper
(``txngc.py``) after the 10-minute window; a committed record only once its intents are proved
applied in every participant it names.

Correctness over speed: every step is a Raft-committed write; a step whose outcome is unknown
is never guessed. If the decision itself cannot be learnt within the budget the client gets a
500 (outcome unknown), never a success.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.dynamo.values import item_size
from cluster.metadata.partitionmap import Partition, TableLayout
from cluster.storage.commands import Condition, PutCommand, TxnOp, TxnPrepareCommand
from cluster.storage.intents import CONFLICT, CONFLICT_MESSAGE, NONE, RECORDS, conflict

from . import txntokens
from .context import RouterContext
from .errors import DynamoError
from .txnrecords import (
    READ_STALE,
    TXN_STALE,
    Key,
    Unknown,
    clear_lock,
    decide,
    read_record,
    record_pk,
    record_state,
    resolve,
    write_command,
)

__all__ = [  # the records' primitives, re-exported for the recovery tests and tools
    "READ_STALE",
    "TXN_STALE",
    "Placed",
    "TransactionCanceled",
    "Unknown",
    "decide",
    "read_record",
    "record_state",
    "transact_get",
    "transact_write",
]

log = logging.getLogger(__name__)

READ_ROUNDS = 12  # cheap (two leader reads per group) and bounded by the budget too
WRITE_ROUNDS = 3
_CONFLICT_SHOWN = {"Code": CONFLICT, "Message": CONFLICT_MESSAGE}


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


# --- TransactWriteItems ----------------------------------------------------------------------


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
    result = await write_command(ctx, ops[0].partition, cmd)
    payload = result.new or {}
    if not result.ok and "reasons" not in payload:
        raise Unknown(DynamoError.internal(result.message or "prepare failed"))
    return result.ok, payload


def _record_put(attempt: str, started: float, placed: Sequence[Placed] = ()) -> PutCommand:
    """The attempt's record, created pending by its home group's prepare (never overwritten:
    an attempt id is a fresh uuid, and a tombstone written by a resolver must win). It names
    every participant (group, table, key) so that the sweeper (``txngc.py``) can prove no
    intent of the attempt is left before it deletes the record."""
    item = {"k": {"S": attempt}, "st": {"S": "P"}, "ts": {"N": repr(started)}}
    if placed:
        item["parts"] = {"S": encode_parts(placed)}
    cond = Condition("attribute_not_exists(#k)", {"#k": "k"})
    return PutCommand(RECORDS, record_pk(attempt), b"", item, cond)


def encode_parts(placed: Sequence[Placed]) -> str:
    return json.dumps([[p.partition.id, p.op.tbl, p.op.pk.hex(), p.op.sk.hex()] for p in placed])


def decode_parts(record: dict[str, Any]) -> list[tuple[str, Key]]:
    """The participants a record names: ``[(group id, (table, pk, sk))]`` ([] if none)."""
    text = record.get("parts", {}).get("S")
    if not isinstance(text, str):
        return []
    return [(g, (t, bytes.fromhex(pk), bytes.fromhex(sk))) for g, t, pk, sk in json.loads(text)]


async def transact_write(
    ctx: RouterContext, placed: list[Placed], token: str | None, digest: str
) -> list[int] | None:
    """Run a write transaction to its end; returns only once it is committed (its record
    says C): each item's size in bytes (for capacity units), or None when an earlier request
    with the same ClientRequestToken had committed it (nothing ran again). Raises
    TransactionCanceled (definitely not applied), a 4xx, or a 5xx (503: not applied; 500:
    outcome unknown)."""
    end = time.monotonic() + 2 * ctx.request_budget
    previous: str | None = None
    for round_ in range(WRITE_ROUNDS):
        # Another round only after this one was cancelled by other transactions' locks alone
        # (cleared if they were decided or stale, else soon released), while time remains.
        attempt = uuid.uuid4().hex
        claim = None
        if token is not None:
            home = placed[0].partition
            layout = placed[0].layout
            claim = txntokens.claim(ctx, token, attempt, digest, home, layout, previous)
        previous = attempt
        try:
            return await _attempt(ctx, placed, attempt, claim)
        except _Conflicted as conflicted:
            if round_ + 1 == WRITE_ROUNDS or time.monotonic() > end:
                raise conflicted.canceled from None
            if not conflicted.cleared:
                await asyncio.sleep(0.05 * 2**round_)
    raise AssertionError("unreachable: the last round returns or raises")


class _Conflicted(Exception):
    """An attempt cancelled only by other transactions' locks (``cleared``: now gone)."""

    def __init__(self, canceled: TransactionCanceled, cleared: bool) -> None:
        super().__init__(canceled.message)
        self.canceled = canceled
        self.cleared = cleared


async def _attempt(
    ctx: RouterContext,
    placed: list[Placed],
    attempt: str,
    claim: Coroutine[Any, Any, str] | None,
) -> list[int] | None:
    """One attempt: prepare everywhere (the home group also creates the record) while the
    ClientRequestToken, if any, is ``claim``-ed for it; decide; resolve. Returns the items'
    sizes once committed, None if the token's earlier attempt had committed (this one is then
    aborted); raises as ``transact_write``. A tokened attempt that does not commit always
    leaves a decided record (``A``), so that a retry with its token knows at once that it may
    run again."""
    started = time.time()
    home = placed[0].partition
    rec = {"tbl": placed[0].layout.spec.name, "group": home.id}
    groups = _by_group(placed)
    records = (_record_put(attempt, started, placed),)
    steps = [
        _prepare(ctx, ops, attempt, rec, started, False, records if gid == home.id else ())
        for gid, ops in groups.items()
    ]
    outcomes = await asyncio.gather(*steps, *([claim] if claim else []), return_exceptions=True)
    claimed: str | BaseException = outcomes.pop() if claim else "claimed"
    if claimed == "claimed":  # else the attempt cannot commit: nothing worth learning
        outcomes = await _learn_unknown_prepares(ctx, list(groups.values()), outcomes, attempt)
    reasons: dict[int, dict[str, Any]] = {p.index: {"Code": NONE} for p in placed}
    sizes: dict[int, int] = {p.index: 0 for p in placed}
    failure: BaseException | None = None
    all_prepared = True
    home_answered: bool | None = None
    refused: set[str] = set()  # groups whose prepare was refused: they wrote nothing
    for (gid, ops), outcome in zip(groups.items(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            all_prepared, failure = False, outcome
            continue
        ok, payload = outcome
        all_prepared = all_prepared and ok
        if not ok:
            refused.add(gid)
        if gid == home.id:
            home_answered = not ok  # True: the home group definitely refused
        for p, reason in zip(ops, payload.get("reasons", []), strict=False):
            reasons[p.index] = reason
        for p, size in zip(ops, payload.get("sizes", []), strict=False):
            sizes[p.index] = int(size)
    if all_prepared and claimed == "claimed":
        state = await decide(ctx, home, attempt, commit=True)
        if state == "C":  # the commit point has passed: roll forward, then acknowledge
            await _resolve_groups(ctx, groups, attempt, True)
            return [sizes[p.index] for p in placed]
        if state is None:
            raise DynamoError.internal(
                "The transaction's outcome is unknown: its decision could not be confirmed"
            )
        reasons = {i: _CONFLICT_SHOWN for i in reasons}  # someone found it stale: aborted
    elif home_answered is not True or claim is not None:
        # The record exists (home prepared) or may yet be created (its prepare's fate is
        # unknown): decide abort. A home prepare that failed outright created nothing; under a
        # token the abort is written anyway (a tombstone), for the token's next request.
        decided = await decide(ctx, home, attempt, commit=False)  # the record decides
        if decided is None:
            _abort_in_background(ctx, home, attempt, started)
    # Roll back where intents may be: a group that refused its prepare stored none (a prepare
    # is all or none in its group), so under contention no Raft write is spent on it.
    await _resolve_groups(
        ctx, {g: o for g, o in groups.items() if g not in refused}, attempt, False
    )
    if claimed == "done":
        return None  # an earlier request with the token committed: nothing runs again
    if isinstance(claimed, BaseException):
        raise claimed  # mismatch, in progress, or the token could not be claimed
    if failure is not None:
        if isinstance(failure, Unknown):
            raise DynamoError.unavailable(f"the transaction was not applied: {failure}")
        raise failure
    canceled = TransactionCanceled([_client_reason(reasons[p.index], p) for p in placed])
    codes = {r.get("Code") for r in reasons.values()}
    cleared = await _clear_conflicts(ctx, placed, reasons)
    if codes <= {NONE, CONFLICT}:
        raise _Conflicted(canceled, cleared)
    raise canceled


_abandoned: set[asyncio.Task[None]] = set()  # strong references to the tasks below


def _abort_in_background(ctx: RouterContext, home: Partition, attempt: str, started: float) -> None:
    """Keep trying to abort an attempt this coordinator gave up on (its home group had no
    reachable leader within the budget, as in a split), until it is decided or ``TXN_STALE``
    has passed (then whoever meets its intents aborts it anyway). A retry with the same
    ClientRequestToken, and every transaction meeting its intents, then find it aborted as
    soon as the home group elects a leader, instead of waiting for it to go stale. Safe at
    any time: the abort is conditional on the record still pending, and this coordinator
    never commits the attempt (its client was told it was not applied)."""

    async def run() -> None:
        while time.time() - started < TXN_STALE:
            if await decide(ctx, home, attempt, commit=False) is not None:
                return
            await asyncio.sleep(0.1)

    task = asyncio.create_task(run(), name=f"txn-abort-{attempt}")
    _abandoned.add(task)
    task.add_done_callback(_abandoned.discard)


async def _learn_unknown_prepares(
    ctx: RouterContext, groups: list[list[Placed]], outcomes: list[Any], attempt: str
) -> list[Any]:
    """``outcomes`` with each prepare whose outcome was unknown replaced by "prepared" where
    the group is found to hold this attempt's intent on every one of its items.

    A prepare's Raft step may take longer than a write attempt (a busy leader answers
    OutcomeUnknown after ``write_attempt``), or its reply may be lost with a leader that was
    cut off after replicating it. The command is never sent again (a duplicate could apply
    after the attempt was resolved, and lock the items afresh): its outcome is *learnt*, by
    consistent reads of the group's items for up to one ``request_budget``. A prepare is all
    or none in its group, so intents of this attempt on every item prove it applied (and,
    in the home group, the record with it); none seen in time -> the outcome stays unknown
    and the attempt is aborted as before (a prepare applied later only leaves intents of an
    aborted attempt, which whoever meets them rolls back). Only while the attempt can still
    commit: a group that refused, or failed otherwise, aborts it whatever is learnt, and the
    abort should not wait."""
    unknown = [i for i, o in enumerate(outcomes) if isinstance(o, Unknown)]
    known = [o for o in outcomes if not isinstance(o, Unknown)]
    if not unknown or not all(isinstance(o, tuple) and o[0] for o in known):
        return outcomes
    learnt = await asyncio.gather(*(_prepared_intents(ctx, groups[i], attempt) for i in unknown))
    out = list(outcomes)
    for i, sizes in zip(unknown, learnt, strict=True):
        if sizes is not None:
            out[i] = (True, {"reasons": [{"Code": NONE} for _ in groups[i]], "sizes": sizes})
    return out


async def _prepared_intents(
    ctx: RouterContext, ops: list[Placed], attempt: str
) -> list[int] | None:
    """The items' sizes once every item of ``ops`` holds ``attempt``'s intent; None if that
    was not seen within one request budget."""
    end = time.monotonic() + ctx.request_budget
    partition = ops[0].partition
    while (remaining := end - time.monotonic()) > 0:
        try:
            replies = await asyncio.gather(
                *(
                    ctx.storage.read(
                        partition, "get", True, remaining, tbl=p.op.tbl, pk=p.op.pk, sk=p.op.sk
                    )
                    for p in ops
                )
            )
        except DynamoError as exc:
            log.info("learning a prepare of %s in %s: %s", attempt, partition.id, exc.message)
        else:
            locks = [r.get("lock") or {} for r in replies]
            if all(lock.get("txn") == attempt for lock in locks):
                return [
                    max(item_size(r.get("item") or {}), item_size(lock.get("image") or {}))
                    for r, lock in zip(replies, locks, strict=True)
                ]
        await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))
    return None


async def _resolve_groups(
    ctx: RouterContext, groups: dict[str, list[Placed]], attempt: str, commit: bool
) -> list[list[bool] | None]:
    """Resolve ``attempt`` in every group; each group's held flags (None: no answer)."""
    return await asyncio.gather(
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
        clear_lock(ctx, p.partition, [p.key], reasons[p.index]["lock"])
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
    """The items of ``placed``, all as they were at one instant (read marks, see above)."""
    groups = _by_group(placed)
    last: list[dict[str, Any]] = []
    end = time.monotonic() + 2 * ctx.request_budget
    for _ in range(READ_ROUNDS):
        reader = uuid.uuid4().hex
        # A group that cannot be read fails the request (503: a read changes nothing).
        reads = await asyncio.gather(*(_read_marked(ctx, ops, reader) for ops in groups.values()))
        items: dict[int, dict[str, Any] | None] = {}
        reasons: dict[int, dict[str, Any]] = {}
        nodes: list[str] = []
        for ops, outcome in zip(groups.values(), reads, strict=True):
            nodes.append(str(outcome.get("node")))
            for p, item, lock in zip(ops, outcome["items"], outcome["locks"], strict=True):
                items[p.index] = item
                # A write intent: the item is in a transaction that may still change it
                # (DynamoDB cancels the read). Read locks of older routers do not matter.
                held = lock is not None and lock.get("kind") != "read"
                reasons[p.index] = conflict(lock) if held else {"Code": NONE}
        if all(r.get("Code") == NONE for r in reasons.values()):
            checks = await asyncio.gather(
                *(
                    _check_marked(ctx, ops, reader, node)
                    for ops, node in zip(groups.values(), nodes, strict=True)
                )
            )
            if all(checks):  # no write was applied to any item between its two reads
                return [items[p.index] for p in placed]
            last = [_CONFLICT_SHOWN for _ in placed]  # changed while read: read again
        else:
            last = [_client_reason(reasons[p.index]) for p in placed]
            if time.monotonic() > end:
                break
            if not await _clear_conflicts(ctx, placed, reasons):
                # Held by a young transaction: it commits or aborts within moments.
                await asyncio.sleep(0.05)
        if time.monotonic() > end:
            break
    raise TransactionCanceled(last or [_CONFLICT_SHOWN for _ in placed])


async def _read_marked(ctx: RouterContext, ops: list[Placed], reader: str) -> dict[str, Any]:
    """One group's items and intents, read and marked for ``reader`` at its leader."""
    keys = [list(p.key) for p in ops]
    partition = ops[0].partition
    return await ctx.storage.read(
        partition, "txn_read", True, ctx.request_budget, reader=reader, keys=keys
    )


async def _check_marked(ctx: RouterContext, ops: list[Placed], reader: str, node: str) -> bool:
    """Whether ``reader``'s marks in one group all held on ``node`` (False if unknown)."""
    keys = [list(p.key) for p in ops]
    try:
        reply = await ctx.storage.read(
            ops[0].partition, "txn_check", True, ctx.request_budget, reader=reader, keys=keys
        )
    except DynamoError as exc:
        log.info("checking read marks in %s: %s", ops[0].partition.id, exc.message)
        return False
    held = reply.get("held") or []
    return reply.get("node") == node and len(held) == len(keys) and all(held)
