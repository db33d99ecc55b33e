"""ClientRequestToken idempotency for TransactWriteItems: one token row per token, in one place.

A token's row lives under the reserved table ``#tok`` at the SHA-256 of the token, in the
partition group of the transaction's first table that the token's hash falls in (not the first
item's group), so every request with the token and the same first table finds the same row,
whatever its items are, and the rows of a busy table spread over all its groups:

    {k: "tok:<sha256>", att: attempt id, dg: digest of the request's parameters, ts: claimed at,
     tbl, group: where the attempt's record lives (its home, ``txncoord.py``)}

While a tokened transaction prepares (in parallel: the claim costs no extra step), its
coordinator *claims* the token for its attempt with a conditional write, and commits only an
attempt whose claim succeeded: a new row if there is none, else a replacement of the row that
names an attempt known to be aborted. What an existing row means for a new request with the token:

- older than ``TOKEN_TTL`` (DynamoDB's 10 minutes): the token starts afresh (replaced);
- another digest: IdempotentParameterMismatchException, whatever the items are;
- its attempt committed: success without running again;
- its attempt pending and young: TransactionInProgressException;
- its attempt aborted, stale or never recorded: it is aborted for good (``P -> A``, or an ``A``
  tombstone where no record exists, so it can never commit later) and the row is replaced.

The replacement is conditional on the row still naming the attempt that was found aborted, so
two concurrent retries cannot both run. Rows are deleted by ``txngc.py`` once their window has
passed (conditionally on ``ts``: a row claimed again meanwhile stays).

    outcome = await claim(ctx, token, attempt, digest, home)   # "claimed" or "done"
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from cluster.metadata.partitionmap import Partition, TableLayout, partition_key_hash
from cluster.storage.commands import Condition, PutCommand
from cluster.storage.itemstore import encode_key_value

from .context import RouterContext
from .errors import DynamoError
from .txnrecords import (
    TXN_STALE,
    Unknown,
    decide,
    read_record,
    record_state,
    ts_of,
    write_command,
)

TOKENS = "#tok"
"""The reserved table of token rows (``#``: no user table can collide)."""
TOKEN_TTL = 600.0
"""ClientRequestToken idempotency window, as DynamoDB's: 10 minutes."""
CLAIM_ROUNDS = 4


def token_partition(layout: TableLayout, token: str) -> Partition:
    """The group of ``layout``'s table that holds ``token``'s row."""
    return layout.partition_for_hash(partition_key_hash(token_pk(token)))


def token_pk(token: str) -> bytes:
    return encode_key_value({"S": "tok:" + hashlib.sha256(token.encode()).hexdigest()})


def _row(token: str, attempt: str, digest: str, home: Partition) -> dict[str, Any]:
    return {
        "k": {"S": "tok:" + hashlib.sha256(token.encode()).hexdigest()},
        "att": {"S": attempt},
        "dg": {"S": digest},
        "ts": {"N": repr(time.time())},
        "tbl": {"S": home.table},
        "group": {"S": home.id},
    }


def mismatch() -> DynamoError:
    return DynamoError(
        "IdempotentParameterMismatchException",
        "The request uses the same client token as a previous, but non-identical request.",
    )


def in_progress() -> DynamoError:
    return DynamoError(
        "TransactionInProgressException",
        "The transaction with the given request token is already in progress.",
    )


async def claim(
    ctx: RouterContext,
    token: str,
    attempt: str,
    digest: str,
    home: Partition,
    layout: TableLayout,
    replacing: str | None = None,
) -> str:
    """Claim ``token`` for ``attempt`` (whose record will live in ``home``): "claimed", or
    "done" when an earlier attempt with the token committed (the request then succeeds without
    running). ``layout``: the request's first table. ``replacing``: this request's own
    previous attempt, known aborted, that the row probably names. Raises
    IdempotentParameterMismatch, TransactionInProgress, or 503 (the token's state could not be
    learnt: nothing was run)."""
    group = token_partition(layout, token)
    pk = token_pk(token)
    prev: str | None = replacing
    for _ in range(CLAIM_ROUNDS):
        if prev is None:
            cond = Condition("attribute_not_exists(#k)", {"#k": "k"})
        else:
            cond = Condition("#a = :prev", {"#a": "att"}, {":prev": {"S": prev}})
        put = PutCommand(TOKENS, pk, b"", _row(token, attempt, digest, home), cond)
        try:
            result = await write_command(ctx, group, put)
        except Unknown as exc:  # the claim may or may not be there; nothing ran either way
            why = f"the ClientRequestToken could not be claimed: {exc}"
            raise DynamoError.unavailable(why) from None
        if result.ok:
            return "claimed"
        row = result.old
        if row is None:  # the row named ``prev`` and is gone (swept): start afresh
            prev = None
            continue
        prev = await _taken(ctx, row, digest)
        if prev == "done":
            return "done"
    raise in_progress()  # others keep claiming the token: it is in use


async def _taken(ctx: RouterContext, row: dict[str, Any], digest: str) -> str:
    """What an existing token row means for a request with ``digest`` (see the module doc):
    "done", or the attempt it names, now known aborted (the caller may replace it)."""
    prev = str(row.get("att", {}).get("S"))
    if time.time() - ts_of(row) >= TOKEN_TTL:
        return prev  # expired: the token starts afresh
    if row.get("dg", {}).get("S") != digest:
        raise mismatch()
    home = await _home(ctx, row)
    if home is None:  # the attempt's table is gone, and its record with it
        return prev
    record = await read_record(ctx, home, prev)
    state = record_state(record)
    if state == "P" and record is not None and time.time() - ts_of(record) < TXN_STALE:
        raise in_progress()
    if state is None and time.time() - ts_of(row) < TXN_STALE:
        raise in_progress()  # claimed moments ago: its prepare may still create the record
    if state != "C":
        state = await decide(ctx, home, prev, commit=False)  # abort a stale or missing one
    if state == "C":
        return "done"
    if state is None:
        raise DynamoError.unavailable("the token's earlier attempt is still undecided")
    return prev


async def _home(ctx: RouterContext, row: dict[str, Any]) -> Partition | None:
    table = str(row.get("tbl", {}).get("S"))
    group = row.get("group", {}).get("S")
    try:
        layout = await ctx.table(table)
    except DynamoError as exc:
        if exc.type == "ResourceNotFoundException":
            return None
        raise
    return next((p for p in layout.partitions if p.id == group), None)
