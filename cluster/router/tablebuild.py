"""Bringing a CREATING table to ACTIVE: its groups created, elected, then the map says ACTIVE.

CreateTable records the table as CREATING, starts its build and answers once the table is
ACTIVE or after ``ANSWER_WAIT`` seconds (then still CREATING, as DynamoDB answers: clients wait
for ACTIVE through DescribeTable). The build does not end with the request that started it: it
retries until the table is ACTIVE, deleted, or ``BUILD_SECONDS`` have passed. A table left
CREATING by a router that stopped or gave up is picked up by DescribeTable on any router
(``resume_stale``), which most clients waiting for ACTIVE call, and by every router's
``StaleBuilds`` in the background (one that never calls it would wait for ever: the chart's
smoke.py, a client polling GetItem). Without this a CreateTable that
met a slow election (15 s) or a node that did not answer left the table CREATING for ever: the
client, retrying, was told ResourceInUseException and waited in vain (CI, session 12).

Two routers may build the same table: creating a group is idempotent (same incarnation) and
the switch to ACTIVE is a conditional write (still CREATING, same TableId), so a deleted
table is never brought back.

    await wait_built(start_build(ctx, layout), ANSWER_WAIT)    # CreateTable
    resume_stale(ctx, layout)                                  # DescribeTable of a CREATING one
    await StaleBuilds(ctx).resume_once()                       # each round (tablesweep.py)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace

import aiohttp

from cluster import auth
from cluster.admission.partition import partition_share
from cluster.metadata.partitionmap import Partition, PartitionMap, TableLayout, next_version
from cluster.metadata.store import MetadataUnavailable

from .context import RouterContext
from .errors import DynamoError

log = logging.getLogger(__name__)

ANSWER_WAIT = 10.0
"""How long CreateTable waits for its table to be ACTIVE before it answers CREATING (below
the SDKs' read timeouts, so a slow creation is not a client error that retries)."""

BUILD_SECONDS = 600.0
"""How long one build keeps retrying; DescribeTable starts another after it (``resume_stale``)."""

STALE_SECONDS = 15.0
"""A CREATING table older than this, with no build in this router, gets one on DescribeTable:
its creating router stopped or gave up (a healthy creation takes about one election)."""

ELECTION_WAIT = 15.0
"""How long one attempt waits for each partition's group to answer a consistent read."""


async def wait_built(build: asyncio.Task[TableLayout | None], seconds: float) -> None:
    """Wait up to ``seconds`` for ``build``; DynamoError when it ended without an ACTIVE
    table (deleted meanwhile, or it ran out of time)."""
    done, _ = await asyncio.wait({build}, timeout=seconds)
    if done and build.result() is None:
        raise DynamoError.in_use("The table was deleted while it was being created")


def start_build(ctx: RouterContext, layout: TableLayout) -> asyncio.Task[TableLayout | None]:
    """This router's build of ``layout`` (CREATING): the one running, or a new one."""
    table_id = layout.spec.table_id
    build = ctx.builds.get(table_id)
    if build is None or build.done():
        build = asyncio.create_task(_build(ctx, layout), name=f"build-{layout.spec.name}")
        ctx.builds[table_id] = build

        def forget(task: asyncio.Task[TableLayout | None]) -> None:
            if ctx.builds.get(table_id) is task:
                del ctx.builds[table_id]
            error = None if task.cancelled() else task.exception()  # retrieved, waited or not
            if error is not None and not isinstance(error, DynamoError):  # a bug: say so
                log.error("table %s: build failed", layout.spec.name, exc_info=error)

        build.add_done_callback(forget)
    return build


def abandoned(ctx: RouterContext, layout: TableLayout) -> bool:
    """Is ``layout`` CREATING, older than STALE_SECONDS and not building in this router?"""
    spec = layout.spec
    if spec.status != "CREATING" or spec.table_id in ctx.builds:
        return False
    return time.time() - spec.created_at >= STALE_SECONDS


def resume_stale(
    ctx: RouterContext, layout: TableLayout
) -> asyncio.Task[TableLayout | None] | None:
    """Build ``layout`` here if it is CREATING and looks abandoned: older than STALE_SECONDS
    and not building in this router. The build started, if any."""
    spec = layout.spec
    if not abandoned(ctx, layout):
        return None
    log.warning("table %s: CREATING for %.0fs; resuming its creation",
                spec.name, time.time() - spec.created_at)  # fmt: skip
    return start_build(ctx, layout)


class StaleBuilds:
    """A router's background resumption of abandoned creations: each round (``tablesweep``) it
    gets the map and resumes one stale CREATING table (``resume_stale``), one at a time: the next
    only once the build it started ended (a build retries for up to BUILD_SECONDS; the tables
    behind it wait, or a DescribeTable resumes them). Every router does it: two builds of one
    table are harmless (idempotent creates, conditional activation).

    In turn: the tables this router never resumed first (oldest first), then the one it
    resumed least recently. A table whose build never succeeds (its placement needs nodes that
    are gone) thus goes behind the others after each try, instead of being picked again after
    every build and starving every other abandoned creation (review, session 14). Among the
    tables it never resumed, router number ``offset`` starts ``offset`` tables further (in
    turn), so that routers resume different abandoned tables at first, not all the oldest."""

    def __init__(self, ctx: RouterContext, offset: int = 0) -> None:
        self.ctx = ctx
        self.offset = offset
        self.build: asyncio.Task[TableLayout | None] | None = None
        # table id -> the round this router last resumed it in; only tables still CREATING
        # in the last map read are kept (bounded by the map).
        self.resumed: dict[str, int] = {}
        self.rounds = 0

    async def resume_once(self, pmap: PartitionMap | None = None) -> str | None:
        """Resume one abandoned creation of ``pmap`` (the map, read here if None); the table's
        name, or None (none, or one running)."""
        if self.build is not None and not self.build.done():
            return None
        if pmap is None:
            pmap = await self.ctx.metadata.read_map()
        tables = pmap.tables.values()
        creating = {t.spec.table_id for t in tables if t.spec.status == "CREATING"}
        self.resumed = {i: r for i, r in self.resumed.items() if i in creating}
        self.rounds += 1

        def turn(t: TableLayout) -> tuple[int, float, str]:
            return self.resumed.get(t.spec.table_id, 0), t.spec.created_at, t.spec.name

        stale = [t for t in sorted(tables, key=turn) if abandoned(self.ctx, t)]
        never = sum(1 for t in stale if t.spec.table_id not in self.resumed)  # first in turn
        if never:
            k = self.offset % never
            stale = stale[k:never] + stale[:k] + stale[never:]
        for layout in stale:
            self.build = resume_stale(self.ctx, layout)
            if self.build is not None:
                self.resumed[layout.spec.table_id] = self.rounds
                return layout.spec.name
        return None


async def _build(ctx: RouterContext, layout: TableLayout) -> TableLayout | None:
    """Create the groups and switch the table to ACTIVE, retrying until done, deleted (None)
    or out of time (DynamoError)."""
    name = layout.spec.name
    deadline = time.monotonic() + BUILD_SECONDS
    for attempt in range(1, 10_000):  # bounded; the deadline ends it first
        # Before any group is created: a build from a stale view (a router's cache, a MemDS
        # that lags) of a table deleted since must not put its groups back on the nodes.
        status = await _now(ctx, layout)
        if status in ("ACTIVE", "gone"):
            log.info("table %s: %s; this build stops", name, status)
            return None if status == "gone" else layout
        try:
            if status == "unknown":
                raise MetadataUnavailable("the metadata group did not answer")
            await _create_groups(ctx, layout)
            return await _activate(ctx, layout)
        except (DynamoError, MetadataUnavailable) as exc:
            if time.monotonic() > deadline:
                log.error("table %s: still not ACTIVE after %.0fs: %s", name, BUILD_SECONDS, exc)
                raise DynamoError.unavailable(f"table {name} not created: {exc}") from None
            level = logging.DEBUG if attempt & (attempt - 1) else logging.WARNING  # 1, 2, 4, ...
            log.log(level, "table %s: creation attempt %d failed: %s", name, attempt, exc)
        await asyncio.sleep(min(5.0, 0.2 * 2 ** min(attempt, 5)) * random.uniform(0.5, 1.0))
    return None


async def _activate(ctx: RouterContext, layout: TableLayout) -> TableLayout | None:
    """Switch the table to ACTIVE (conditionally); None when it is gone. MetadataUnavailable
    when the metadata cannot tell (the build tries again)."""
    spec = layout.spec
    active = TableLayout(replace(spec, status="ACTIVE"), layout.partitions)
    version = next_version(spec.incarnation)
    if not await ctx.metadata.activate(active, version):
        # Refused: another router's build made it ACTIVE, this one's earlier write whose
        # outcome was unknown did, or the table was deleted.
        status = await _now(ctx, layout)
        if status == "gone":
            return None
        if status != "ACTIVE":
            raise MetadataUnavailable(f"table {spec.name} is {status} after a refused activation")
    ctx.resolver.learn(spec.name, active, version)  # served here before MemDS refreshes
    await _until_routable(ctx, spec.name)
    log.info("table %s is ACTIVE", spec.name)
    return active


async def _now(ctx: RouterContext, layout: TableLayout) -> str:
    """The status of this table (this TableId) in the metadata: "gone" once it was deleted
    (or replaced by another of its name), "unknown" when the metadata does not answer."""
    try:
        current = (await ctx.metadata.read_map()).tables.get(layout.spec.name)
    except MetadataUnavailable:
        return "unknown"
    if current is None or current.spec.table_id != layout.spec.table_id:
        return "gone"
    return current.spec.status


async def _create_groups(ctx: RouterContext, layout: TableLayout) -> None:
    """Create every partition's group on its replicas; each needs a quorum and a leader."""

    async def create(node: str, group: str, members: list[str]) -> bool:
        try:
            await ctx.storage.node_call(
                node,
                "create_group",
                ctx.deadline,
                group=group,
                members=members,
                rate=partition_rate(layout),
                provisioned=layout.spec.billing_mode == "PROVISIONED",
                incarnation=layout.spec.incarnation,
            )
            return True
        except DynamoError:
            return False  # the node may be down: it joins when it returns (reconcile)

    async def place(partition: Partition) -> None:
        members = list(partition.replicas)
        created = await asyncio.gather(*(create(n, partition.id, members) for n in members))
        if sum(created) < 2:
            raise DynamoError.unavailable(f"could not create a quorum of {partition.id}")

    async def elected(partition: Partition) -> None:
        await ctx.storage.read(
            partition, "get", True, ELECTION_WAIT, tbl=layout.spec.name, pk=b"", sk=b""
        )

    # Every partition at once: the elections run in parallel, so creating a table takes about
    # one election, not one per partition.
    await asyncio.gather(*(place(p) for p in layout.partitions))
    await asyncio.gather(*(elected(p) for p in layout.partitions))


def partition_rate(layout: TableLayout) -> float | None:
    """The partition-level bucket's rate: the table's share with headroom (None: on-demand)."""
    spec = layout.spec
    if spec.billing_mode != "PROVISIONED":
        return None
    return partition_share(spec.read_capacity + spec.write_capacity, len(layout.partitions))


async def _until_routable(ctx: RouterContext, name: str, timeout: float = 3.0) -> None:
    """Wait (bounded) until every MemDS server that answers serves ``name`` as ACTIVE.

    CreateTable answers ACTIVE, and a DynamoDB user then uses the table through any endpoint:
    other routers find tables through MemDS, which reloads the map every few hundred ms, so
    without this wait they would call a table that was just created ResourceNotFound. A MemDS
    server that does not answer is not waited for (routers fall back to the others).
    """

    async def serves(url: str) -> bool:
        try:
            async with ctx.session.post(
                url + "/lookup",
                json={"tables": [name]},
                timeout=aiohttp.ClientTimeout(0.5),
                headers=auth.http_headers("POST", "/lookup"),
            ) as resp:
                if resp.status == 503:
                    return False  # loading its first map: ask again
                body = await resp.json() if resp.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return True  # down or broken: it serves no router, so do not wait for it
        layout = (body.get("tables") or {}).get(name) if isinstance(body, dict) else None
        return isinstance(layout, dict) and layout.get("spec", {}).get("status") == "ACTIVE"

    pending = list(ctx.resolver.memds_urls)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        answers = await asyncio.gather(*(serves(url) for url in pending))
        pending = [url for url, done in zip(pending, answers, strict=True) if not done]
        if pending:
            await asyncio.sleep(0.05)
