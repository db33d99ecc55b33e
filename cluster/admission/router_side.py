"""Admission control inside a request router: local token buckets fed by GAC grants.

A router admits a request only if its local bucket for the table and kind holds the request's
capacity units; the bucket is filled only by grants from the global admission control service
(:mod:`cluster.admission.gac`). :class:`RouterAdmission` is the sans-IO state (time passed in);
:class:`GacClient` is the asyncio loop that asks GAC for tokens every ``interval`` seconds.

    admission = RouterAdmission("router-az-a", now=clock())
    if not admission.try_admit("orders", "write", write_units(len(item_bytes)), now=clock()):
        ...  # answer ProvisionedThroughputExceededException
    client = GacClient("http://127.0.0.1:7300", "router-az-a", admission)
    task = asyncio.create_task(client.run())

Capacity units (DynamoDB's): a write costs 1 WCU per KB of item, rounded up; a strongly
consistent read 1 RCU per 4 KB, rounded up; an eventually consistent read half that;
transactional operations twice as much. See :func:`write_units` and :func:`read_units`.

What to ask for: each refresh asks, per (table, kind) the router has seen, for
``max(min_want, demand_rate * interval * want_factor) - tokens_held``, where ``demand_rate`` is
the units *attempted* (admitted or not) per second since the previous refresh. Attempted, not
admitted, so that a throttled router's ask grows with its demand instead of staying at what it
was allowed. ``min_want`` lets a cold table start. Granted tokens lapse ``valid_for`` seconds
after the latest grant (GAC says how long), so a router cannot hoard tokens from a quiet period
and spend them later on top of the other routers' share.

GAC unreachable (the availability choice): for ``grace_period`` seconds (default three refresh
intervals, matching GAC's default ``valid_for``) the router keeps serving on what its buckets
hold. After that it enters *fallback*: every (table, kind) is refilled locally at
``fallback_rate`` units per second (default 100), with at most ``fallback_burst_seconds`` of
burst. We prefer this to rejecting everything because a GAC outage is a control-plane failure
and must not become a data-plane outage; the rate is deliberately low because, without GAC,
nothing bounds the sum over routers (N routers admit up to N x fallback_rate per table), and
the partition-level buckets on the storage nodes (:mod:`cluster.admission.partition`) still
protect each partition. The first grant that arrives ends fallback: local rates return to zero
and leftover fallback tokens are dropped, so from then on only grants count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from cluster import auth

from .bucket import TokenBucket
from .gac import Kind

__all__ = [
    "GacClient",
    "RouterAdmission",
    "RouterSettings",
    "read_units",
    "write_units",
]

log = logging.getLogger(__name__)

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096


def write_units(size_bytes: int, *, transactional: bool = False) -> float:
    """Write capacity units for an item of ``size_bytes``: 1 per KB, rounded up, at least 1."""
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    units = max(1, math.ceil(size_bytes / WRITE_UNIT_BYTES))
    return float(units * 2 if transactional else units)


def read_units(size_bytes: int, consistent: bool, *, transactional: bool = False) -> float:
    """Read capacity units: 1 per 4 KB (at least 1) if strongly consistent, half if eventual.

    Transactional reads cost 2 per 4 KB whatever ``consistent`` says (they are always strong).
    """
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    units = max(1, math.ceil(size_bytes / READ_UNIT_BYTES))
    if transactional:
        return float(units * 2)
    return float(units) if consistent else units / 2


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Tunables. ``interval`` must match GAC's and the :class:`GacClient`'s."""

    interval: float = 2.0
    want_factor: float = 1.5
    min_want: float = 10.0  # asked for even with no demand measured, so a cold table can start
    fallback_rate: float = 100.0  # units/s per (table, kind) while GAC is unreachable
    fallback_burst_seconds: float = 1.0
    forget_after: float = 60.0  # a (table, kind) unused this long is no longer asked for

    def __post_init__(self) -> None:
        for name in (
            "interval",
            "want_factor",
            "min_want",
            "fallback_rate",
            "fallback_burst_seconds",
            "forget_after",
        ):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.interval <= 0:
            raise ValueError("interval must be > 0")


@dataclass(slots=True)
class _Local:
    """One (table, kind) at this router."""

    bucket: TokenBucket
    window_start: float  # demand is measured from here to the next refresh
    last_used: float
    expires_at: float = -math.inf  # granted tokens lapse at this time (outside fallback)
    demand: float = 0.0  # units attempted since window_start


@dataclass(frozen=True, slots=True)
class _ParsedGrant:
    table: str
    kind: Kind
    tokens: float
    valid_for: float


def _grant_number(grant: Mapping[str, Any], name: str) -> float:
    value = grant.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"grant {name} is not a number: {grant!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"grant {name} must be finite and >= 0: {grant!r}")
    return float(value)


def _parse_grant(grant: Mapping[str, Any]) -> _ParsedGrant:
    if not isinstance(grant, Mapping):
        raise ValueError(f"grant is not an object: {grant!r}")
    table, kind = grant.get("table"), grant.get("kind")
    if not isinstance(table, str) or not table:
        raise ValueError(f"grant without a table: {grant!r}")
    if kind not in ("read", "write"):
        raise ValueError(f"grant with kind {kind!r}")
    tokens, valid_for = _grant_number(grant, "tokens"), _grant_number(grant, "valid_for")
    return _ParsedGrant(table, Kind(kind), tokens, valid_for)


class RouterAdmission:
    """A router's local buckets per (table, kind). Sans-IO: ``now`` is passed in.

    ``try_admit`` never blocks. Call ``pending_requests`` once per refresh round (it closes the
    demand-measuring window), send the result to GAC, and hand the answer to ``apply_grants``.
    """

    def __init__(self, router_id: str, now: float, settings: RouterSettings | None = None) -> None:
        self.router_id = router_id
        self.settings = settings or RouterSettings()
        self._locals: dict[tuple[str, Kind], _Local] = {}
        self._fallback = False
        self._now = float(now)

    @property
    def in_fallback(self) -> bool:
        return self._fallback

    def try_admit(self, table: str, kind: Kind | str, units: float, now: float) -> bool:
        """Take ``units`` from the table's local bucket if it holds them; never blocks."""
        kind = Kind(kind)
        if not (units >= 0 and math.isfinite(units)):
            raise ValueError(f"units must be finite and >= 0, got {units}")
        self._observe(now)
        local = self._local(table, kind, now)
        local.demand += units
        local.last_used = now
        self._maybe_expire(local, now)
        return local.bucket.try_take(units, now)

    def level(self, table: str, kind: Kind | str, now: float) -> float:
        """Tokens the router holds for a table and kind (0 for one it has never seen)."""
        local = self._locals.get((table, Kind(kind)))
        if local is None:
            return 0.0
        self._maybe_expire(local, now)
        return local.bucket.level(now)

    def pending_requests(self, now: float | None = None) -> list[dict[str, Any]]:
        """What to ask GAC for: ``[{"table", "kind", "want"}]``, one per (table, kind) in need.

        ``now`` defaults to the latest time this object has been told. Starts a new demand
        window, so call it once per refresh round. Keys unused for ``forget_after`` seconds are
        forgotten (their leftover tokens with them).
        """
        now = self._now if now is None else now
        self._observe(now)
        s = self.settings
        self._forget_idle(now)
        requests = []
        for (table, kind), local in self._locals.items():
            elapsed = max(now - local.window_start, s.interval)
            rate = local.demand / elapsed
            local.demand, local.window_start = 0.0, now
            held = 0.0 if self._fallback else self.level(table, kind, now)
            want = max(s.min_want, rate * s.interval * s.want_factor) - held
            if want > 0:
                requests.append({"table": table, "kind": kind.value, "want": want})
        return requests

    def apply_grants(self, grants: Iterable[Mapping[str, Any]], now: float) -> None:
        """Deposit GAC's answer (``[{"table", "kind", "tokens", "valid_for"}]``).

        All grants are checked before any is applied; a malformed one raises ``ValueError`` and
        changes nothing. A successful answer from GAC ends fallback, even an empty one.
        """
        parsed = [_parse_grant(grant) for grant in grants]
        self._observe(now)
        if self._fallback:
            self.leave_fallback(now)
        for grant in parsed:
            local = self._local(grant.table, grant.kind, now)
            self._maybe_expire(local, now)
            local.bucket.add(grant.tokens, now)
            local.expires_at = now + grant.valid_for

    def enter_fallback(self, now: float) -> None:
        """GAC is gone: refill every bucket locally at the fallback rate (see module doc)."""
        if self._fallback:
            return
        self._observe(now)
        self._fallback = True
        for local in self._locals.values():
            self._maybe_expire(local, now)
            local.bucket.set_rate(self.settings.fallback_rate, self._fallback_burst(), now)

    def leave_fallback(self, now: float) -> None:
        """GAC is back: only grants fill the buckets again; fallback tokens are dropped."""
        if not self._fallback:
            return
        self._observe(now)
        self._fallback = False
        for local in self._locals.values():
            local.bucket.set_rate(0.0, math.inf, now)
            local.bucket.drain(now)
            local.expires_at = -math.inf

    def _local(self, table: str, kind: Kind, now: float) -> _Local:
        local = self._locals.get((table, kind))
        if local is None:
            if self._fallback:
                burst = self._fallback_burst()
                bucket = TokenBucket(self.settings.fallback_rate, burst, now, initial=burst)
            else:
                bucket = TokenBucket(0.0, math.inf, now, initial=0.0)
            local = _Local(bucket, window_start=now, last_used=now)
            self._locals[table, kind] = local
        return local

    def _maybe_expire(self, local: _Local, now: float) -> None:
        if not self._fallback and now >= local.expires_at:
            local.bucket.drain(now)

    def _fallback_burst(self) -> float:
        return self.settings.fallback_rate * self.settings.fallback_burst_seconds

    def _forget_idle(self, now: float) -> None:
        horizon = now - self.settings.forget_after
        idle = [key for key, local in self._locals.items() if local.last_used < horizon]
        for key in idle:
            del self._locals[key]

    def _observe(self, now: float) -> None:
        self._now = max(self._now, now)


class GacClient:
    """Asks GAC for tokens every ``interval`` seconds on behalf of one router.

    Tolerates GAC being down (connection refused, timeouts, 5xx, garbage): the router keeps
    serving on what it holds, and after ``grace_period`` seconds without a successful answer
    (default ``3 * interval``) switches ``admission`` to fallback. The grace period counts
    from the start of :meth:`run` for a router that has never reached GAC.

    ``session`` may be shared with the rest of the router; otherwise ``run`` makes and closes
    its own. ``clock`` supplies ``now`` for ``admission`` and must be the router's clock.
    """

    def __init__(
        self,
        base_url: str,
        router_id: str,
        admission: RouterAdmission,
        interval: float = 2.0,
        *,
        grace_period: float | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be finite and > 0, got {interval}")
        self.url = base_url.rstrip("/") + "/tokens"
        self.router_id = router_id
        self.admission = admission
        self.interval = interval
        self.grace_period = 3 * interval if grace_period is None else grace_period
        self.timeout = aiohttp.ClientTimeout(total=interval if timeout is None else timeout)
        self.clock = clock
        self.rounds = 0
        self.failures = 0  # consecutive failed rounds
        self.last_success: float | None = None
        self._session = session
        self._wake = asyncio.Event()
        self._stopping = False
        self._started: float | None = None

    def wake(self) -> None:
        """Refresh now instead of at the end of the current interval (e.g. on a cold table)."""
        self._wake.set()

    def stop(self) -> None:
        """Make a running :meth:`run` return after the round in progress."""
        self._stopping = True
        self._wake.set()

    async def run(self, max_rounds: int | None = None) -> None:
        """Refresh every ``interval`` until :meth:`stop`, cancellation, or ``max_rounds`` rounds.

        ``run`` may be called again after it returns; the grace period then counts from the
        last success, or from the first call's start if GAC was never reached.
        """
        session = self._session or aiohttp.ClientSession(timeout=self.timeout)
        if self._started is None:
            self._started = self.clock()
        self._stopping = False
        done = 0
        try:
            while not self._stopping:
                round_start = self.clock()
                if await self.refresh_once(session):
                    self.failures = 0
                    self.last_success = self.clock()
                else:
                    self.failures += 1
                    self._maybe_fall_back(self._started)
                self.rounds += 1
                done += 1
                if self._stopping or (max_rounds is not None and done >= max_rounds):
                    break
                delay = max(0.0, self.interval - (self.clock() - round_start))
                with contextlib.suppress(TimeoutError):  # (not wait_for: it may drop a cancel)
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            if self._session is None:
                await session.close()

    async def refresh_once(self, session: aiohttp.ClientSession) -> bool:
        """One round trip: send pending requests, apply the grants. False if GAC failed us."""
        body = {"router": self.router_id, "requests": self.admission.pending_requests(self.clock())}
        try:
            headers = auth.http_headers("POST", "/tokens")  # GAC wants the cluster's key
            async with session.post(
                self.url, json=body, timeout=self.timeout, headers=headers
            ) as response:
                if response.status != 200:
                    raise ValueError(f"GAC answered {response.status}")
                answer = await response.json(content_type=None)
            if not isinstance(answer, dict) or not isinstance(answer.get("grants"), list):
                raise ValueError("GAC answer has no grants list")
            was_fallback = self.admission.in_fallback
            self.admission.apply_grants(answer["grants"], self.clock())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("GAC refresh failed (%d in a row): %s", self.failures + 1, exc)
            return False
        if was_fallback:
            log.warning("GAC reachable again at %s: leaving fallback admission", self.url)
        return True

    def _maybe_fall_back(self, started: float) -> None:
        since = self.last_success if self.last_success is not None else started
        if not self.admission.in_fallback and self.clock() - since >= self.grace_period:
            log.warning(
                "no answer from GAC at %s for %.1f s: admitting at the fallback rate",
                self.url,
                self.clock() - since,
            )
            self.admission.enter_fallback(self.clock())
