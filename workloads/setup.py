"""Before and after a load run: the table the workload needs, and the final state of its keys.

``ensure_table`` creates the workload's table (on demand, PAY_PER_REQUEST) if it is absent and
waits until it is ACTIVE; ``final_reads`` reads every key with a consistent GetItem (or, for the
query workload, a consistent Query per partition key) after the run, for ``final_reads.json``.
Both have ``..._async`` twins for callers that already run an event loop.

    ensure_table("http://127.20.1.100:8000", "gameday", secret, "gameday-register", "register")
    values = final_reads(endpoint, "gameday", secret, "gameday-register", ["r0", "r1"])
    # {"r0": "host-41-u0-17", "r1": None}      None: no such item; a key that stayed
    #                                          unreadable after retries is left out
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

import aiohttp

from workloads.catalog import HASH_KEY, QUERY_HASH_KEY, QUERY_RANGE_KEY, QUERY_SORT_KEYS
from workloads.catalog import workload as workload_spec
from workloads.client import DynamoClient, error_code
from workloads.ops import item_value
from workloads.outcomes import classify
from workloads.retry import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

_TRANSIENT = (aiohttp.ClientError, TimeoutError, OSError)


class SetupError(RuntimeError):
    pass


async def _call(
    client: DynamoClient, operation: str, params: dict[str, Any], attempts: int = 6
) -> tuple[int, dict[str, Any]]:
    """One call, retried as the AWS SDKs do (workloads/retry.py): transport errors, 5xx and
    throttling, after a capped exponential backoff with full jitter; bounded in attempts."""
    status, body = 0, dict[str, Any]()
    policy, rng = RetryPolicy(base=0.1, cap=2.0, max_attempts=attempts), random.Random()
    for attempt in range(1, attempts + 1):
        try:
            status, body = await client.call(operation, params)
        except _TRANSIENT as exc:
            status, body = 0, {"__type": type(exc).__name__, "message": str(exc)}
        outcome, error = classify(status, body) if status else ("info", body["__type"])
        if not policy.retryable(str(outcome), error) or attempt == attempts:
            break
        await asyncio.sleep(policy.delay(attempt, rng, remaining=policy.cap))
    return status, body


def _retryable(status: int, body: dict[str, Any]) -> bool:
    """Whether an AWS SDK would retry this outcome (5xx, throttling, no answer at all)."""
    outcome, error = classify(status, body) if status else ("info", body.get("__type", ""))
    return RetryPolicy().retryable(str(outcome), error)


def _table_definition(table: str, workload: str) -> dict[str, Any]:
    spec = workload_spec(workload)
    return {
        "TableName": table,
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": kind} for name, kind, _ in spec.key_schema
        ],
        "KeySchema": [
            {"AttributeName": name, "KeyType": role} for name, _, role in spec.key_schema
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


async def ensure_table_async(
    endpoint: str,
    access_key: str,
    secret_key: str,
    table: str,
    workload: str,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Create ``table`` with the key schema of ``workload`` unless it exists; wait for ACTIVE.

    Returns the table description. An existing table with another key schema is an error.
    """
    definition = _table_definition(table, workload)
    deadline = time.monotonic() + timeout
    async with DynamoClient(endpoint, access_key, secret_key, timeout=min(timeout, 15.0)) as ddb:
        # A cluster that just came up may still be electing its metadata group: 503s and
        # timeouts are retried until the deadline, not only for _call's few attempts.
        for _ in range(10_000):  # bounded; the deadline ends it first
            status, body = await _call(ddb, "DescribeTable", {"TableName": table})
            if status == 200:
                break
            step = "DescribeTable"
            if error_code(body) == "ResourceNotFoundException":
                step = "CreateTable"
                status, body = await _call(ddb, "CreateTable", definition)
                if status == 200 or error_code(body) == "ResourceInUseException":
                    break
            if not _retryable(status, body) or time.monotonic() > deadline:
                raise SetupError(f"{step} {table}: HTTP {status} {body}")
            await asyncio.sleep(0.5)
        for _ in range(10_000):  # bounded; the deadline ends it first
            status, body = await _call(ddb, "DescribeTable", {"TableName": table})
            description: dict[str, Any] = body.get("Table", {}) if status == 200 else {}
            if description.get("TableStatus") == "ACTIVE":
                _check_schema(table, description, definition)
                return description
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    raise SetupError(f"table {table} not ACTIVE after {timeout:.0f}s (last: HTTP {status} {body})")


def _check_schema(table: str, description: dict[str, Any], definition: dict[str, Any]) -> None:
    have = description.get("KeySchema")
    if have is not None and have != definition["KeySchema"]:
        raise SetupError(
            f"table {table} exists with key schema {have}, the workload needs "
            f"{definition['KeySchema']}; use another --table"
        )


async def final_reads_async(
    endpoint: str,
    access_key: str,
    secret_key: str,
    table: str,
    keys: Iterable[str],
    workload: str = "register",
    concurrency: int = 16,
) -> dict[str, Any]:
    """Consistent reads of every key: ``{key: value or None}`` (unreadable keys left out).

    For the query workload ``keys`` are partition keys (history keys ``"<pk>#<sk>"`` are reduced
    to theirs), and the result has an entry per item, keyed ``"<pk>#<sk>"`` as in the history,
    None for the workload's sort keys that hold no item.
    """
    spec = workload_spec(workload)
    out: dict[str, Any] = {}
    limit = asyncio.Semaphore(concurrency)
    async with DynamoClient(endpoint, access_key, secret_key, connections=concurrency) as ddb:

        async def read_one(key: str) -> None:
            async with limit:
                if spec.has_range_key:
                    out.update(await _query_all(ddb, table, key))
                    return
                params = {
                    "TableName": table,
                    "Key": {HASH_KEY: {"S": key}},
                    "ConsistentRead": True,
                }
                status, body = await _call(ddb, "GetItem", params)
                if status != 200:
                    log.warning("final read of %s failed: HTTP %s %s", key, status, body)
                    return
                out[key] = item_value(body.get("Item"))

        if spec.has_range_key:  # history keys "<pk>#<sk>" and "<pk>" both name a partition key
            keys = {key.split("#", 1)[0] for key in keys}
        await asyncio.gather(*(read_one(k) for k in keys))
    return dict(sorted(out.items()))


async def _query_all(ddb: DynamoClient, table: str, pk: str) -> dict[str, Any]:
    """Every item of ``pk``; the workload's other sort keys read as absent (None)."""
    found: dict[str, Any] = {f"{pk}#{sk}": None for sk in range(QUERY_SORT_KEYS)}
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#pk = :pk",
        "ExpressionAttributeNames": {"#pk": QUERY_HASH_KEY},
        "ExpressionAttributeValues": {":pk": {"S": pk}},
        "ConsistentRead": True,
    }
    for _ in range(1000):  # pages; bounded
        status, body = await _call(ddb, "Query", params)
        if status != 200:
            log.warning("final query of %s failed: HTTP %s %s", pk, status, body)
            return {}
        for item in body.get("Items", []):
            found[f"{pk}#{item[QUERY_RANGE_KEY]['N']}"] = item_value(item)
        if "LastEvaluatedKey" not in body:
            break
        params["ExclusiveStartKey"] = body["LastEvaluatedKey"]
    return found


def blocking(async_fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """``async_fn`` run to completion with ``asyncio.run``: for callers outside an event loop
    (never inside a running one)."""

    @functools.wraps(async_fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return asyncio.run(async_fn(*args, **kwargs))

    run.__doc__ = f"Blocking ``{async_fn.__name__}``; not for use inside a running event loop."
    return run


ensure_table = blocking(ensure_table_async)
final_reads = blocking(final_reads_async)
