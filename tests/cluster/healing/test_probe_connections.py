"""The admin's probes: one kept connection per peer, dropped when a probe fails (admin.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

from cluster.healing import admin as admin_module
from cluster.healing.admin import Admin
from cluster.healing.settings import HealingSettings


class FakeClient:
    """Stands in for NodeClient: counts how many were made, answers or fails on demand."""

    made: ClassVar[list[FakeClient]] = []
    fail: ClassVar[bool] = False

    def __init__(self, address: str, connect_timeout: float = 1.0) -> None:
        self.address, self.calls, self.closed = address, 0, False
        FakeClient.made.append(self)

    async def call(self, op: str, *, deadline: float = 10.0, **fields: Any) -> dict[str, Any]:
        assert op == "status" and not self.closed
        self.calls += 1
        if FakeClient.fail:
            raise TimeoutError
        return {"replicas": [{"group": "g", "mode": "full"}]}

    async def close(self) -> None:
        self.closed = True


def test_probes_reuse_one_connection_per_peer_and_redial_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_module, "NodeClient", FakeClient)
    FakeClient.made, FakeClient.fail = [], False
    node = SimpleNamespace(
        node_id="n1",
        listen="127.0.0.1:1",
        peers={"n2": "127.0.0.1:2"},
        data_dir=tmp_path,
        registry=CollectorRegistry(),
        replicas={},
    )
    admin = Admin(node, HealingSettings(), {"n1": "az-a", "n2": "az-b"})  # type: ignore[arg-type]
    peer = admin.peers["n2"]

    async def probes() -> None:
        for _ in range(3):
            await admin._probe(peer)
        assert len(FakeClient.made) == 1 and FakeClient.made[0].calls == 3
        assert peer.up and peer.groups == {"g": "full"}
        FakeClient.fail = True
        await admin._probe(peer)
        assert FakeClient.made[0].closed and "n2" not in admin.probes
        assert not peer.up
        FakeClient.fail = False
        await admin._probe(peer)
        assert len(FakeClient.made) == 2 and peer.up
        await admin.stop()
        assert FakeClient.made[1].closed

    asyncio.run(probes())
