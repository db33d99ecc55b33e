"""PartitionResolver: lookups the cache answered gather longer; a miss takes them along at once.

No cluster: MemDS is a stand-in ``_send`` that records each batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.router import context
from cluster.router.context import PartitionResolver


def _resolver(batches: list[list[str]]) -> PartitionResolver:
    resolver = PartitionResolver([], None)  # type: ignore[arg-type]
    resolver.cache["hit"] = object()  # type: ignore[assignment]

    async def send(batch: list[Any]) -> None:
        batches.append([lookup.table for lookup in batch])
        for lookup in batch:
            if lookup.future is not None:
                lookup.future.set_result(None)

    resolver._send = send  # type: ignore[method-assign]
    return resolver


def test_hits_wait_for_a_miss_or_their_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "HIT_BATCH_SECONDS", 30.0)

    async def main() -> None:
        batches: list[list[str]] = []
        resolver = _resolver(batches)
        resolver.start()
        try:
            for _ in range(3):
                assert await resolver.table("hit") is not None  # answered by the cache
                await asyncio.sleep(0.01)
            assert batches == []  # nobody waits for them: they gather
            assert await resolver.table("miss", timeout=10.0) is None  # MemDS answered
            assert batches == [["hit", "hit", "hit", "miss"]]  # one batch, all of them
        finally:
            await resolver.stop()

    asyncio.run(main())


def test_hits_alone_go_after_their_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "HIT_BATCH_SECONDS", 0.05)

    async def main() -> None:
        batches: list[list[str]] = []
        resolver = _resolver(batches)
        resolver.start()
        try:
            await resolver.table("hit")
            for _ in range(1000):  # bounded wait, no timing assert
                if batches:
                    break
                await asyncio.sleep(0.01)
            assert batches == [["hit"]]
        finally:
            await resolver.stop()

    asyncio.run(main())
