"""Transaction garbage collection: records and token rows go once nothing can need them.

Every write transaction leaves a record (``#txn`` rows in its home group, ``txnrecords.py``)
and every ClientRequestToken a row (``#tok`` rows in a group of its first table,
``txntokens.py``). Routers sweep them in the background, like Time to Live (each router takes
the partitions whose index modulo the number of routers is its own):

- a token row older than ``TOKEN_TTL`` (DynamoDB's 10-minute idempotency window) is deleted,
  conditionally on its ``ts`` (a token claimed again meanwhile keeps its row);
- a record still pending after ``TXN_STALE`` is aborted (``P -> A``, which loses harmlessly to
  a commit that came first) and its intents resolved by the decision;
- a decided record older than ``RECORD_TTL`` (the token window and a margin, so a record always
  outlives the token rows that name it) is deleted only after its intents are proved gone: the
  sweeper resolves the attempt again in every participant group the record names (idempotent;
  a committed attempt's intents are rolled forward, never back), and deletes the record
  (conditionally on its state) only when every group answered. An ``A`` record that names no
  participants (a tombstone written for a missing record) is deleted as it is: an intent that
  finds no record is aborted once stale, which is what ``A`` says. A ``C`` record without
  participants (written before records named them) is never deleted: nothing proves it unneeded.

Why that is safe: after the window no request can carry the token to the record; a
coordinator's last step on its attempt (the decision) happens within seconds of its start; a
prepare that is applied late (its outcome was unknown to its coordinator) belongs to an attempt
that was aborted, and an intent without a record is aborted once stale.

    sweeper = TxnSweeper(ctx)
    task = asyncio.create_task(sweeper.run())
    counts = await sweeper.sweep_once()   # one pass, for tests and tools
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from cluster.metadata.partitionmap import Partition
from cluster.metadata.store import MetadataUnavailable
from cluster.storage.commands import Condition, DeleteCommand
from cluster.storage.intents import RECORDS
from cluster.tasks import run_every

from .context import RouterContext
from .errors import DynamoError
from .txncoord import decode_parts
from .txnrecords import TXN_STALE, Key, decide, record_state, resolve, ts_of, write_command
from .txntokens import TOKEN_TTL, TOKENS

log = logging.getLogger(__name__)

SWEEP_SECONDS = 30.0
SWEEP_ROWS = 200
SWEEP_PAGES = 25
"""Pages of ``SWEEP_ROWS`` one pass reads per group: at the bank workload's 30 transactions
a second a pass sees more rows than were written since the last one, so rows cannot pile up."""
RECORD_TTL = TOKEN_TTL + 120.0
"""Seconds after its start that a decided record is kept (outliving its token rows)."""


class TxnSweeper:
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        self.cursors: dict[str, list[bytes] | None] = {}  # group id -> resume after
        self.counts: dict[str, int] = defaultdict(int)

    async def run(self) -> None:
        await run_every(
            SWEEP_SECONDS,
            self.sweep_once,
            "transaction sweep",
            (DynamoError, MetadataUnavailable, TimeoutError),
            log,
        )

    async def sweep_once(self, now: float | None = None) -> dict[str, int]:
        """One pass over this router's share; counts of what it did this pass."""
        now = time.time() if now is None else now
        routers = sorted(p.id for p in self.ctx.config.processes_with_role("router"))
        mine = routers.index(self.ctx.router_id)
        before = dict(self.counts)
        pmap = await self.ctx.metadata.read_map()
        for layout in pmap.tables.values():
            if layout.spec.status != "ACTIVE":
                continue
            for partition in layout.partitions:
                if partition.index % len(routers) == mine:
                    await self.sweep_records(partition, now)
                    await self.sweep_tokens(partition, now)
        return {k: v - before.get(k, 0) for k, v in self.counts.items() if v != before.get(k, 0)}

    async def _page(self, partition: Partition, tbl: str, every_page: bool) -> list[Any]:
        """The next ``SWEEP_PAGES`` pages of ``tbl``'s rows in ``partition`` (or all the rest)."""
        rows: list[Any] = []
        for _ in range(10_000 if every_page else SWEEP_PAGES):  # bounded
            reply = await self.ctx.storage.read(
                partition,
                "scan",
                True,
                self.ctx.request_budget,
                tbl=tbl,
                start_after=self.cursors.get(partition.id + tbl),
                limit=SWEEP_ROWS,
            )
            page: list[Any] = reply["items"]
            rows += page
            more = reply["more"] and page
            self.cursors[partition.id + tbl] = [page[-1][0], page[-1][1]] if more else None
            if not more:
                break
        return rows

    async def sweep_tokens(
        self, partition: Partition, now: float, every_page: bool = False
    ) -> None:
        """Delete the token rows whose idempotency window has passed (``SWEEP_PAGES`` pages
        of rows per call, resuming where the last stopped; ``every_page``: to the end)."""
        for pk, sk, row in await self._page(partition, TOKENS, every_page):
            if now - ts_of(row) < TOKEN_TTL:
                continue
            unchanged = Condition("#t = :t", {"#t": "ts"}, {":t": row["ts"]})
            cmd = DeleteCommand(TOKENS, pk, sk, unchanged)
            result = await write_command(self.ctx, partition, cmd)
            self.counts["tokens_deleted"] += int(result.ok)

    async def sweep_records(
        self, partition: Partition, now: float, every_page: bool = False
    ) -> None:
        """Abort the stale pending records of ``partition`` and delete the expired decided
        ones whose intents are proved gone (``SWEEP_PAGES`` pages, or ``every_page``)."""
        for pk, sk, record in await self._page(partition, RECORDS, every_page):
            attempt = str(record.get("k", {}).get("S"))
            state = record_state(record)
            age = now - ts_of(record)
            if state == "P" and age > TXN_STALE:
                decided = await decide(self.ctx, partition, attempt, commit=False)
                if decided in ("C", "A"):
                    self.counts["stale_aborted" if decided == "A" else "found_committed"] += 1
                    await self._resolve_parts(record, attempt, decided == "C")
                continue
            if state not in ("C", "A") or age < RECORD_TTL:
                continue
            if not decode_parts(record) and state == "C":
                continue  # nothing proves its intents gone: kept
            if not await self._resolve_parts(record, attempt, state == "C"):
                continue  # a group did not answer: the next sweep tries again
            same = Condition("#s = :s", {"#s": "st"}, {":s": {"S": state}})
            cmd = DeleteCommand(RECORDS, pk, sk, same)
            result = await write_command(self.ctx, partition, cmd)
            self.counts["records_deleted"] += int(result.ok)

    async def _resolve_parts(self, record: dict[str, Any], attempt: str, commit: bool) -> bool:
        """Resolve ``attempt`` by its decision in every group its record names; True when each
        answered (or is gone with its table)."""
        by_group: dict[str, list[Key]] = defaultdict(list)
        for group, key in decode_parts(record):
            by_group[group].append(key)
        answered = True
        for group, keys in by_group.items():
            partition = await self._partition(keys[0][0], group)
            if partition is None:
                continue  # the table is gone, and its intents with it
            held = await resolve(self.ctx, partition, attempt, commit, keys)
            answered = answered and held is not None
        return answered

    async def _partition(self, table: str, group: str) -> Partition | None:
        try:
            layout = await self.ctx.table(table)
        except DynamoError as exc:
            if exc.type == "ResourceNotFoundException":
                return None
            raise
        found = next((p for p in layout.partitions if p.id == group), None)
        if found is None:
            raise DynamoError.unavailable(f"group {group} is not in {table}'s layout")
        return found
