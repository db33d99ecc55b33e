"""The admin's loop keeps probing and planning while the partition map cannot be read.

In a split that cuts off the meta group's leader, a map read waits out its deadline (5 s): the
loop used to await it, so every group this node led went unplanned meanwhile, and members lost
in the split were removed 8 s after they fell silent instead of after the 3 s grace (bank
game day, 12:30 run: all 17 removals at down_seconds 8.0).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cluster.healing import admin as admin_module
from cluster.healing.admin import Admin
from cluster.healing.settings import HealingSettings


class HangingStore:
    """A MetadataStore whose meta group never answers (its leader is on the other side)."""

    reads = 0

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    async def read_map(self) -> Any:
        HangingStore.reads += 1
        await asyncio.sleep(3600)


def test_planning_goes_on_while_the_map_read_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_module, "MetadataStore", HangingStore)
    HangingStore.reads = 0
    node = SimpleNamespace(
        node_id="n1",
        listen="127.0.0.1:1",
        peers={},
        data_dir=tmp_path,
        registry=CollectorRegistry(),
        replicas={},
    )
    settings = HealingSettings(probe_seconds=0.05, map_seconds=0.05)
    admin = Admin(node, settings, {"n1": "az-a"}, meta_home=("n1",))  # type: ignore[arg-type]
    plans = 0

    def plan_all() -> None:
        nonlocal plans
        plans += 1

    monkeypatch.setattr(admin, "_plan_all", plan_all)
    monkeypatch.setattr(admin, "_note_lost_data", lambda: None)
    # It leads a data group, so it reads the map (the meta group alone needs none).
    monkeypatch.setattr(admin, "_led", lambda: [SimpleNamespace(group="t.p0")])

    async def run() -> None:
        await admin.start()
        try:  # the old loop planned once, then waited in the read (an hour here)
            async with asyncio.timeout(30):
                while plans < 5:
                    await asyncio.sleep(0.01)
        finally:
            await admin.stop()

    asyncio.run(run())
    assert HangingStore.reads == 1  # one read at a time: the hanging one is not repeated
