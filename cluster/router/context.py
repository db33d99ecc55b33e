"""What a router's operations share: table lookups (cache + MemDS), storage, admission.

``PartitionResolver`` implements the constant-work cache of the DynamoDB paper: every lookup is
sent to MemDS, batched, whether or not the local cache answered it, so MemDS load is a function
of router traffic alone and a cold cache cannot multiply it.

    ctx = RouterContext(config, "rt-a", session)
    layout = await ctx.table("orders")            # ResourceNotFoundException if absent
    await ctx.admit(layout, "write", size)        # throttling errors when over capacity
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cluster import auth
from cluster.admission.router_side import GacClient, RouterAdmission, read_units, write_units
from cluster.config import ClusterConfig
from cluster.metadata.partitionmap import Partition, TableLayout, meta_replicas
from cluster.metadata.store import MetadataStore
from cluster.tasks import cancel_and_wait
from cluster.topology import parse_topology

from .errors import DynamoError
from .storage_access import StorageAccess

log = logging.getLogger(__name__)


@dataclass
class _Lookup:
    table: str
    future: asyncio.Future[TableLayout | None] | None  # None: fire-and-forget (cache hit)


@dataclass
class ResolverStats:
    lookups: int = 0
    cache_hits: int = 0
    memds_batches: int = 0
    memds_failures: int = 0


MISS_BATCH_SECONDS = 0.002
"""How long a lookup the cache could not answer waits for others to join its batch."""

HIT_BATCH_SECONDS = 0.02
"""How long lookups the cache answered gather before they go to MemDS: nobody waits for them
(they keep MemDS informed and the cache fresh). At 2 ms, like misses, a router serving ~1,000
requests/s sent MemDS a few hundred HTTP requests a second, each costing the router's HTTP
client and MemDS's server CPU; every lookup still goes (constant work), in fewer batches."""


class PartitionResolver:
    def __init__(self, memds_urls: list[str], session: aiohttp.ClientSession) -> None:
        self.memds_urls = memds_urls  # nearest first
        self.session = session
        self.cache: dict[str, TableLayout] = {}
        # Map version each entry was learned at: an answer from a MemDS whose map is older
        # (it has not refreshed since this router created the table) must not override it.
        self.versions: dict[str, int] = {}
        self.queue: list[_Lookup] = []
        self.wake = asyncio.Event()
        self.missed = asyncio.Event()  # a lookup in the queue waits for its answer
        self.stats = ResolverStats()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._flush_loop(), name="memds-lookups")

    async def stop(self) -> None:
        await cancel_and_wait(self.task)

    async def table(self, name: str, timeout: float = 3.0) -> TableLayout | None:
        self.stats.lookups += 1
        cached = self.cache.get(name)
        if cached is not None:
            self.stats.cache_hits += 1
            self._enqueue(_Lookup(name, None))  # constant work: MemDS hears of it anyway
            return cached
        future: asyncio.Future[TableLayout | None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Lookup(name, future))
        return await asyncio.wait_for(future, timeout)

    def invalidate(self, name: str) -> None:
        self.cache.pop(name, None)
        self.versions.pop(name, None)

    def learn(self, name: str, layout: TableLayout | None, version: int) -> None:
        if version < self.versions.get(name, -1):
            return
        self.versions[name] = version
        if layout is None:
            self.cache.pop(name, None)
        else:
            self.cache[name] = layout

    def _enqueue(self, lookup: _Lookup) -> None:
        self.queue.append(lookup)
        self.wake.set()
        if lookup.future is not None:
            self.missed.set()

    async def _flush_loop(self) -> None:
        while True:
            await self.wake.wait()
            if not self.missed.is_set():
                # Only lookups the cache answered: they keep MemDS informed (and the cache
                # fresh) and nobody waits for them, so they gather for HIT_BATCH_SECONDS,
                # unless a lookup that waits (a miss) comes first.
                # (asyncio.timeout, not wait_for: on Python 3.11 wait_for may drop a cancel)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HIT_BATCH_SECONDS):
                        await self.missed.wait()
            await asyncio.sleep(MISS_BATCH_SECONDS)  # let concurrent requests join this batch
            self.wake.clear()
            self.missed.clear()
            batch, self.queue = self.queue, []
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[_Lookup]) -> None:
        tables = [lookup.table for lookup in batch]
        self.stats.memds_batches += 1
        for url in self.memds_urls:
            try:
                async with self.session.post(
                    url + "/lookup",
                    json={"tables": tables},
                    timeout=aiohttp.ClientTimeout(1.0),
                    headers=auth.http_headers("POST", "/lookup"),
                ) as resp:
                    if resp.status != 200:
                        continue
                    body = await resp.json()
                break
            except (aiohttp.ClientError, TimeoutError):
                continue
        else:
            self.stats.memds_failures += 1
            for lookup in batch:
                if lookup.future is not None and not lookup.future.done():
                    lookup.future.set_exception(DynamoError.unavailable("metadata unavailable"))
            return
        version = int(body["version"])
        for name, layout in body["tables"].items():
            self.learn(name, None if layout is None else TableLayout.from_dict(layout), version)
        for lookup in batch:
            if lookup.future is not None and not lookup.future.done():
                lookup.future.set_result(self.cache.get(lookup.table))


@dataclass
class RouterContext:
    config: ClusterConfig
    router_id: str
    session: aiohttp.ClientSession
    deadline: float = 5.0  # control-plane work (tables, the partition map)
    # All storage work of one item request on one partition (ClusterConfig.timeouts): a
    # partition without a reachable leader answers a retryable error within it.
    request_budget: float = field(init=False)
    resolver: PartitionResolver = field(init=False)
    storage: StorageAccess = field(init=False)
    metadata: MetadataStore = field(init=False)
    admission: RouterAdmission = field(init=False)
    gac: GacClient | None = field(init=False, default=None)
    gac_url: str = field(init=False, default="")
    registered: set[str] = field(init=False, default_factory=set)
    first_seen: dict[str, float] = field(init=False, default_factory=dict)
    # Tables this router is bringing to ACTIVE, by TableId (tablebuild.py).
    builds: dict[str, asyncio.Task[Any]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        me = self.config.process(self.router_id)
        memds = sorted(self.config.processes_with_role("memds"), key=lambda p: p.az != me.az)
        urls = [f"http://{self.config.dial_address(self.router_id, p.id)}" for p in memds]
        self.resolver = PartitionResolver(urls, self.session)
        self.storage = StorageAccess(self.config, self.router_id)
        self.request_budget = self.storage.timeouts.request
        topology = parse_topology(self.config.topology)
        self.metadata = MetadataStore(self.storage.nodes, meta_replicas(topology), self.deadline)
        self.admission = RouterAdmission(self.router_id, time.monotonic())
        gacs = self.config.processes_with_role("gac")
        if gacs:
            self.gac_url = f"http://{self.config.dial_address(self.router_id, gacs[0].id)}"
            self.gac = GacClient(self.gac_url, self.router_id, self.admission, session=self.session)

    async def start(self) -> None:
        self.resolver.start()
        if self.gac is not None:
            self._gac_task = asyncio.create_task(self.gac.run(), name="gac")

    async def stop(self) -> None:
        for build in list(self.builds.values()):
            await cancel_and_wait(build)
        await self.resolver.stop()
        if self.gac is not None:
            await cancel_and_wait(self._gac_task)
        await self.storage.close()

    async def table(self, name: str, active: bool = True) -> TableLayout:
        try:
            layout = await self.resolver.table(name)
        except TimeoutError:
            raise DynamoError.unavailable("metadata lookup timed out") from None
        if layout is None or (active and layout.spec.status != "ACTIVE"):
            # DynamoDB's item operations say only "Requested resource not found"; operations
            # on the table itself (active=False: DescribeTable, UpdateTable, ...) name it.
            raise DynamoError.not_found(None if active else name)
        if layout.spec.name not in self.registered and self.gac is not None:
            await self.register_capacity(layout)
        return layout

    async def register_capacity(self, layout: TableLayout) -> None:
        """Tell GAC this table's rates (idempotent; GAC forgets on restart, so we repeat)."""
        spec = layout.spec
        body = {
            "read_rate": spec.read_capacity,
            "write_rate": spec.write_capacity,
            "mode": spec.billing_mode,
        }
        try:
            path = f"/tables/{spec.name}"
            async with self.session.put(
                self.gac_url + path,
                json=body,
                headers=auth.http_headers("PUT", path),
                timeout=aiohttp.ClientTimeout(1.0),
            ) as resp:
                if resp.status == 200:
                    self.registered.add(spec.name)
        except (aiohttp.ClientError, TimeoutError) as exc:  # the router-side fallback applies
            log.warning("could not register %s with GAC: %s", spec.name, exc)

    async def admit(self, layout: TableLayout, kind: str, size: int) -> None:
        if self.gac is None:
            return
        if kind == "write":
            units, bucket = write_units(size), "write"
        else:
            units, bucket = read_units(size, kind == "read_consistent"), "read"
        now = time.monotonic()
        admitted = self.admission.try_admit(layout.spec.name, bucket, units, now)
        first_seen = self.first_seen.setdefault(layout.spec.name, now)
        if not admitted and now - first_seen < self.gac.interval:
            # A table this router has not been granted tokens for yet: admit while the first
            # grant is on its way (asked for now), rather than throttle a cold start.
            self.gac.wake()
            admitted = True
        if not admitted and layout.spec.billing_mode != "PROVISIONED":
            # On-demand: the table limit (tens of thousands of units/s) is far above what a
            # router's grant lag would refuse; the demand is still reported to GAC, and the
            # partition buckets at the leaders still protect the storage nodes.
            admitted = True
        if not admitted:
            raise DynamoError.throttled(provisioned=True)

    async def read(
        self, layout: TableLayout, partition: Partition, op: str, consistent: bool, **fields: Any
    ) -> dict[str, Any]:
        """One read of ``layout``'s table on ``partition`` (``get``, ``query``, ``scan``),
        admitted first (one read unit, consistent or not), within the request's budget."""
        await self.admit(layout, "read_consistent" if consistent else "read", 1)
        return await self.storage.read(
            partition, op, consistent, self.request_budget, tbl=layout.spec.name, **fields
        )

    def describe_stats(self) -> dict[str, Any]:
        s = self.resolver.stats
        return {"lookups": s.lookups, "cache_hits": s.cache_hits, "memds_batches": s.memds_batches}
