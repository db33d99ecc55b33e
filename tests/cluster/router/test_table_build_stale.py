"""StaleBuilds (cluster/router/tablebuild.py) resumes abandoned CREATING tables in turn.

It resumed the OLDEST stale table every round. One whose build never succeeds (its placement
needs nodes that are gone: no quorum of a group is ever created) was resumed again each time
its build ended (after BUILD_SECONDS, 600 s), so on every router the abandoned creations
behind it were never resumed in the background (only a DescribeTable resumed them): the
clients StaleBuilds is for (polling GetItem, the chart's smoke.py) waited for ever (review,
session 14). Fake map and builds: no cluster.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from cluster.metadata.partitionmap import (
    KeySchema,
    PartitionMap,
    TableLayout,
    TableSpec,
    build_layout,
)
from cluster.router import tablebuild
from cluster.router.tablebuild import StaleBuilds
from cluster.topology import parse_topology


class FakeMetadata:
    def __init__(self, pmap: PartitionMap) -> None:
        self.pmap = pmap

    async def read_map(self) -> PartitionMap:
        return self.pmap


class FakeContext:
    def __init__(self, pmap: PartitionMap) -> None:
        self.metadata = FakeMetadata(pmap)
        self.builds: dict[str, asyncio.Task[Any]] = {}


def creating(name: str, age: float) -> TableLayout:
    spec = TableSpec(
        name, KeySchema("pk", "S"), created_at=time.time() - age, table_id=f"id-{name}"
    )
    return build_layout(parse_topology("3x1x1"), spec, {})


def resumed_in_rounds(
    monkeypatch: pytest.MonkeyPatch, pmaps: list[PartitionMap], offset: int = 0
) -> tuple[list[str], StaleBuilds]:
    """The tables StaleBuilds resumes in one round per map, each round after the previous
    build ended with the table still CREATING (a build that never succeeds)."""
    resumed: list[str] = []

    def start_build(ctx: Any, layout: TableLayout) -> asyncio.Task[Any]:
        resumed.append(layout.spec.name)

        async def fails() -> None:  # no quorum for BUILD_SECONDS, then it gives up
            return None  # (the table stays CREATING)

        return asyncio.get_running_loop().create_task(fails())

    monkeypatch.setattr(tablebuild, "start_build", start_build)
    context = FakeContext(pmaps[0])
    resumer = StaleBuilds(context, offset)  # type: ignore[arg-type]

    async def rounds() -> None:
        for pmap in pmaps:
            context.metadata.pmap = pmap
            await resumer.resume_once()
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    asyncio.run(rounds())
    return resumed, resumer


def test_a_build_that_never_succeeds_does_not_starve_the_other_abandoned_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stuck, other = creating("stuck", 3600.0), creating("other", 600.0)  # both abandoned
    pmap = PartitionMap(1, {"stuck": stuck, "other": other})
    resumed, _ = resumed_in_rounds(monkeypatch, [pmap] * 4)
    assert resumed == ["stuck", "other", "stuck", "other"], "not in turn (oldest first)"


def test_a_table_no_longer_creating_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """The record of resumed tables is bounded by the map: a table gone or ACTIVE leaves it."""
    stuck, other = creating("stuck", 3600.0), creating("other", 600.0)
    both = PartitionMap(1, {"stuck": stuck, "other": other})
    active = replace(other, spec=replace(other.spec, status="ACTIVE"))
    later = PartitionMap(2, {"stuck": stuck, "other": active})
    resumed, resumer = resumed_in_rounds(monkeypatch, [both, both, later, PartitionMap(3, {})])
    assert resumed == ["stuck", "other", "stuck"]
    assert resumer.resumed == {}


def test_routers_start_their_turn_at_different_abandoned_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every router resumed the oldest abandoned table first (N builds of one table, the
    others waiting); router number i now starts i tables further, then goes on in turn."""
    tables = {n: creating(n, age) for n, age in (("tb1", 900.0), ("tb2", 800.0), ("tb3", 700.0))}
    pmap = PartitionMap(1, tables)
    firsts = []
    for offset in range(4):
        resumed, _ = resumed_in_rounds(monkeypatch, [pmap] * 4, offset)
        assert sorted(resumed[:3]) == ["tb1", "tb2", "tb3"], resumed  # each in turn
        firsts.append(resumed[0])
    assert firsts == ["tb1", "tb2", "tb3", "tb1"]
