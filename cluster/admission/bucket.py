"""Token buckets for admission control, sans-IO: the caller says what time it is.

A bucket holds up to ``burst`` tokens and refills continuously at ``rate`` tokens per second.
Nothing here reads a clock, sleeps or locks: every method takes ``now`` (seconds, any epoch, as
long as one bucket always sees the same clock), so buckets run unchanged under a fake clock in
tests and under ``time.monotonic()`` in production.

    bucket = TokenBucket(rate=100.0, burst=None, now=0.0)   # burst None: 300 s of the rate
    bucket.try_take(40, now=0.0)        # True: the bucket starts full
    bucket.level(now=1.0)               # tokens available one second later
    bucket.set_rate(50.0, burst=100.0, now=2.0)

Burst credit (DynamoDB paper, section 4.1; AWS docs "burst capacity"): a table or partition that
leaves capacity unused may spend it later, up to 300 seconds' worth of its rate. That is
:class:`BurstCredit`; it decides ``burst`` whenever a caller passes ``burst=None``.

Contracts:

* ``now`` never moves a bucket backwards: a ``now`` earlier than the last one seen is treated
  as "no time passed" (a stepped-back clock neither creates nor destroys tokens).
* The level never exceeds ``burst`` and never goes below zero.
* Token amounts are floats; a request for ``n`` tokens succeeds when the level is ``n`` or more
  (within a rounding tolerance of 1e-9, so that ten takes of 0.1 empty a bucket of 1.0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_BURST_CREDIT", "BurstCredit", "TokenBucket"]

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class BurstCredit:
    """How much unused capacity may accumulate: ``seconds`` worth of the rate (DynamoDB: 300)."""

    seconds: float = 300.0

    def __post_init__(self) -> None:
        if not (self.seconds >= 0 and math.isfinite(self.seconds)):
            raise ValueError(f"burst credit seconds must be finite and >= 0, got {self.seconds}")

    def capacity(self, rate: float) -> float:
        """The burst (bucket size) for a bucket refilled at ``rate`` tokens per second."""
        return rate * self.seconds


DEFAULT_BURST_CREDIT = BurstCredit()


def _check_rate(rate: float) -> float:
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be finite and >= 0, got {rate}")
    return float(rate)


def _check_amount(name: str, value: float) -> float:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


class TokenBucket:
    """A token bucket refilled at ``rate`` per second, capped at ``burst`` tokens.

    ``burst=None`` applies ``credit`` (default: 300 seconds of the rate). ``burst`` may be
    ``math.inf`` for a bucket that is filled only by :meth:`add` (a router's local bucket).
    ``initial`` is the level at ``now``; by default the bucket starts full (capped at ``burst``,
    so an infinite-burst bucket must be given an explicit ``initial``).
    """

    __slots__ = ("_burst", "_credit", "_last", "_level", "_rate")

    def __init__(
        self,
        rate: float,
        burst: float | None,
        now: float,
        *,
        initial: float | None = None,
        credit: BurstCredit = DEFAULT_BURST_CREDIT,
    ) -> None:
        self._credit = credit
        self._rate = _check_rate(rate)
        self._burst = self._resolve_burst(self._rate, burst)
        self._last = float(now)
        if initial is None:
            if math.isinf(self._burst):
                raise ValueError("a bucket with infinite burst needs an explicit initial level")
            initial = self._burst
        self._level = min(self._burst, _check_amount("initial", initial))

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate={self._rate}, burst={self._burst}, "
            f"level={self._level} at {self._last})"
        )

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def refill_to(self, now: float) -> None:
        """Credit the tokens earned between the last time seen and ``now``."""
        elapsed = now - self._last
        if elapsed <= 0:
            return  # same instant, or a clock that stepped back: no time passed
        self._last = float(now)
        if self._rate > 0 and self._level < self._burst:
            self._level = min(self._burst, self._level + self._rate * elapsed)

    def level(self, now: float) -> float:
        """Tokens available at ``now``."""
        self.refill_to(now)
        return self._level

    def try_take(self, n: float, now: float) -> bool:
        """Take ``n`` tokens if the bucket holds them; otherwise take nothing and say False."""
        n = _check_amount("n", n)
        self.refill_to(now)
        if self._level + _EPSILON < n:
            return False
        self._level = max(0.0, self._level - n)
        return True

    def take_up_to(self, n: float, now: float) -> float:
        """Take ``min(n, level)`` tokens and return how many were taken."""
        n = _check_amount("n", n)
        self.refill_to(now)
        taken = min(n, self._level)
        self._level -= taken
        return taken

    def add(self, tokens: float, now: float) -> float:
        """Deposit ``tokens`` (a grant); return how many fit under ``burst``."""
        tokens = _check_amount("tokens", tokens)
        self.refill_to(now)
        added = min(tokens, self._burst - self._level)
        self._level += added
        return added

    def drain(self, now: float) -> float:
        """Empty the bucket (tokens that lapsed); return how many were dropped."""
        self.refill_to(now)
        dropped, self._level = self._level, 0.0
        return dropped

    def set_rate(self, rate: float, burst: float | None, now: float) -> None:
        """Change rate and burst at ``now``: tokens earned so far count at the old rate.

        The level is kept, capped at the new burst. ``burst=None`` applies the burst credit.
        """
        rate = _check_rate(rate)
        new_burst = self._resolve_burst(rate, burst)
        self.refill_to(now)
        self._rate, self._burst = rate, new_burst
        self._level = min(self._level, new_burst)

    def _resolve_burst(self, rate: float, burst: float | None) -> float:
        if burst is None:
            return self._credit.capacity(rate)
        if math.isnan(burst) or burst < 0:
            raise ValueError(f"burst must be >= 0, got {burst}")
        return float(burst)
