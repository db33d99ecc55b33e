"""Where plain item operations meet transactions (the protocol is in ``txncoord.py``).

A plain write refused because a transaction holds its item (TransactionConflict, with the lock)
resolves that transaction if it is decided or stale and tries once more, and answers
TransactionConflictException when the transaction is still running (DynamoDB's answer to a
PutItem, UpdateItem, DeleteItem or BatchWriteItem that meets an ongoing transaction; a
BatchWriteItem's writes in other partitions may have been applied, as a batch is not atomic
in DynamoDB either); a consistent GetItem
that finds an intent returns the intent's image once the transaction's record says committed.

    result = await write_item(ctx, partition, PutCommand(...))     # items.py's writes
    result = await write_batch(ctx, partition, BatchWriteCommand(...))   # BatchWriteItem
    item = await visible_item(ctx, partition, key, item, lock)       # items.py's GetItem
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.metadata.partitionmap import Partition
from cluster.storage.commands import TXN_CONFLICT, ApplyResult, BatchWriteCommand
from cluster.storage.intents import CONFLICT_MESSAGE

from .context import RouterContext
from .errors import DynamoError
from .txnrecords import Key, clear_lock, home_of, read_record, record_state, resolve


async def write_item(ctx: RouterContext, partition: Partition, cmd: Any) -> ApplyResult:
    """A plain write (put/update/delete): if a transaction holds the item, resolve it if it
    is decided or stale and try once more; still held -> TransactionConflictException."""
    result = await ctx.storage.write(partition, cmd, ctx.request_budget)
    if result.error != TXN_CONFLICT:
        return result
    key = (cmd.tbl, cmd.pk, cmd.sk)
    if await clear_lock(ctx, partition, [key], result.old or {}):
        # The refused write was not applied (a definite answer): sending it again is safe.
        result = await ctx.storage.write(partition, cmd, ctx.request_budget)
    if result.error == TXN_CONFLICT:
        raise DynamoError("TransactionConflictException", CONFLICT_MESSAGE)
    return result


async def write_batch(
    ctx: RouterContext, partition: Partition, cmd: BatchWriteCommand
) -> ApplyResult:
    """BatchWriteItem's writes in one group (applied all or none by the group): each
    transaction met on one of the items is resolved if decided or stale, then the writes are
    sent again; one still running -> TransactionConflictException."""
    keys = [(w.tbl, w.pk, w.sk) for w in cmd.writes]
    for _ in range(len(keys) + 1):  # each round clears one lock (or stops)
        result = await ctx.storage.write(partition, cmd, ctx.request_budget)
        if result.error != TXN_CONFLICT:
            return result
        if not await clear_lock(ctx, partition, keys, result.old or {}):
            break
    raise DynamoError("TransactionConflictException", CONFLICT_MESSAGE)


_background: set[asyncio.Task[Any]] = set()


async def visible_item(
    ctx: RouterContext, partition: Partition, key: Key, item: Any, lock: dict[str, Any]
) -> Any:
    """What a consistent GetItem returns for ``item`` under ``lock``: the intent's image once
    its record says committed (resolving it in the background), else the committed item."""
    if lock.get("kind") not in ("put", "delete"):
        return item
    home = await home_of(ctx, lock.get("rec") or {})
    if record_state(await read_record(ctx, home, str(lock.get("txn")))) != "C":
        return item
    task = asyncio.create_task(resolve(ctx, partition, str(lock.get("txn")), True, [key]))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return lock.get("image")
