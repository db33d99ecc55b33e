"""Per-AZ canaries: a light client in every AZ probing every router at a steady rate.

For each (AZ, router) pair one probe loop runs: every ``1 / rate_per_second`` seconds it puts a
fresh unique value on its own key (``canary/<az>/<router>``), then reads it back with a
consistent GetItem. Both ops go to ``canary.jsonl`` in the history format, plus ``az`` and
``router``, with process ``canary-<az>-<router>.<generation>``. The availability checker reads
it per AZ and per router; the durability and register checkers can read it like any history.

A loop never runs more than ``duration_s`` nor more than ``duration_s * rate + 1`` probes, and
all stop early when ``stop`` is set. A probe slower than the period skips the ticks it missed
rather than bunching up. Each probe op retries retryable outcomes as an AWS SDK would
(workloads/retry.py) within ``timeout``, on the same router: a canary measures that router.

    await run_canaries(cluster.endpoints(), {"rt-a": "az-a", ...}, "gameday", secret,
                       table="gameday-canary", rate_per_second=2, duration_s=60,
                       out=run_dir / "canary.jsonl", run_start=run_start)
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import aiohttp

from workloads import ops
from workloads.client import DynamoClient
from workloads.history import HistoryWriter, OpF, OpRecorder, OpType, RunClock
from workloads.outcomes import classify, classify_exception
from workloads.retry import RetryPolicy

FLUSH_INTERVAL = 1.0
RETRY = RetryPolicy()


def canary_key(az: str, router: str) -> str:
    return f"canary/{az}/{router}"


def canary_pairs(
    endpoints_by_router: dict[str, str], az_of: dict[str, str]
) -> list[tuple[str, str]]:
    """Every (client AZ, router) pair: each AZ's canary calls every router, in its AZ or not."""
    azs = sorted(set(az_of.values()))
    return [(az, router) for az in azs for router in sorted(endpoints_by_router)]


async def run_canaries(
    endpoints_by_router: dict[str, str],
    az_of: dict[str, str],
    access_key: str,
    secret_key: str,
    table: str,
    rate_per_second: float,
    duration_s: float,
    out: Path,
    run_start: float | None = None,
    stop: asyncio.Event | None = None,
    timeout: float = 2.0,
) -> int:
    """Probe until ``duration_s`` has passed or ``stop`` is set; returns ops completed.

    ``az_of`` maps router id -> AZ; its AZs are where canaries run. ``table`` must exist with
    the register key schema (``workloads.setup.ensure_table(..., "register")``).
    """
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    clock = RunClock(run_start)
    writer = HistoryWriter(out)
    stop = stop or asyncio.Event()
    deadline = time.monotonic() + duration_s
    max_probes = math.ceil(duration_s * rate_per_second) + 1
    flusher = asyncio.create_task(_flush_periodically(writer, stop))
    try:
        async with AsyncExitStack() as stack:
            pairs = canary_pairs(endpoints_by_router, az_of)
            clients = {  # each AZ's canary has its own connections to every router
                (az, router): await stack.enter_async_context(
                    DynamoClient(
                        endpoints_by_router[router],
                        access_key,
                        secret_key,
                        timeout=timeout,
                        connections=2,
                    )
                )
                for az, router in pairs
            }
            loops = [
                _probe_loop(
                    clients[az, router],
                    OpRecorder(writer, clock, f"canary-{az}-{router}", az=az, router=router),
                    table,
                    canary_key(az, router),
                    1.0 / rate_per_second,
                    deadline,
                    max_probes,
                    stop,
                    timeout,
                )
                for az, router in pairs
            ]
            counts = await asyncio.gather(*loops)
    finally:
        flusher.cancel()
        writer.flush()
    return sum(counts)


async def _flush_periodically(writer: HistoryWriter, stop: asyncio.Event) -> None:
    for _ in range(10**8):  # bounded; cancelled when the canaries end
        await asyncio.sleep(FLUSH_INTERVAL)
        writer.flush()
        if stop.is_set():
            return


async def _probe_loop(
    client: DynamoClient,
    recorder: OpRecorder,
    table: str,
    key: str,
    period: float,
    deadline: float,
    max_probes: int,
    stop: asyncio.Event,
    timeout: float,
) -> int:
    values = itertools.count(1)
    rng = random.Random(recorder.base)
    started = time.monotonic()
    done = 0
    tick = 0
    for _ in range(max_probes):
        if stop.is_set() or time.monotonic() >= deadline:
            break

        def put() -> tuple[ops.Call, object]:
            value = f"{recorder.base}-{next(values)}"
            return ops.put_item(table, key, value), value

        def get() -> tuple[ops.Call, object]:
            return ops.get_item(table, key, consistent=True), None

        done += await _op(client, recorder, OpF.PUT, key, put, timeout, rng)
        done += await _op(client, recorder, OpF.GET, key, get, timeout, rng, consistent=True)
        # next tick on the fixed schedule, skipping ticks already missed
        tick = max(tick + 1, math.ceil((time.monotonic() - started) / period))
        delay = min(started + tick * period, deadline) - time.monotonic()
        if delay > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return done


async def _op(
    client: DynamoClient,
    recorder: OpRecorder,
    f: OpF,
    key: str,
    make: Callable[[], tuple[ops.Call, object]],
    deadline_s: float,
    rng: random.Random,
    consistent: bool | None = None,
) -> int:
    """One probe as an SDK would send it: retryable outcomes are retried with capped
    exponential backoff and jitter within ``deadline_s``, always on the same router (a canary
    measures that router). Every attempt is recorded (and counted in the return value); a
    retried write writes a fresh value."""
    deadline = time.monotonic() + deadline_s
    for attempt in range(1, RETRY.max_attempts + 1):
        call, value = make()
        remaining = deadline - time.monotonic()
        retry = attempt if attempt > 1 else None
        pending = recorder.invoke(f, key, value, consistent, attempt=retry)
        err: str | None
        try:
            status, body = await client.call(call.operation, call.params, timeout=remaining)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            kind, err = classify_exception(exc)
            recorder.complete(pending, kind, value, err)
        except asyncio.CancelledError:
            recorder.complete(pending, OpType.INFO, value, "interrupted")
            raise
        else:
            kind, err = classify(status, body)
            result = ops.read_value(body) if kind is OpType.OK and f is OpF.GET else value
            recorder.complete(pending, kind, result, err)
        remaining = deadline - time.monotonic()
        if not RETRY.retryable(kind, err) or remaining <= 0:
            break
        await asyncio.sleep(RETRY.delay(attempt, rng, remaining))
        if time.monotonic() >= deadline:
            break
    return attempt
