"""A router's background rounds over the table list: abandoned creations and unfinished drops.

Every SWEEP_SECONDS one consistent read of the metadata (``MetadataStore.scan``: the map and
the deleted tables' drains, from one paged scan of ``__tables``) is handed to
``tablebuild.StaleBuilds`` (resume an abandoned CREATING table) and to ``tabledrain.TableDrains``
(drop a deleted table's groups where that is not acknowledged yet). Each read the whole list
every 5 s on its own before: two consistent scans per round of the meta group's leader, on
every router. Each module keeps its own job; this one only shares the read.

Router number i (of the config's routers, sorted) starts its StaleBuilds i tables further in
its turn, so that with several abandoned creations the routers do not all resume the same one
first (N duplicate builds: harmless, but one table at a time per router).

    asyncio.create_task(TableSweeps(ctx).run())     # the router's background
"""

from __future__ import annotations

import logging

from cluster.metadata.store import MetadataUnavailable
from cluster.tasks import run_every

from .context import RouterContext
from .errors import DynamoError
from .tablebuild import StaleBuilds
from .tabledrain import TableDrains

log = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0
"""How often a router reads the table list for abandoned creations and unfinished drains."""


def router_number(ctx: RouterContext) -> int:
    """This router's place among the config's routers (sorted ids); 0 if it is not listed."""
    routers = sorted(p.id for p in ctx.config.processes_with_role("router"))
    return routers.index(ctx.router_id) if ctx.router_id in routers else 0


class TableSweeps:
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        self.builds = StaleBuilds(ctx, offset=router_number(ctx))
        self.drains = TableDrains(ctx)

    async def run(self) -> None:
        expected = (DynamoError, MetadataUnavailable, TimeoutError)
        await run_every(SWEEP_SECONDS, self.sweep_once, "table sweeps", expected, log)

    async def sweep_once(self) -> None:
        """One round: one read, then each job (the drains' even when the builds' failed; a
        round's drops can take a few DROP_SECONDS, so the builds go first: they only start a
        task)."""
        pmap, drains = await self.ctx.metadata.scan()
        failed: Exception | None = None
        try:
            await self.builds.resume_once(pmap)
        except Exception as exc:  # raised below, once the drains had their turn
            failed = exc
        await self.drains.drain_due(drains)
        if failed is not None:
            raise failed
