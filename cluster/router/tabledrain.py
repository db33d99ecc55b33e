"""Dropping a deleted table's groups until they can commit nothing more, before its name is reused.

DeleteTable replaces the table by a tombstone and asks the storage nodes to drop its groups
(``drop_group``, ``deleted=True``: the node then never hosts that table's group again,
deleted.json). A drop that fails (a node down, or cut off from this router) used to be
forgotten. Yet a router whose table cache is stale (MemDS unreachable) still names the deleted
table, and two replicas of one of its groups that missed the drop are a quorum: they elect and
acknowledge that router's writes. Once CreateTable reused the name, such a write was in no
table a reader looks at: an acknowledged write lost (session 14, "gap 5").

So the drops go on until they cannot: the tombstone records, per group, the storage nodes that
have not acknowledged the drop yet (``store.Drain``), and the name stays taken (CreateTable:
ResourceInUseException; DescribeTable: DELETING) while some group has 2 or more such nodes.
The pending list starts with every node of the cluster, not the map's replicas: a group's
members may have changed (healing) since the map said so, and a leftover leader's healing could
place it on a node that never got a drop. Healing never shrinks a group below 2 members, so
with at most one node left that did not drop a group, no quorum of it exists, whatever its
members: every write it acknowledged was acknowledged before the name could be used again (a
write to a table that was then deleted, not a lost one).

DeleteTable makes the first attempt itself (all drops at once, each bounded), so that with
every node up the name is free when it answers, as before; it does not wait for more. Every
router then resumes unfinished drains in the background (``TableDrains``, like
``tablebuild.StaleBuilds`` for creations): a router that stops mid-delete does not hold the name
for ever. After the name is free the remaining nodes are still asked, for up to
``CLEANUP_SECONDS`` (a leftover replica's disk space; it can commit nothing).

While a drain holds the name, DescribeTable answers the table DELETING (as DynamoDB does until
the table is gone), not ResourceNotFoundException (and DeleteTable of it answers DELETING, no
error, as DynamoDB's does for a table already DELETING): clients recreate a table with
DeleteTable, the ``table_not_exists`` waiter, then CreateTable, and the SDKs do not retry
CreateTable's ResourceInUseException, so the waiter must go on waiting until the name is free.
The map, which MemDS, healing and the storage nodes' reconcile read, still has only the
tombstone, so none of them treats it as a table; ListTables does not show it
(tables.list_tables says why). CreateTable's refusal and the drains' warning name the nodes the
name waits for.

    drain = Drain(name, version, incarnation, {g: nodes for g in groups}, time.time())
    await ctx.metadata.delete(name, version, table_id, drain)   # DeleteTable
    await drain_once(ctx, drain)                                # its first attempt
    await TableDrains(ctx).drain_due()                          # each round (tablesweep.py)
"""

from __future__ import annotations

import asyncio
import logging
import time

from cluster.metadata.partitionmap import TableLayout
from cluster.metadata.store import Drain
from cluster.topology import parse_topology

from .context import RouterContext
from .errors import DynamoError

log = logging.getLogger(__name__)

DROP_SECONDS = 3.0
"""How long one drop call may take (a node cut off must not hold an attempt for long)."""

DRAIN_SECONDS = 5.0
"""The first wait before a drain is attempted again (then doubling); a router looks for
unfinished drains every ``tablesweep.SWEEP_SECONDS``."""

MAX_BACKOFF = 30.0
"""The longest wait between two attempts at one drain (doubling from DRAIN_SECONDS)."""

DROPS_IN_FLIGHT = 64
"""The most drop calls one router has in flight at once: per DeleteTable's first attempt, and
per TableDrains round across all its drains (each round used to send drains x partitions x
nodes calls at once, on every router). A table of the default 4 partitions in a 3x2x1 cluster
is 24 calls, so with every node up its DeleteTable still drops everything in one wave; a call
to a node that does not answer holds its slot for up to DROP_SECONDS."""

CLEANUP_SECONDS = 3600.0
"""How long after the DeleteTable nodes that missed a drop are still asked, once the name is
free (the drain's gate needs no more)."""


def new_drain(ctx: RouterContext, layout: TableLayout, version: int) -> Drain:
    """The drain of ``layout``'s table, deleted at ``version``: every group, every node of the
    cluster (and any the map lists outside it) pending."""
    nodes = [n.id for n in parse_topology(ctx.config.topology).storage_nodes()]
    nodes += sorted({r for p in layout.partitions for r in p.replicas} - set(nodes))
    pending = {p.id: tuple(nodes) for p in layout.partitions}
    return Drain(layout.spec.name, version, layout.spec.incarnation, pending, time.time())


def in_use_message(drain: Drain) -> str:
    return (
        f"Table {drain.table} is being deleted: the previous table of this name is still being "
        f"dropped from the storage nodes ({drain.holding()} of its {len(drain.pending)} "
        "partitions not yet dropped on enough nodes; waiting for a drop by one more of "
        f"{', '.join(drain.waiting())}). Try again later"
    )


async def drain_once(
    ctx: RouterContext, drain: Drain, slots: asyncio.Semaphore | None = None
) -> Drain:
    """One attempt: ask every pending node to drop its groups (at most DROPS_IN_FLIGHT calls
    at once, through ``slots`` when several drains share them; each call bounded), then record
    what was acknowledged in the tombstone. The drain as it now stands."""
    held = slots if slots is not None else asyncio.Semaphore(DROPS_IN_FLIGHT)

    async def drop(group: str, node: str) -> bool:
        try:
            async with held:
                await ctx.storage.node_call(
                    node,
                    "drop_group",
                    DROP_SECONDS,
                    group=group,
                    # A replica of a newer table of the name stays (StorageNode.drop_group).
                    incarnation=drain.incarnation,
                    deleted=True,  # never created again there (a leftover's healing)
                )
        except (DynamoError, TimeoutError):
            return False
        except Exception:  # e.g. KeyError: a node the map lists that this router cannot dial
            log.warning("table %s: drop of %s on %s failed", drain.table, group, node,
                        exc_info=True)  # fmt: skip
            return False
        return True

    calls = [(g, n) for g, nodes in drain.pending.items() for n in nodes]
    answers = await asyncio.gather(*(drop(g, n) for g, n in calls))
    acked: dict[str, set[str]] = {}
    for (group, node), ok in zip(calls, answers, strict=True):
        if ok:
            acked.setdefault(group, set()).add(node)
    if not acked:
        return drain
    after = drain.without(acked)
    if not await ctx.metadata.save_drain(after):
        return Drain(drain.table, drain.version, drain.incarnation, {}, drain.since)  # gone
    if drain.holding() and not after.holding():
        log.info("table %s: the deleted table's groups are dropped; the name is free", drain.table)
    return after


class TableDrains:
    """A router's background resumption of unfinished drains: each round (``tablesweep``) it
    gets the tombstones with nodes pending and makes one attempt at each that is due (backing
    off per drain, doubling up to MAX_BACKOFF). Every router does it: a drain's drops are idempotent
    and its progress only ever shrinks (``MetadataStore.save_drain``), so two routers draining
    the same table do no harm."""

    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        # (table, tombstone version) -> (attempts made here, monotonic time of the next)
        self.due: dict[tuple[str, int], tuple[int, float]] = {}

    async def drain_due(self, pending: list[Drain] | None = None) -> list[Drain]:
        """One attempt at each drain that is due, of ``pending`` (the metadata's unfinished
        drains, read here if None); the drains as they now stand."""
        now = time.monotonic()
        if pending is None:
            pending = await self.ctx.metadata.drains()
        drains = [d for d in pending if d.holding() or time.time() - d.since < CLEANUP_SECONDS]
        keys = {(d.table, d.version) for d in drains}
        self.due = {k: v for k, v in self.due.items() if k in keys}  # bounded by the map
        ready = [d for d in drains if self.due.get((d.table, d.version), (0, 0.0))[1] <= now]
        slots = asyncio.Semaphore(DROPS_IN_FLIGHT)  # for the whole round, every drain
        after = await asyncio.gather(*(drain_once(self.ctx, d, slots) for d in ready))
        for drain in after:
            key = (drain.table, drain.version)
            attempts = self.due.get(key, (0, 0.0))[0] + 1
            wait = min(MAX_BACKOFF, DRAIN_SECONDS * 2 ** min(attempts, 6))
            self.due[key] = (attempts, time.monotonic() + wait)
            if drain.holding():
                log.warning("table %s: %d groups not yet dropped on enough nodes (attempt %d; "
                            "waiting for one more of %s)", drain.table, drain.holding(), attempts,
                            ", ".join(drain.waiting()))  # fmt: skip
        return after
