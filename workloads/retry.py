"""How the clients retry, as the AWS SDKs do: which errors, how long to wait, where to go next.

Pure: no I/O, no clock, randomness passed in. The Locust users, the canaries and the setup
client share it.

- Retryable: throttling (the service refused before doing anything), 5xx answers and transport
  errors (timeouts, refused or reset connections): the SDKs' "transient" and "throttling"
  classes. Not retryable: ConditionalCheckFailed, Validation, ResourceNotFound and other 4xx.
- Backoff: capped exponential with full jitter, ``uniform(0, min(cap, base * 2 ** n))`` before
  attempt n + 1, and never past the op's deadline.
- After a timeout, a refused connection or a 5xx answer the client moves to another router
  (``EndpointPool``): the one it used may be down, cut off from a quorum, or in a powered-off
  AZ. DynamoDB's endpoints sit behind load balancers, so an SDK's retry reaches another router;
  a client that kept retrying the one router in a cut-off AZ would measure its own bad luck.

Every attempt is its own op in the history: an attempt that may have been applied (a timeout, a
5xx) completes as ``info``, and the retry is a new op (with a fresh value for a write, so that the
checkers can still tell writes apart).

    policy = RetryPolicy(base=0.025, cap=1.0, max_attempts=5)
    policy.retryable("info", "TimeoutError")                   # True
    policy.delay(attempt=2, rng=random.Random(1), remaining=0.5)  # <= min(0.1, 0.5)
    pool = EndpointPool(["http://a", "http://b"], first=0)
    pool.failed("http://a", now=10.0)   # quarantined; pool.current() is "http://b" now
"""

from __future__ import annotations

import random
from dataclasses import dataclass

THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        # A retry of a transaction whose earlier attempt (same ClientRequestToken) still runs:
        # botocore's standard mode retries it as throttling, so the retry learns its outcome.
        "TransactionInProgressException",
    }
)
#: Transport failures and 5xx answers: the router is unreachable, stuck, or cannot reach a
#: quorum from where it is. Move elsewhere.
MOVE_ON = (
    "TimeoutError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "timed out",
    "InternalServerError",
    "ServiceUnavailable",
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 0.025
    cap: float = 1.0
    max_attempts: int = 5

    def retryable(self, outcome: str, error: str | None) -> bool:
        """Whether an attempt that ended so is worth another (ok never is)."""
        if outcome == "ok" or error is None:
            return False
        if outcome == "info":  # a 5xx or no answer: transient
            return error != "MalformedResponse" and error != "interrupted"
        if error.startswith("TransactionCanceledException"):
            # cancelled only because another transaction held an item: like throttling
            return "TransactionConflict" in error and "ConditionalCheckFailed" not in error
        return error in THROTTLING

    def delay(self, attempt: int, rng: random.Random, remaining: float) -> float:
        """Seconds to wait after attempt number ``attempt`` (1-based) failed."""
        return min(max(0.0, remaining), rng.uniform(0.0, min(self.cap, self.base * 2**attempt)))


def moves_on(error: str | None) -> bool:
    """Whether the error says the router is unreachable or stuck (so try another one)."""
    return error is not None and any(mark in error for mark in MOVE_ON)


class EndpointPool:
    """Router endpoints with a health view: one in use, the others to move to.

    A failed endpoint is quarantined for ``quarantine`` s, doubling on each failure up to
    ``max_quarantine``; an answered request (``healthy``) clears it. ``current()`` is the
    preferred endpoint while it is healthy, else the next healthy one in order, else (all
    quarantined or down) the one whose quarantine ends first. The health probes themselves
    (``GET /health`` every second) run beside it and pass their verdict in as ``down``.
    """

    def __init__(
        self,
        endpoints: list[str] | tuple[str, ...],
        first: int = 0,
        quarantine: float = 1.0,
        max_quarantine: float = 10.0,
    ) -> None:
        if not endpoints:
            raise ValueError("no endpoints")
        self.endpoints = list(endpoints)
        self.index = first % len(self.endpoints)
        self.quarantine = quarantine
        self.max_quarantine = max_quarantine
        self.down_until: dict[str, float] = {}
        self.strikes: dict[str, int] = {}

    def current(self, now: float, down: set[str] | frozenset[str] = frozenset()) -> str:
        """The endpoint to use; ``down``: endpoints a health check found down (skipped too)."""
        n = len(self.endpoints)
        for step in range(n):
            endpoint = self.endpoints[(self.index + step) % n]
            if self.down_until.get(endpoint, 0.0) <= now and endpoint not in down:
                return endpoint
        return min(self.endpoints, key=lambda e: (e in down, self.down_until.get(e, 0.0)))

    def failed(self, endpoint: str, now: float) -> None:
        strikes = self.strikes.get(endpoint, 0) + 1
        self.strikes[endpoint] = strikes
        hold = min(self.max_quarantine, self.quarantine * 2 ** (strikes - 1))
        self.down_until[endpoint] = now + hold
        if endpoint == self.endpoints[self.index] and len(self.endpoints) > 1:
            self.index = (self.index + 1) % len(self.endpoints)

    def healthy(self, endpoint: str) -> None:
        self.down_until.pop(endpoint, None)
        self.strikes.pop(endpoint, None)

    def quarantined(self, now: float) -> list[str]:
        return [e for e in self.endpoints if self.down_until.get(e, 0.0) > now]
