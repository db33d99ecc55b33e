"""A coordinator that dies mid-transaction: other routers finish or roll back its work.

The coordinator runs in this test process (a RouterContext of its own, on the session cluster)
and stops at the worst moments of two-phase commit: after every group prepared but before the
decision (the transaction must roll back, once stale, and nothing of it may show), and right
after the commit point but before any group applied it (every reader must see it committed at
once, and the items are rolled forward by whoever meets them). The clients are boto3 on the
cluster's own routers, which never heard of the transaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos.backends.local import LocalCluster
from cluster import auth
from cluster.metadata.partitionmap import TableLayout
from cluster.router import txncoord, txngc, txntokens
from cluster.router.context import RouterContext
from cluster.router.errors import DynamoError
from cluster.router.transact import _digest, _place_write
from cluster.storage.intents import RECORDS, lock_table
from cluster.storage.itemstore import encode_key_value
from tests.conftest import client_for

pytestmark = pytest.mark.slow
Client = Any


@pytest.fixture(scope="module")
def table(local_cluster: LocalCluster) -> Iterator[str]:
    ddb = client_for(local_cluster)
    name = f"txnrec-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
    yield name
    ddb.delete_table(TableName=name)


def other_router(cluster: LocalCluster, router: str) -> Client:
    # Retries of 5xx only (an election on a busy machine); TransactionConflict is a 400.
    config = Config(retries={"mode": "standard", "max_attempts": 4}, read_timeout=30)
    return client_for(cluster, router=router, config=config)


async def layout_of(cluster: LocalCluster, table: str) -> TableLayout:
    auth.install(cluster.config.internal_secret())
    async with aiohttp.ClientSession() as session:
        ctx = RouterContext(cluster.config, "rt-a", session)
        await ctx.start()
        try:
            return await ctx.table(table)
        finally:
            await ctx.stop()


def two_accounts(cluster: LocalCluster, ddb: Client, table: str) -> tuple[str, str]:
    """Two fresh accounts with 100 each, on different partitions."""
    layout = asyncio.run(layout_of(cluster, table))

    def group(account: str) -> str:
        return layout.partition_for(encode_key_value({"S": account})).id

    a = f"acct-{uuid.uuid4().hex[:8]}"
    b = next(
        x for x in (f"acct-{uuid.uuid4().hex[:8]}" for _ in range(1000)) if group(x) != group(a)
    )
    for account in (a, b):
        ddb.put_item(TableName=table, Item={"id": {"S": account}, "bal": {"N": "100"}})
    return a, b


def transfer_items(table: str, src: str, dst: str) -> list[dict[str, Any]]:
    def update(account: str, sign: str) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": table,
                "Key": {"id": {"S": account}},
                "UpdateExpression": f"SET bal = bal {sign} :a",
                "ExpressionAttributeValues": {":a": {"N": "10"}},
            }
        }

    return [update(src, "-"), update(dst, "+")]


async def crash_after(
    cluster: LocalCluster, items: list[dict[str, Any]], commit: bool, token: str | None = None
) -> str:
    """Run a transaction's prepare (and, with ``commit``, its commit point) from a coordinator
    that then vanishes without resolving anything; returns the attempt id. With ``token``, the
    attempt first claims that ClientRequestToken, as the coordinator does beside its prepares."""
    auth.install(cluster.config.internal_secret())
    async with aiohttp.ClientSession() as session:
        ctx = RouterContext(cluster.config, "rt-a", session)
        await ctx.start()
        try:
            placed = [await _place_write(ctx, i, item) for i, item in enumerate(items)]
            assert len({p.partition.id for p in placed}) == 2, "the accounts share a partition"
            home = placed[0].partition
            attempt = uuid.uuid4().hex
            rec = {"tbl": placed[0].layout.spec.name, "group": home.id}
            started = time.time()
            if token is not None:
                claimed = await txntokens.claim(
                    ctx, token, attempt, _digest(items), home, placed[0].layout
                )
                assert claimed == "claimed"
            for p in placed:
                record = txncoord._record_put(attempt, started, placed)
                records = (record,) if p is placed[0] else ()
                for _ in range(10):  # a busy machine may be electing: a prepare is idempotent
                    try:
                        ok, payload = await txncoord._prepare(
                            ctx, [p], attempt, rec, started, False, records
                        )
                        break
                    except txncoord.Unknown:
                        await asyncio.sleep(0.3)
                # A retried home prepare finds its own record from the first (unknown) try.
                mine = [r.get("old", {}).get("k", {}).get("S") for r in payload["records"]]
                assert ok or (
                    {r["Code"] for r in payload["reasons"]} == {"None"} and mine == [attempt]
                ), payload
            if commit:
                assert await txncoord.decide(ctx, home, attempt, commit=True) == "C"
        finally:
            await ctx.stop()  # the coordinator is gone: nobody will resolve its intents
    return attempt


def balance(ddb: Client, table: str, account: str) -> int:
    got = ddb.get_item(TableName=table, Key={"id": {"S": account}}, ConsistentRead=True)
    return int(got["Item"]["bal"]["N"])


def audit(ddb: Client, table: str, accounts: list[str]) -> list[int]:
    got = ddb.transact_get_items(
        TransactItems=[{"Get": {"TableName": table, "Key": {"id": {"S": a}}}} for a in accounts]
    )
    return [int(r["Item"]["bal"]["N"]) for r in got["Responses"]]


def test_prepared_but_undecided_transaction_is_rolled_back_by_another_router(
    local_cluster: LocalCluster, table: str
) -> None:
    rt_b, rt_c = other_router(local_cluster, "rt-b"), other_router(local_cluster, "rt-c")
    src, dst = two_accounts(local_cluster, rt_b, table)
    started = time.monotonic()
    asyncio.run(crash_after(local_cluster, transfer_items(table, src, dst), commit=False))
    # Young and undecided: the items are busy, and reads see the committed state.
    with pytest.raises(ClientError) as exc:
        rt_b.put_item(TableName=table, Item={"id": {"S": src}, "bal": {"N": "0"}})
    assert exc.value.response["Error"]["Code"] == "TransactionConflictException"
    # BatchWriteItem too: the write is refused, never queued behind the transaction.
    put_src = {"PutRequest": {"Item": {"id": {"S": src}, "bal": {"N": "7"}}}}
    with pytest.raises(ClientError) as exc:
        rt_c.batch_write_item(RequestItems={table: [put_src]})
    assert exc.value.response["Error"]["Code"] == "TransactionConflictException"
    assert balance(rt_b, table, src) == 100 and balance(rt_c, table, dst) == 100
    # Once stale, the next router to meet it aborts it through its record, rolls back, and
    # applies its own write: here a BatchWriteItem.
    time.sleep(max(0.0, txncoord.TXN_STALE + 0.5 - (time.monotonic() - started)))
    assert rt_b.batch_write_item(RequestItems={table: [put_src]})["UnprocessedItems"] == {}
    assert audit(rt_c, table, [src, dst]) == [7, 100]


def test_a_prepare_whose_outcome_was_unknown_is_learnt_from_its_intents(
    local_cluster: LocalCluster, table: str
) -> None:
    """The coordinator never sends a prepare again: it reads whether the group holds the
    attempt's intents (txncoord._learn_unknown_prepares), here after a real prepare."""
    rt_b = other_router(local_cluster, "rt-b")
    src, dst = two_accounts(local_cluster, rt_b, table)
    items = transfer_items(table, src, dst)
    attempt = asyncio.run(crash_after(local_cluster, items, commit=False))

    async def learn(attempt: str) -> list[Any]:
        auth.install(local_cluster.config.internal_secret())
        async with aiohttp.ClientSession() as session:
            ctx = RouterContext(local_cluster.config, "rt-b", session)
            await ctx.start()
            try:
                groups = [[await _place_write(ctx, i, item)] for i, item in enumerate(items)]
                unknown = [txncoord.Unknown(DynamoError.internal("lost")) for _ in groups]
                return await txncoord._learn_unknown_prepares(ctx, groups, unknown, attempt)
            finally:
                await ctx.stop()

    learnt = asyncio.run(learn(attempt))
    assert [ok for ok, _ in learnt] == [True, True], learnt
    assert all(isinstance(o, txncoord.Unknown) for o in asyncio.run(learn(uuid.uuid4().hex)))


def test_committed_but_unapplied_transaction_is_rolled_forward_by_another_router(
    local_cluster: LocalCluster, table: str
) -> None:
    rt_b, rt_c = other_router(local_cluster, "rt-b"), other_router(local_cluster, "rt-c")
    src, dst = two_accounts(local_cluster, rt_b, table)
    asyncio.run(crash_after(local_cluster, transfer_items(table, src, dst), commit=True))
    # The commit point passed: every consistent reader sees it at once, on any router.
    assert balance(rt_b, table, dst) == 110 and balance(rt_c, table, src) == 90
    assert audit(rt_c, table, [src, dst]) == [90, 110]
    # A plain write to an item it held rolls it forward first, then applies.
    rt_b.update_item(
        TableName=table,
        Key={"id": {"S": src}},
        UpdateExpression="SET bal = bal + :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    assert audit(rt_b, table, [src, dst]) == [91, 110]


def test_a_token_whose_attempt_is_pending_is_in_progress_until_it_is_stale(
    local_cluster: LocalCluster, table: str
) -> None:
    """A retry with the ClientRequestToken of an attempt still pending gets
    TransactionInProgressException (DynamoDB's answer); once the attempt is stale the retry
    aborts it and runs, so the transfer is applied exactly once."""
    rt_b = other_router(local_cluster, "rt-b")
    src, dst = two_accounts(local_cluster, rt_b, table)
    items, token = transfer_items(table, src, dst), uuid.uuid4().hex
    started = time.monotonic()
    asyncio.run(crash_after(local_cluster, items, commit=False, token=token))
    # botocore retries TransactionInProgressException (a throttling code) with backoff, which
    # could outlast the attempt's youth: one try shows the answer itself.
    once = client_for(local_cluster, "rt-b", config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as exc:
        once.transact_write_items(TransactItems=items, ClientRequestToken=token)
    assert exc.value.response["Error"]["Code"] == "TransactionInProgressException"
    # Reads see the committed state (a TransactGetItems would be cancelled: an item is in a
    # transaction still running, as in DynamoDB).
    assert balance(rt_b, table, src) == 100 and balance(rt_b, table, dst) == 100
    time.sleep(max(0.0, txncoord.TXN_STALE + 0.5 - (time.monotonic() - started)))
    rt_b.transact_write_items(TransactItems=items, ClientRequestToken=token)
    rt_b.transact_write_items(TransactItems=items, ClientRequestToken=token)  # done: not again
    assert audit(rt_b, table, [src, dst]) == [90, 110]


async def sweep_later(cluster: LocalCluster, table: str, now: float) -> dict[str, Any]:
    """A full sweep of ``table``'s records and of the token rows as if it were ``now``; then
    what is left: {attempt: record state}, the token rows, and the intents of the table."""
    auth.install(cluster.config.internal_secret())
    async with aiohttp.ClientSession() as session:
        ctx = RouterContext(cluster.config, "rt-a", session)
        await ctx.start()
        try:
            sweeper = txngc.TxnSweeper(ctx)
            layout = await ctx.table(table)
            for partition in layout.partitions:
                await sweeper.sweep_records(partition, now, every_page=True)
                await sweeper.sweep_tokens(partition, now, every_page=True)
            left: dict[str, Any] = {"records": {}, "intents": 0, "counts": dict(sweeper.counts)}
            for partition in layout.partitions:
                for tbl in (RECORDS, lock_table(table)):
                    reply = await ctx.storage.read(
                        partition, "scan", True, 10.0, tbl=tbl, start_after=None, limit=1000
                    )
                    for _, _, row in reply["items"]:
                        if tbl == RECORDS:
                            left["records"][row["k"]["S"]] = row["st"]["S"]
                        else:
                            left["intents"] += 1
            left["tokens"] = []
            for partition in layout.partitions:
                reply = await ctx.storage.read(
                    partition,
                    "scan",
                    True,
                    10.0,
                    tbl=txntokens.TOKENS,
                    start_after=None,
                    limit=1000,
                )
                left["tokens"] += [row["att"]["S"] for _, _, row in reply["items"]]
            return left
        finally:
            await ctx.stop()


def test_sweeper_rolls_committed_intents_forward_before_deleting_records_and_tokens(
    local_cluster: LocalCluster, table: str
) -> None:
    """After DynamoDB's 10-minute window, records and ClientRequestToken rows are deleted, but
    a committed record only once its intents are applied: the sweeper rolls them forward."""
    ddb = other_router(local_cluster, "rt-b")
    a, b = two_accounts(local_cluster, ddb, table)
    c, d = two_accounts(local_cluster, ddb, table)
    attempt = asyncio.run(crash_after(local_cluster, transfer_items(table, a, b), commit=True))
    token = uuid.uuid4().hex
    ddb.transact_write_items(TransactItems=transfer_items(table, c, d), ClientRequestToken=token)
    now = asyncio.run(sweep_later(local_cluster, table, time.time()))
    assert now["records"].get(attempt) == "C" and now["intents"] >= 2, now  # none expired
    later = asyncio.run(sweep_later(local_cluster, table, time.time() + txngc.RECORD_TTL + 1))
    assert attempt not in later["records"] and "C" not in later["records"].values(), later
    assert later["intents"] == 0, later
    assert later["counts"]["records_deleted"] >= 2 and later["counts"]["tokens_deleted"] >= 1
    # The sweeper applied the orphaned commit (no reader touched a or b).
    assert audit(ddb, table, [a, b, c, d]) == [90, 110, 90, 110]
    # The window is over: the token is new again, whatever the request.
    ddb.transact_write_items(TransactItems=transfer_items(table, d, c), ClientRequestToken=token)
    assert audit(ddb, table, [c, d]) == [100, 100]
