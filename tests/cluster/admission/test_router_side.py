"""Router-local admission: capacity units, grant-fed buckets, throttling, the GAC client."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from aiohttp import web

from cluster.admission import (
    GacClient,
    GacSettings,
    GlobalAdmission,
    RouterAdmission,
    RouterSettings,
    make_gac_app,
    read_units,
    write_units,
)

INTERVAL = 2.0


def test_capacity_units_follow_dynamodb() -> None:
    assert write_units(0) == 1.0
    assert write_units(1024) == 1.0
    assert write_units(1025) == 2.0
    assert write_units(3000, transactional=True) == 6.0
    assert read_units(1, consistent=True) == 1.0
    assert read_units(4096, consistent=True) == 1.0
    assert read_units(4097, consistent=True) == 2.0
    assert read_units(4097, consistent=False) == 1.0
    assert read_units(100, consistent=False) == 0.5
    assert read_units(100, consistent=False, transactional=True) == 2.0
    with pytest.raises(ValueError):
        write_units(-1)


def exchange(router: RouterAdmission, gac: GlobalAdmission, router_id: str, now: float) -> None:
    """One refresh round, done in memory (what GacClient does over HTTP)."""
    grants = []
    for ask in router.pending_requests(now):
        grant = gac.request_tokens(router_id, ask["table"], ask["kind"], ask["want"], now)
        grants.append({**ask, "tokens": grant.tokens, "valid_for": grant.valid_for_seconds})
    router.apply_grants(grants, now)


def test_nothing_admitted_before_a_grant_and_cold_table_asks_the_floor() -> None:
    router = RouterAdmission("r1", now=0.0)
    assert not router.try_admit("orders", "write", 1.0, 0.0)
    assert router.pending_requests(0.0) == [{"table": "orders", "kind": "write", "want": 10.0}]
    router.apply_grants(
        [{"table": "orders", "kind": "write", "tokens": 10.0, "valid_for": 6.0}], 0.0
    )
    assert router.try_admit("orders", "write", 1.0, 0.1)
    assert router.level("orders", "write", 0.1) == pytest.approx(9.0)


def test_want_follows_attempted_demand() -> None:
    router = RouterAdmission("r1", now=0.0)
    for k in range(100):  # 50 units/s attempted for 2 s, all refused
        router.try_admit("orders", "write", 1.0, k * 0.02)
    (ask,) = router.pending_requests(2.0)
    assert ask["want"] == pytest.approx(50 * INTERVAL * 1.5)
    # Tokens already held are subtracted; with no demand only the floor is asked for.
    router.apply_grants([{**ask, "tokens": 40.0, "valid_for": 6.0}], 2.0)
    assert router.pending_requests(4.0) == []  # holds 40 > floor of 10


def test_granted_tokens_lapse_after_valid_for() -> None:
    router = RouterAdmission("r1", now=0.0)
    router.apply_grants([{"table": "tbl", "kind": "read", "tokens": 5, "valid_for": 1.0}], 0.0)
    assert router.level("tbl", "read", 0.5) == 5.0
    assert not router.try_admit("tbl", "read", 1.0, 1.0)
    assert router.level("tbl", "read", 1.0) == 0.0


def test_malformed_grants_change_nothing() -> None:
    router = RouterAdmission("r1", now=0.0)
    good = {"table": "tbl", "kind": "read", "tokens": 5, "valid_for": 1.0}
    for bad in [
        {**good, "tokens": -1},
        {**good, "tokens": "5"},
        {**good, "kind": "scan"},
        {**good, "valid_for": float("nan")},
        {"kind": "read", "tokens": 1, "valid_for": 1},
    ]:
        with pytest.raises(ValueError):
            router.apply_grants([good, bad], 0.0)
    assert router.level("tbl", "read", 0.0) == 0.0


def test_hot_table_is_throttled_while_another_keeps_admitting() -> None:
    gac = GlobalAdmission(GacSettings(interval=INTERVAL))
    gac.set_table("hot", 100, 20, "PROVISIONED", now=0.0)
    gac.set_table("calm", 100, 20, "PROVISIONED", now=0.0)
    router = RouterAdmission("r1", now=0.0, settings=RouterSettings(interval=INTERVAL))
    outcomes: dict[str, list[bool]] = {"hot": [], "calm": []}
    step = 0.05
    for k in range(int(20 / step)):  # 20 s: hot wants 200 WCU/s (limit 20), calm 5 WCU/s
        now = k * step
        if k % int(INTERVAL / step) == 0:
            exchange(router, gac, "r1", now)
        outcomes["hot"].extend(router.try_admit("hot", "write", 1.0, now) for _ in range(10))
        if k % 4 == 0:
            outcomes["calm"].append(router.try_admit("calm", "write", 1.0, now))
    settled = int(len(outcomes["calm"]) * 0.2)  # after the first few refresh rounds
    assert all(outcomes["calm"][settled:])
    hot_admitted = sum(outcomes["hot"])
    assert not all(outcomes["hot"][len(outcomes["hot"]) // 2 :])  # throttled once grants used
    # The hot table gets about its rate (20/s for 20 s, plus the initial interval of tokens),
    # never the 200/s it asked for.
    assert 300 <= hot_admitted <= 20 * 20 + 20 * INTERVAL + 1e-6


def test_fallback_refills_locally_and_first_grant_ends_it() -> None:
    settings = RouterSettings(fallback_rate=10.0, fallback_burst_seconds=1.0)
    router = RouterAdmission("r1", now=0.0, settings=settings)
    router.apply_grants([{"table": "tbl", "kind": "write", "tokens": 3, "valid_for": 6}], 0.0)
    router.enter_fallback(1.0)
    assert router.in_fallback
    assert router.level("tbl", "write", 1.0) == 3.0  # held tokens kept
    assert router.level("tbl", "write", 30.0) == 10.0  # refilled, capped at 1 s of fallback
    assert router.try_admit("new-table", "read", 10.0, 30.0)  # unseen tables start full
    (ask,) = [r for r in router.pending_requests(30.0) if r["table"] == "tbl"]
    assert ask["want"] == 10.0  # fallback tokens do not count as held
    router.apply_grants([], 31.0)
    assert not router.in_fallback
    assert router.level("tbl", "write", 40.0) == 0.0  # only grants fill buckets again
    # A table unused for forget_after seconds is no longer asked for.
    assert router.pending_requests(95.0) == []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_client_falls_back_when_gac_is_unreachable() -> None:
    admission = RouterAdmission("r1", now=time.monotonic())
    admission.apply_grants(
        [{"table": "tbl", "kind": "write", "tokens": 2, "valid_for": 60}], time.monotonic()
    )
    url = f"http://127.0.0.1:{closed_port()}"
    client = GacClient(url, "r1", admission, interval=0.05, grace_period=0.2, timeout=0.5)

    async def scenario() -> None:
        await client.run(max_rounds=2)
        # Within the grace period: still serving on what the bucket holds, not in fallback.
        assert not admission.in_fallback
        assert admission.try_admit("tbl", "write", 2.0, time.monotonic())
        assert not admission.try_admit("tbl", "write", 1.0, time.monotonic())
        await client.run(max_rounds=8)

    started = time.monotonic()
    asyncio.run(scenario())
    # No round waited out its timeout (10 x 0.5 s): refusals are failures at once.
    assert time.monotonic() - started < 5.0
    assert client.failures == 10 and client.last_success is None
    assert admission.in_fallback
    assert admission.try_admit("tbl", "write", 1.0, time.monotonic())
    assert admission.try_admit("other", "read", 1.0, time.monotonic())


def test_client_gets_grants_and_recovers_after_gac_returns() -> None:
    gac = GlobalAdmission(GacSettings(interval=0.05))
    gac.set_table("tbl", 1000, 1000, "PROVISIONED", now=time.monotonic())
    settings = RouterSettings(interval=0.05)
    admission = RouterAdmission("r1", now=time.monotonic(), settings=settings)

    async def serve(port: int = 0) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(make_gac_app(gac))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        address: Any = runner.addresses[0]
        return runner, int(address[1])

    async def scenario() -> None:
        runner, port = await serve()
        # A timeout of its own: the default is the 50 ms interval, and a round trip on a busy
        # machine takes longer (a failed round here is the machine, not the recovery).
        client = GacClient(
            f"http://127.0.0.1:{port}",
            "r1",
            admission,
            interval=0.05,
            grace_period=0.15,
            timeout=5.0,
        )
        admission.try_admit("tbl", "write", 1.0, time.monotonic())  # make the table known
        await client.run(max_rounds=2)
        assert client.last_success is not None and client.failures == 0
        assert admission.try_admit("tbl", "write", 1.0, time.monotonic())
        await runner.cleanup()  # GAC goes away
        await client.run(max_rounds=8)
        assert admission.in_fallback
        runner, _ = await serve(port)  # and comes back on the same address
        try:
            await client.run(max_rounds=2)
        finally:
            await runner.cleanup()
        assert not admission.in_fallback
        assert client.failures == 0

    asyncio.run(scenario())
