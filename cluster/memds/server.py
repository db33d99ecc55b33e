"""MemDS: the partition map held in memory and served to routers.

A MemDS server re-reads the whole map from the replicated ``meta`` group at a fixed rate and
answers batched lookups from memory. Routers send every lookup here whether or not their own
cache hit (constant work), so the load on MemDS follows client traffic and does not jump when
router caches go cold.

    POST /lookup {"tables": ["orders", "users"]}
      -> {"version": 12, "tables": {"orders": {layout...}, "users": null}}
    GET /map -> the whole map;  GET /health;  GET /metrics
Every request but /health and /metrics needs the cluster's internal key (cluster/auth.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from cluster.auth import guard
from cluster.metadata.partitionmap import PartitionMap
from cluster.metadata.store import MetadataStore, MetadataUnavailable
from cluster.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class MemDS:
    def __init__(self, meta: MetadataStore, refresh_seconds: float = 0.25) -> None:
        self.meta = meta
        self.refresh_seconds = refresh_seconds
        self.map = PartitionMap(0, {})
        self.loaded_at: float | None = None
        self.registry = CollectorRegistry()
        self.lookups = Counter("memds_lookups", "Table lookups answered", registry=self.registry)
        self.requests = Counter("memds_requests", "Lookup requests", registry=self.registry)
        self.refresh_failures = Counter(
            "memds_refresh_failures", "Failed map refreshes", registry=self.registry
        )
        self.version = Gauge("memds_map_version", "Partition map version", registry=self.registry)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_loop(), name="memds-refresh")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                self.map = await self.meta.read_map()
                self.loaded_at = time.monotonic()
                self.version.set(self.map.version)
            except MetadataUnavailable as exc:
                self.refresh_failures.inc()
                log.warning("map refresh failed: %s", exc)
            await asyncio.sleep(self.refresh_seconds)

    def lookup(self, tables: list[str]) -> dict[str, Any]:
        self.requests.inc()
        self.lookups.inc(len(tables))
        found = {
            t: (self.map.tables[t].to_dict() if t in self.map.tables else None) for t in tables
        }
        return {"version": self.map.version, "tables": found}

    def app(self) -> web.Application:
        async def lookup(request: web.Request) -> web.Response:
            try:
                body = await request.json()
                tables = body["tables"]
                if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
                    raise ValueError("tables must be a list of names")
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
                return web.json_response({"error": f"bad lookup: {exc}"}, status=400)
            if self.loaded_at is None:
                return web.json_response({"error": "map not loaded yet"}, status=503)
            return web.json_response(self.lookup(tables))

        async def whole_map(_: web.Request) -> web.Response:
            names = sorted(self.map.tables)
            return web.json_response(self.lookup(names) | {"list": names})

        async def health(_: web.Request) -> web.Response:
            ok = self.loaded_at is not None
            age = None if self.loaded_at is None else round(time.monotonic() - self.loaded_at, 3)
            body = {"status": "ok" if ok else "loading", "version": self.map.version, "age": age}
            return web.json_response(body, status=200 if ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), content_type="text/plain")

        app = web.Application(middlewares=[guard()])  # all but /health, /metrics need the key
        app.router.add_post("/lookup", lookup)
        app.router.add_get("/map", whole_map)
        app.router.add_get("/health", health)
        app.router.add_get("/metrics", metrics)
        return app
