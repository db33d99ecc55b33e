"""The SDK-like retry rules: which outcomes retry, the backoff's bounds, the endpoint pool."""

from __future__ import annotations

import random

import pytest

from tests.workloads.conftest import StubRouter
from workloads.retry import EndpointPool, RetryPolicy, moves_on


@pytest.mark.parametrize(
    ("outcome", "error", "retry"),
    [
        ("ok", None, False),
        ("fail", "ConditionalCheckFailedException", False),
        ("fail", "ValidationException", False),
        ("fail", "ThrottlingException", True),
        ("fail", "ProvisionedThroughputExceededException", True),
        ("fail", "TransactionInProgressException", True),
        ("fail", "TransactionCanceledException [TransactionConflict, None]", True),
        ("fail", "TransactionCanceledException [ConditionalCheckFailed, None]", False),
        ("info", "ServiceUnavailable", True),
        ("info", "HTTP 500", True),
        ("info", "TimeoutError", True),
        ("info", "interrupted", False),  # the user is being stopped
    ],
)
def test_what_is_retried(outcome: str, error: str | None, retry: bool) -> None:
    assert RetryPolicy().retryable(outcome, error) is retry


def test_backoff_is_capped_exponential_with_full_jitter_and_respects_the_deadline() -> None:
    policy, rng = RetryPolicy(base=0.1, cap=0.5), random.Random(7)
    for attempt, bound in ((1, 0.2), (2, 0.4), (3, 0.5), (9, 0.5)):
        delays = [policy.delay(attempt, rng, remaining=10.0) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.8 and min(delays) < bound * 0.2  # jittered over [0, b]
    assert policy.delay(5, rng, remaining=0.01) <= 0.01


def test_timeouts_and_refusals_move_to_another_router() -> None:
    assert moves_on("RetriesExceeded: URL http://x/: 0, original=timed out")
    assert moves_on("ConnectionRefusedError: [Errno 111] Connection refused")
    assert moves_on("ServiceUnavailable") and moves_on("InternalServerError")
    assert not moves_on("ThrottlingException") and not moves_on(None)
    assert not moves_on("ConditionalCheckFailedException")


def test_a_failed_endpoint_is_quarantined_with_doubling_holds() -> None:
    pool = EndpointPool(["a", "b", "c"], first=0, quarantine=1.0, max_quarantine=3.0)
    assert pool.current(0.0) == "a"
    pool.failed("a", now=10.0)
    assert pool.current(10.0) == "b" and pool.quarantined(10.0) == ["a"]
    assert pool.current(11.5, down={"b"}) == "c"  # a health check found b down
    pool.failed("a", now=11.0)  # second strike: held 2 s
    assert pool.quarantined(12.5) == ["a"] and pool.quarantined(13.0) == []
    pool.healthy("a")
    assert pool.strikes == {}
    everything_down = EndpointPool(["a", "b"])
    everything_down.failed("a", now=0.0)
    everything_down.failed("b", now=0.5)
    assert everything_down.current(0.6) == "a"  # the one back soonest


def test_the_setup_client_retries_throttling_and_5xx_until_an_answer(
    stub_router: StubRouter,
) -> None:
    import asyncio

    from aiohttp import web

    from workloads.client import DynamoClient
    from workloads.setup import _call

    answers = [(503, "ServiceUnavailable"), (400, "ThrottlingException"), (200, None)]
    seen: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        status, kind = answers[min(len(seen), len(answers) - 1)]
        seen.append(status)
        return web.json_response({"__type": f"x#{kind}"} if kind else {}, status=status)

    async def main() -> tuple[int, int]:
        async with stub_router(handle) as url, DynamoClient(url, "k", "s") as ddb:
            status, _ = await _call(ddb, "DescribeTable", {"TableName": "t"})
            answers[:] = [(400, "ValidationException")]
            seen.clear()
            refused, _ = await _call(ddb, "DescribeTable", {"TableName": "t"})
            return status, refused

    status, refused = asyncio.run(main())
    assert status == 200
    assert refused == 400 and seen == [400]  # a validation error is final: no retry
