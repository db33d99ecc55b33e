"""Global admission control (GAC): the table-wide token pools that request routers draw from.

DynamoDB paper, section 4.2 ("Global admission control"): a table's throughput limit is enforced
by a GAC service, not by each partition alone. Every router keeps local token buckets per table
and, every few seconds, asks GAC to top them up; GAC holds one bucket per table and kind
(read/write), refilled at the table's rate, and hands out what it has. This module is that
service: :class:`GlobalAdmission` is the pure logic (time passed in), :func:`make_gac_app` wraps
it in an aiohttp application.

    gac = GlobalAdmission()
    gac.set_table("orders", read_rate=1000, write_rate=500, mode="PROVISIONED", now=10.0)
    grant = gac.request_tokens("router-az-a", "orders", "write", want=300.0, now=12.0)
    grant.tokens, grant.valid_for_seconds        # e.g. (300.0, 6.0)

    app = make_gac_app(gac)                      # POST /tokens, PUT/DELETE /tables/{name}, ...

Fairness between routers: each (table, kind) remembers which routers asked within the last
``active_intervals`` refresh intervals. A router's fair share of one interval is
``rate * interval / active_routers``. A grant is the smallest of what was asked, what the bucket
holds, and ``max(fair_share, level - reserve)``, where ``reserve`` is the fair share of every
*other* active router. So a router always gets up to its fair share when the pool has it, and
can take more only out of a surplus (burst credit, or routers that asked for less) that still
leaves every other active router its share for the interval. Two routers asking heavily each
end up with half the rate; one router alone may use the whole rate and the burst credit.

Tables are independent: each (table, kind) has its own bucket and its own set of active
routers, so demand on one table never changes grants on another.

On-demand (PAY_PER_REQUEST) tables have no provisioned rate; GAC applies a high per-table
limit (``on_demand_rate``, default 40,000 units per second, like DynamoDB's default on-demand
table maximum) to protect the fleet.

A new table's bucket starts with one interval of tokens, not with a full burst: burst credit is
capacity that went unused, and a table that did not exist has not left any unused.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cluster.auth import guard

from .bucket import BurstCredit, TokenBucket

__all__ = [
    "CapacityMode",
    "GacSettings",
    "GlobalAdmission",
    "Grant",
    "Kind",
    "TableLimits",
    "UnknownTableError",
    "make_gac_app",
]

TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")  # DynamoDB's table-name rule
MAX_REQUESTS_PER_CALL = 1000
MAX_ROUTER_ID_LENGTH = 256


class Kind(StrEnum):
    READ = "read"
    WRITE = "write"


class CapacityMode(StrEnum):
    """DynamoDB's BillingMode values."""

    PROVISIONED = "PROVISIONED"
    PAY_PER_REQUEST = "PAY_PER_REQUEST"


class UnknownTableError(LookupError):
    """Tokens were asked for, or a table dropped, that GAC does not know."""


@dataclass(frozen=True, slots=True)
class Grant:
    """Tokens handed to a router; the router drops what it has not used after ``valid_for``."""

    tokens: float
    valid_for_seconds: float


@dataclass(frozen=True, slots=True)
class TableLimits:
    """A table's effective limits (on-demand tables show the on-demand rate)."""

    table: str
    mode: CapacityMode
    read_rate: float
    write_rate: float

    def rate(self, kind: Kind) -> float:
        return self.read_rate if kind is Kind.READ else self.write_rate


@dataclass(frozen=True, slots=True)
class GacSettings:
    """Tunables. ``interval`` must match the routers' refresh interval."""

    interval: float = 2.0
    on_demand_rate: float = 40_000.0
    active_intervals: float = 3.0  # a router counts as active this many intervals after asking
    valid_for: float = 6.0  # seconds a grant stays usable at the router
    burst_credit: BurstCredit = field(default_factory=BurstCredit)

    def __post_init__(self) -> None:
        for name in ("interval", "on_demand_rate", "active_intervals", "valid_for"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and > 0, got {value}")


@dataclass(slots=True)
class _Pool:
    """One (table, kind): the bucket and when each router last asked."""

    bucket: TokenBucket
    last_ask: dict[str, float] = field(default_factory=dict)


def _check_kind(kind: Kind | str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise ValueError(f"kind must be 'read' or 'write', got {kind!r}") from None


def _check_rate(name: str, rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"{name} must be a number, got {rate!r}")
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"{name} must be finite and >= 0, got {rate}")
    return float(rate)


class GlobalAdmission:
    """Per-table token pools with fair sharing between routers. Pure: ``now`` is passed in."""

    def __init__(self, settings: GacSettings | None = None) -> None:
        self.settings = settings or GacSettings()
        self._limits: dict[str, TableLimits] = {}
        self._pools: dict[tuple[str, Kind], _Pool] = {}

    # -- tables -----------------------------------------------------------------------------

    def set_table(
        self,
        table: str,
        read_rate: float | None,
        write_rate: float | None,
        mode: CapacityMode | str,
        now: float,
    ) -> TableLimits:
        """Register a table or change its limits (units per second); returns what applies.

        Provisioned tables need both rates. On-demand tables ignore the rates given and use
        ``settings.on_demand_rate``. Changing a table keeps the tokens its pools hold (capped at
        the new burst). ``now`` is required even for a new table: it is the pool's time origin
        (a default origin would credit the pool with all the time since then).
        """
        if not isinstance(table, str) or not TABLE_NAME.match(table):
            raise ValueError(f"invalid table name {table!r}: 3-255 of [A-Za-z0-9_.-]")
        try:
            mode = CapacityMode(mode)
        except ValueError:
            raise ValueError(f"mode must be PROVISIONED or PAY_PER_REQUEST, got {mode!r}") from None
        if mode is CapacityMode.PAY_PER_REQUEST:
            read = write = self.settings.on_demand_rate
        else:
            if read_rate is None or write_rate is None:
                raise ValueError("a PROVISIONED table needs read_rate and write_rate")
            read = _check_rate("read_rate", read_rate)
            write = _check_rate("write_rate", write_rate)
        limits = TableLimits(table, mode, read, write)
        self._limits[table] = limits
        for kind in Kind:
            rate = limits.rate(kind)
            burst = self.settings.burst_credit.capacity(rate)
            pool = self._pools.get((table, kind))
            if pool is None:
                initial = rate * self.settings.interval
                bucket = TokenBucket(rate, burst, now, initial=min(initial, burst))
                self._pools[table, kind] = _Pool(bucket)
            else:
                pool.bucket.set_rate(rate, burst, now)
        return limits

    def drop_table(self, table: str) -> None:
        """Forget a table and its pools. Raises :class:`UnknownTableError` if unknown."""
        if self._limits.pop(table, None) is None:
            raise UnknownTableError(table)
        for kind in Kind:
            self._pools.pop((table, kind), None)

    def describe_table(self, table: str) -> TableLimits:
        try:
            return self._limits[table]
        except KeyError:
            raise UnknownTableError(table) from None

    def tables(self) -> list[str]:
        return sorted(self._limits)

    # -- tokens -----------------------------------------------------------------------------

    def request_tokens(
        self, router_id: str, table: str, kind: Kind | str, want: float, now: float
    ) -> Grant:
        """Grant ``router_id`` up to ``want`` tokens of ``table``'s ``kind`` pool (see module doc).

        Raises :class:`UnknownTableError` for an unregistered table and ``ValueError`` for a
        negative or non-finite ``want`` or an unknown kind.
        """
        kind = _check_kind(kind)
        want = _check_rate("want", want)
        pool = self._pools.get((table, kind))
        if pool is None:
            raise UnknownTableError(table)
        pool.last_ask[router_id] = now
        active = self._count_active(pool, now)
        fair_share = pool.bucket.rate * self.settings.interval / active
        level = pool.bucket.level(now)
        reserve = fair_share * (active - 1)
        cap = max(fair_share, level - reserve)
        tokens = pool.bucket.take_up_to(min(want, cap), now)
        return Grant(tokens, self.settings.valid_for)

    def level(self, table: str, kind: Kind | str, now: float) -> float:
        """Tokens left in a table's pool at ``now``."""
        pool = self._pools.get((table, _check_kind(kind)))
        if pool is None:
            raise UnknownTableError(table)
        return pool.bucket.level(now)

    def active_routers(self, table: str, kind: Kind | str, now: float) -> int:
        """How many routers asked for this pool within the active window (0 if none)."""
        pool = self._pools.get((table, _check_kind(kind)))
        if pool is None:
            raise UnknownTableError(table)
        return self._count_active(pool, now)

    def _count_active(self, pool: _Pool, now: float) -> int:
        horizon = now - self.settings.active_intervals * self.settings.interval
        stale = [router for router, asked in pool.last_ask.items() if asked < horizon]
        for router in stale:
            del pool.last_ask[router]
        return len(pool.last_ask)


# -- HTTP ------------------------------------------------------------------------------------


class BadRequest(Exception):
    """A request the GAC API refuses with 400 and this message."""


@dataclass(frozen=True, slots=True)
class _TokenRequest:
    table: str
    kind: Kind
    want: float


class _GacMetrics:
    def __init__(self, gac: GlobalAdmission, clock: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()

        def per_table(name: str, documentation: str) -> Counter:
            """A counter per table and kind (read, write) of token asked for."""
            return Counter(name, documentation, ["table", "kind"], registry=self.registry)

        self.token_requests = per_table(
            "gac_token_requests", "Token requests from routers (one per table and kind asked for)"
        )
        self.tokens_wanted = per_table("gac_tokens_wanted", "Tokens routers asked for")
        self.tokens_granted = per_table("gac_tokens_granted", "Tokens granted to routers")
        self.http_requests = Counter(
            "gac_http_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.registry.register(_PoolCollector(gac, clock))

    def forget_table(self, table: str) -> None:
        for counter in (self.token_requests, self.tokens_wanted, self.tokens_granted):
            for kind in Kind:
                with contextlib.suppress(KeyError):  # never asked for
                    counter.remove(table, kind.value)


class _PoolCollector(Collector):
    """Pool levels, rates and active routers, read at scrape time."""

    def __init__(self, gac: GlobalAdmission, clock: Callable[[], float]) -> None:
        self._gac = gac
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        level = GaugeMetricFamily("gac_pool_tokens", "Tokens in the pool", labels=["table", "kind"])
        rate = GaugeMetricFamily(
            "gac_table_rate", "Units per second the table may use", labels=["table", "kind"]
        )
        active = GaugeMetricFamily(
            "gac_active_routers", "Routers that asked recently", labels=["table", "kind"]
        )
        for table in self._gac.tables():
            limits = self._gac.describe_table(table)
            for kind in Kind:
                labels = [table, kind.value]
                level.add_metric(labels, self._gac.level(table, kind, now))
                rate.add_metric(labels, limits.rate(kind))
                active.add_metric(labels, self._gac.active_routers(table, kind, now))
        yield level
        yield rate
        yield active


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


async def _read_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _parse_token_requests(body: dict[str, Any]) -> tuple[str, list[_TokenRequest]]:
    router = body.get("router")
    if not isinstance(router, str) or not router or len(router) > MAX_ROUTER_ID_LENGTH:
        raise BadRequest(f"'router' must be a non-empty string of at most {MAX_ROUTER_ID_LENGTH}")
    items = body.get("requests")
    if not isinstance(items, list):
        raise BadRequest("'requests' must be a list")
    if len(items) > MAX_REQUESTS_PER_CALL:
        raise BadRequest(f"at most {MAX_REQUESTS_PER_CALL} requests per call")
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"requests[{i}] must be an object")
        table, kind, want = item.get("table"), item.get("kind"), item.get("want")
        if not isinstance(table, str) or not table:
            raise BadRequest(f"requests[{i}].table must be a non-empty string")
        if kind not in ("read", "write"):
            raise BadRequest(f"requests[{i}].kind must be 'read' or 'write'")
        if isinstance(want, bool) or not isinstance(want, int | float):
            raise BadRequest(f"requests[{i}].want must be a number")
        if not (want >= 0 and math.isfinite(want)):
            raise BadRequest(f"requests[{i}].want must be finite and >= 0")
        parsed.append(_TokenRequest(table, Kind(kind), float(want)))
    return router, parsed


def make_gac_app(
    gac: GlobalAdmission, clock: Callable[[], float] = time.monotonic, guarded: bool = False
) -> web.Application:
    """An aiohttp application serving ``gac``; ``clock`` supplies ``now`` for every call.
    ``guarded``: every request but /health and /metrics needs the internal key (cluster.auth).

    Routes: ``POST /tokens``, ``PUT /tables/{name}``, ``DELETE /tables/{name}``,
    ``GET /health``, ``GET /metrics`` (Prometheus text). Every error is a JSON object
    ``{"error": ..., "message": ...}``; malformed input is a 400, never a 500.
    """
    metrics = _GacMetrics(gac, clock)

    @web.middleware
    async def count_and_shape_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except BadRequest as exc:
            response = _error(400, "BadRequest", str(exc))
        except web.HTTPException as exc:  # 404 for unknown paths, 405 for wrong methods
            response = _error(exc.status, exc.reason, exc.text or exc.reason)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        metrics.http_requests.labels(route, str(response.status)).inc()
        return response

    async def post_tokens(request: web.Request) -> web.Response:
        router, items = _parse_token_requests(await _read_object(request))
        now = clock()
        grants = []
        for item in items:
            entry: dict[str, Any] = {"table": item.table, "kind": item.kind.value}
            try:
                grant = gac.request_tokens(router, item.table, item.kind, item.want, now)
            except UnknownTableError:
                # One unknown table must not fail the whole batch: the router gets nothing for
                # it and learns why.
                entry.update(tokens=0.0, valid_for=gac.settings.valid_for, error="unknown table")
            else:
                entry.update(tokens=grant.tokens, valid_for=grant.valid_for_seconds)
                labels = (item.table, item.kind.value)
                metrics.token_requests.labels(*labels).inc()
                metrics.tokens_wanted.labels(*labels).inc(item.want)
                metrics.tokens_granted.labels(*labels).inc(grant.tokens)
            grants.append(entry)
        return web.json_response({"grants": grants})

    async def put_table(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _read_object(request)
        read_rate, write_rate = body.get("read_rate"), body.get("write_rate")
        mode = body.get("mode", CapacityMode.PROVISIONED.value)
        if not isinstance(mode, str):
            raise BadRequest("'mode' must be PROVISIONED or PAY_PER_REQUEST")
        try:
            limits = gac.set_table(name, read_rate, write_rate, mode, now=clock())
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return web.json_response(
            {
                "table": limits.table,
                "mode": limits.mode.value,
                "read_rate": limits.read_rate,
                "write_rate": limits.write_rate,
            }
        )

    async def delete_table(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            gac.drop_table(name)
        except UnknownTableError:
            return _error(404, "ResourceNotFound", f"no table {name!r}")
        metrics.forget_table(name)
        return web.json_response({"table": name, "deleted": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "tables": len(gac.tables())})

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

    guards = [guard()] if guarded else []
    app = web.Application(middlewares=[*guards, count_and_shape_errors])
    app.router.add_post("/tokens", post_tokens)
    app.router.add_put("/tables/{name}", put_table)
    app.router.add_delete("/tables/{name}", delete_table)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    return app
