"""Token bucket math under a fake clock: refill, burst cap, take-fail-then-refill, set_rate."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from cluster.admission import BurstCredit, TokenBucket


def test_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(10.0, 50.0, now=0.0, initial=0.0)
    assert bucket.level(0.0) == 0.0
    assert bucket.level(1.0) == pytest.approx(10.0)
    assert bucket.level(2.5) == pytest.approx(25.0)
    assert bucket.level(10.0) == 50.0  # capped at burst, not 100
    assert bucket.level(1000.0) == 50.0


def test_starts_full_by_default() -> None:
    assert TokenBucket(10.0, 50.0, now=0.0).level(0.0) == 50.0


def test_burst_defaults_to_300_seconds_of_rate() -> None:
    # DynamoDB's burst capacity: up to 300 seconds of unused capacity is kept.
    assert TokenBucket(10.0, None, now=0.0).burst == 3000.0
    assert TokenBucket(10.0, None, now=0.0, credit=BurstCredit(seconds=60)).burst == 600.0
    assert BurstCredit().capacity(4.0) == 1200.0
    idle = TokenBucket(10.0, None, now=0.0, initial=0.0)
    assert idle.level(299.0) == pytest.approx(2990.0)
    assert idle.level(3600.0) == 3000.0


def test_take_fails_then_succeeds_after_refill() -> None:
    bucket = TokenBucket(10.0, 10.0, now=0.0)
    assert bucket.try_take(10, 0.0)
    assert not bucket.try_take(1, 0.0)
    assert bucket.level(0.0) == 0.0  # a failed take takes nothing
    assert not bucket.try_take(1, 0.05)  # 0.5 token earned
    assert bucket.try_take(1, 0.1)
    assert bucket.level(0.1) == pytest.approx(0.0)


def test_take_nothing_when_short_leaves_level() -> None:
    bucket = TokenBucket(1.0, 5.0, now=0.0)
    assert not bucket.try_take(6, 0.0)
    assert bucket.level(0.0) == 5.0


def test_fractional_takes_drain_exactly() -> None:
    bucket = TokenBucket(0.0, 1.0, now=0.0)
    assert all(bucket.try_take(0.1, 0.0) for _ in range(10))
    assert not bucket.try_take(0.1, 0.0)


def test_set_rate_mid_flight_counts_earned_tokens_at_old_rate() -> None:
    bucket = TokenBucket(10.0, 1000.0, now=0.0, initial=0.0)
    bucket.set_rate(100.0, 1000.0, now=1.0)  # 10 tokens earned at the old rate
    assert bucket.level(1.0) == pytest.approx(10.0)
    assert bucket.level(2.0) == pytest.approx(110.0)
    bucket.set_rate(100.0, 50.0, now=2.0)  # a smaller burst caps what is held
    assert bucket.level(2.0) == 50.0
    bucket.set_rate(0.0, None, now=3.0)  # burst credit of rate 0 is 0
    assert bucket.burst == 0.0
    assert bucket.level(100.0) == 0.0


def test_set_rate_none_burst_uses_credit() -> None:
    bucket = TokenBucket(1.0, 10.0, now=0.0)
    bucket.set_rate(2.0, None, now=0.0)
    assert bucket.burst == 600.0


def test_clock_stepping_back_neither_creates_nor_destroys_tokens() -> None:
    bucket = TokenBucket(10.0, 100.0, now=10.0, initial=0.0)
    assert bucket.level(12.0) == pytest.approx(20.0)
    assert bucket.level(5.0) == pytest.approx(20.0)
    assert bucket.level(13.0) == pytest.approx(30.0)  # measured from 12, not from 5


def test_add_take_up_to_and_drain() -> None:
    bucket = TokenBucket(0.0, math.inf, now=0.0, initial=0.0)
    assert bucket.add(25.0, 0.0) == 25.0
    assert bucket.take_up_to(10.0, 1.0) == 10.0
    assert bucket.take_up_to(100.0, 1.0) == 15.0
    assert bucket.add(7.0, 2.0) == 7.0
    assert bucket.drain(3.0) == 7.0
    assert bucket.level(3.0) == 0.0
    capped = TokenBucket(0.0, 10.0, now=0.0, initial=8.0)
    assert capped.add(5.0, 0.0) == 2.0  # only what fits under burst
    assert capped.level(0.0) == 10.0


@pytest.mark.parametrize(
    "build",
    [
        lambda: TokenBucket(-1.0, 10.0, 0.0),
        lambda: TokenBucket(math.inf, 10.0, 0.0),
        lambda: TokenBucket(math.nan, 10.0, 0.0),
        lambda: TokenBucket(1.0, -1.0, 0.0),
        lambda: TokenBucket(1.0, math.nan, 0.0),
        lambda: TokenBucket(0.0, math.inf, 0.0),  # infinite burst needs an explicit initial
        lambda: TokenBucket(1.0, 10.0, 0.0).try_take(-1, 0.0),
        lambda: TokenBucket(1.0, 10.0, 0.0).add(math.nan, 0.0),
        lambda: BurstCredit(seconds=-5),
    ],
)
def test_rejects_invalid_arguments(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()
