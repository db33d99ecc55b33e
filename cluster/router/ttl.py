"""Time to Live: routers delete items whose expiry time has passed, in the background.

Every ``SWEEP_SECONDS`` a router (rereading the partition map every ``MAP_SECONDS``) walks,
for each ACTIVE table with Time to Live enabled, its share of the partitions (partition index
modulo the number of routers, so each partition has one sweeper and a router that is down only
delays expiry), at most ``SWEEP_ITEMS`` items per partition per sweep, resuming where the last
sweep stopped. An item expires when its TTL attribute is a Number of epoch seconds in the past,
but not more than five years in the past (DynamoDB's rule). The delete is conditional on the
attribute still holding the value that was read, so an item updated meanwhile (its TTL pushed
back) survives; like DynamoDB, expiry is best effort and an expired item stays readable until
it is deleted.

    sweeper = TtlSweeper(ctx)
    task = asyncio.create_task(sweeper.run())
    deleted = await sweeper.sweep_once()   # one pass, for tests and tools
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from cluster.metadata.partitionmap import Partition, TableLayout
from cluster.metadata.store import MetadataUnavailable
from cluster.storage.commands import Condition, DeleteCommand
from cluster.tasks import run_every

from . import txnhooks
from .context import RouterContext
from .errors import DynamoError

log = logging.getLogger(__name__)

SWEEP_SECONDS = 2.0
SWEEP_ITEMS = 200
MAP_SECONDS = 6.0  # how often a sweeper rereads the partition map for TTL settings
FIVE_YEARS = 5 * 365 * 24 * 3600


def expired(av: Any, now: float) -> bool:
    """Whether a TTL attribute value says the item has expired at ``now``."""
    if not isinstance(av, dict) or not isinstance(av.get("N"), str):
        return False
    try:
        at = Decimal(av["N"])
    except InvalidOperation:
        return False
    return now - FIVE_YEARS <= at <= Decimal(str(now))


class TtlSweeper:
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        self.cursors: dict[str, list[bytes] | None] = {}  # partition id -> resume after
        self.deleted = 0
        self.tables: list[TableLayout] | None = None  # those with TTL, from the last map read
        self.read_at = 0.0

    async def run(self) -> None:
        await run_every(
            SWEEP_SECONDS,
            self.sweep_once,
            "TTL sweep",
            (DynamoError, MetadataUnavailable, TimeoutError),
            log,
        )

    async def sweep_once(self) -> int:
        routers = sorted(p.id for p in self.ctx.config.processes_with_role("router"))
        mine = routers.index(self.ctx.router_id)
        if self.tables is None or time.monotonic() - self.read_at > MAP_SECONDS:
            current = await self.ctx.metadata.read_map()
            self.tables = [t for t in current.tables.values() if t.spec.ttl_attribute]
            self.read_at = time.monotonic()
        deleted = 0
        now = time.time()
        for layout in self.tables:
            attribute = layout.spec.ttl_attribute
            if attribute is None or layout.spec.status != "ACTIVE":
                continue
            for partition in layout.partitions:
                if partition.index % len(routers) == mine:
                    deleted += await self._sweep(layout, partition, attribute, now)
        self.deleted += deleted
        return deleted

    async def _sweep(
        self, layout: TableLayout, partition: Partition, attribute: str, now: float
    ) -> int:
        reply = await self.ctx.storage.read(
            partition,
            "scan",
            False,
            self.ctx.request_budget,
            tbl=layout.spec.name,
            start_after=self.cursors.get(partition.id),
            limit=SWEEP_ITEMS,
        )
        rows = reply["items"]
        self.cursors[partition.id] = [rows[-1][0], rows[-1][1]] if reply["more"] and rows else None
        deleted = 0
        for pk, sk, item in rows:
            value = item.get(attribute)
            if not expired(value, now):
                continue
            unchanged = Condition("#ttl = :ttl", {"#ttl": attribute}, {":ttl": value})
            cmd = DeleteCommand(layout.spec.name, pk, sk, unchanged)
            try:
                result = await txnhooks.write_item(self.ctx, partition, cmd)
            except DynamoError as exc:
                log.info("TTL delete in %s deferred: %s", partition.id, exc.message)
                continue
            deleted += int(result.ok)
        return deleted
