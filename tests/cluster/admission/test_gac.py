"""Global admission control: fair shares between routers, independent tables, the HTTP API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cluster.admission import (
    CapacityMode,
    GacSettings,
    GlobalAdmission,
    UnknownTableError,
    make_gac_app,
)

INTERVAL = 2.0


def provisioned(read: float, write: float, *tables: str, now: float = 0.0) -> GlobalAdmission:
    gac = GlobalAdmission(GacSettings(interval=INTERVAL))
    for table in tables:
        gac.set_table(table, read, write, CapacityMode.PROVISIONED, now=now)
    return gac


def drive(
    gac: GlobalAdmission, asks: dict[str, tuple[str, float, float]], seconds: float
) -> dict[str, float]:
    """Each router asks (table, want) every INTERVAL starting at its offset; sum its grants."""
    events = sorted(
        (offset + k * INTERVAL, router)
        for router, (_, _, offset) in asks.items()
        for k in range(int(seconds / INTERVAL))
    )
    got = dict.fromkeys(asks, 0.0)
    for now, router in events:
        table, want, _ = asks[router]
        got[router] += gac.request_tokens(router, table, "write", want, now).tokens
    return got


@pytest.mark.parametrize("offset", [0.0, 0.7, 1.0])
def test_two_greedy_routers_split_the_rate_evenly(offset: float) -> None:
    # Section 4.2: GAC shares a table's capacity between the routers that serve it.
    gac = provisioned(1000, 100, "orders")
    got = drive(gac, {"r1": ("orders", 1e6, 0.0), "r2": ("orders", 1e6, offset)}, seconds=60)
    total = got["r1"] + got["r2"]
    assert total <= 100 * INTERVAL + 100 * (60 + offset) + 1e-6  # never more than the pool
    assert total >= 100 * 58  # and the pool is actually handed out
    assert got["r1"] == pytest.approx(got["r2"], rel=0.1)


def test_greedy_router_does_not_starve_a_modest_one() -> None:
    gac = provisioned(1000, 100, "orders")
    modest = []
    for k in range(30):
        now = k * INTERVAL
        gac.request_tokens("greedy", "orders", "write", 1e6, now)
        modest.append(gac.request_tokens("modest", "orders", "write", 50.0, now + 0.5).tokens)
    assert modest[2:] == [50.0] * 28  # once both are known to be active


def test_lone_router_may_use_surplus_and_burst_credit() -> None:
    gac = provisioned(1000, 10, "orders")
    # One router, no competition: it may take more than rate * interval out of the credit
    # the table built up while idle (300 s of the rate at most).
    grant = gac.request_tokens("r1", "orders", "write", 1e6, now=100.0)
    assert grant.tokens == pytest.approx(20 + 10 * 100)
    assert gac.level("orders", "write", 100.0) == pytest.approx(0.0)
    grant = gac.request_tokens("r1", "orders", "write", 1e6, now=10_000.0)
    assert grant.tokens == pytest.approx(3000.0)  # capped by the burst credit
    assert grant.valid_for_seconds == GacSettings().valid_for


def test_fair_share_when_other_router_is_active_caps_the_greedy_one() -> None:
    gac = provisioned(1000, 10, "orders")
    gac.request_tokens("r2", "orders", "write", 1.0, now=99.0)
    # r2 asked recently: r1 may not take the tokens r2 is owed for this interval.
    grant = gac.request_tokens("r1", "orders", "write", 1e6, now=100.0)
    assert gac.active_routers("orders", "write", 100.0) == 2
    assert gac.level("orders", "write", 100.0) == pytest.approx(10 * INTERVAL / 2)
    assert grant.tokens > 0
    # Three intervals later r2 no longer counts.
    assert gac.active_routers("orders", "write", 99.0 + 3 * INTERVAL + 0.01) == 1


def test_one_tables_demand_does_not_reduce_anothers_grants() -> None:
    def modest_grants(with_hot_table: bool) -> list[float]:
        gac = provisioned(1000, 100, "hot", "calm")
        grants = []
        for k in range(20):
            now = k * INTERVAL
            if with_hot_table:
                gac.request_tokens("r1", "hot", "write", 1e9, now)
                gac.request_tokens("r2", "hot", "write", 1e9, now)
                gac.request_tokens("r1", "hot", "read", 1e9, now)
            grants.append(gac.request_tokens("r2", "calm", "write", 150.0, now + 0.1).tokens)
        return grants

    assert modest_grants(True) == modest_grants(False)
    assert modest_grants(True) == [150.0] * 20


def test_reads_and_writes_have_separate_pools() -> None:
    gac = provisioned(40, 10, "orders")
    assert gac.request_tokens("r1", "orders", "write", 1e6, 0.0).tokens == pytest.approx(20.0)
    assert gac.request_tokens("r1", "orders", "read", 1e6, 0.0).tokens == pytest.approx(80.0)


def test_on_demand_tables_use_the_high_default() -> None:
    gac = GlobalAdmission(GacSettings(on_demand_rate=40_000))
    limits = gac.set_table("events", None, None, CapacityMode.PAY_PER_REQUEST, now=0.0)
    assert (limits.read_rate, limits.write_rate) == (40_000, 40_000)
    assert gac.request_tokens("r1", "events", "read", 50_000, 0.0).tokens == 50_000


def test_set_table_changes_rate_and_drop_table_forgets() -> None:
    gac = provisioned(10, 10, "orders")
    gac.request_tokens("r1", "orders", "write", 1e6, 0.0)
    gac.set_table("orders", 10, 100, "PROVISIONED", now=1.0)  # 10 tokens earned at the old rate
    assert gac.level("orders", "write", 2.0) == pytest.approx(110.0)
    gac.drop_table("orders")
    with pytest.raises(UnknownTableError):
        gac.request_tokens("r1", "orders", "write", 1.0, 3.0)
    with pytest.raises(UnknownTableError):
        gac.drop_table("orders")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ab", 1, 1, "PROVISIONED"), "table name"),
        (("orders", None, 1, "PROVISIONED"), "read_rate"),
        (("orders", -1, 1, "PROVISIONED"), "read_rate"),
        (("orders", 1, float("inf"), "PROVISIONED"), "write_rate"),
        (("orders", 1, 1, "ONDEMAND"), "mode"),
    ],
)
def test_set_table_rejects_bad_arguments(args: tuple[Any, Any, Any, Any], message: str) -> None:
    table, read_rate, write_rate, mode = args
    with pytest.raises(ValueError, match=message):
        GlobalAdmission().set_table(table, read_rate, write_rate, mode, now=0.0)


def test_request_tokens_rejects_bad_want_and_kind() -> None:
    gac = provisioned(10, 10, "orders")
    with pytest.raises(ValueError):
        gac.request_tokens("r1", "orders", "write", -1.0, 0.0)
    with pytest.raises(ValueError):
        gac.request_tokens("r1", "orders", "scan", 1.0, 0.0)


# -- HTTP -------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def with_client(body: Callable[[TestClient[Any, Any], FakeClock], Awaitable[None]]) -> None:
    clock = FakeClock()
    app = make_gac_app(GlobalAdmission(GacSettings(interval=INTERVAL)), clock=clock)

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await body(client, clock)

    asyncio.run(scenario())


async def expect_400(client: TestClient[Any, Any], method: str, path: str, data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    response = await client.request(method, path, data=raw)
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["error"] == "BadRequest"
    message = body["message"]
    assert isinstance(message, str) and message
    return message


def test_http_tables_tokens_health_and_metrics() -> None:
    async def body(client: TestClient[Any, Any], clock: FakeClock) -> None:
        response = await client.put(
            "/tables/orders", json={"read_rate": 100, "write_rate": 50, "mode": "PROVISIONED"}
        )
        assert response.status == 200
        assert await response.json() == {
            "table": "orders",
            "mode": "PROVISIONED",
            "read_rate": 100.0,
            "write_rate": 50.0,
        }
        response = await client.put("/tables/events", json={"mode": "PAY_PER_REQUEST"})
        assert (await response.json())["write_rate"] == 40_000.0

        clock.now = 1.0
        response = await client.post(
            "/tokens",
            json={
                "router": "r1",
                "requests": [
                    {"table": "orders", "kind": "write", "want": 30},
                    {"table": "orders", "kind": "read", "want": 1e9},
                    {"table": "missing", "kind": "read", "want": 5},
                ],
            },
        )
        assert response.status == 200
        grants = (await response.json())["grants"]
        assert grants[0] == {"table": "orders", "kind": "write", "tokens": 30.0, "valid_for": 6.0}
        assert grants[1]["tokens"] == pytest.approx(100 * INTERVAL + 100 * 1.0)
        assert grants[2]["tokens"] == 0.0 and grants[2]["error"] == "unknown table"

        empty = await client.post("/tokens", json={"router": "r1", "requests": []})
        assert await empty.json() == {"grants": []}

        health = await client.get("/health")
        assert await health.json() == {"status": "ok", "tables": 2}

        text = await (await client.get("/metrics")).text()
        assert 'gac_tokens_granted_total{kind="write",table="orders"} 30.0' in text
        assert 'gac_token_requests_total{kind="read",table="orders"} 1.0' in text
        assert 'gac_table_rate{kind="read",table="orders"} 100.0' in text
        assert 'gac_http_requests_total{route="/tokens",status="200"} 2.0' in text

        response = await client.delete("/tables/orders")
        assert response.status == 200
        response = await client.delete("/tables/orders")
        assert response.status == 404
        assert (await response.json())["error"] == "ResourceNotFound"
        text = await (await client.get("/metrics")).text()
        assert 'table="orders"' not in text

    with_client(body)


def test_http_bad_input_is_400_never_500() -> None:
    async def body(client: TestClient[Any, Any], clock: FakeClock) -> None:
        await client.put("/tables/orders", json={"read_rate": 1, "write_rate": 1})
        good = {"table": "orders", "kind": "read", "want": 1}
        for data in [
            b"{not json",
            b"\xff\xfe",
            b"",
            [1, 2],
            {"requests": [good]},
            {"router": "", "requests": [good]},
            {"router": 7, "requests": [good]},
            {"router": "r1"},
            {"router": "r1", "requests": {"table": "orders"}},
            {"router": "r1", "requests": ["orders"]},
            {"router": "r1", "requests": [{"kind": "read", "want": 1}]},
            {"router": "r1", "requests": [{**good, "kind": "scan"}]},
            {"router": "r1", "requests": [{**good, "want": -1}]},
            {"router": "r1", "requests": [{**good, "want": "10"}]},
            {"router": "r1", "requests": [{**good, "want": True}]},
            {"router": "r1", "requests": [{"table": "orders", "kind": "read"}]},
            {"router": "r1", "requests": [good] * 1001},
            b'{"router": "r1", "requests": [{"table": "orders", "kind": "read", "want": NaN}]}',
        ]:
            await expect_400(client, "POST", "/tokens", data)
        for data in [
            b"[",
            {"read_rate": 1},
            {"read_rate": -1, "write_rate": 1},
            {"read_rate": "fast", "write_rate": 1},
            {"read_rate": True, "write_rate": 1},
            {"read_rate": 1, "write_rate": 1, "mode": "SOMETIMES"},
            {"read_rate": 1, "write_rate": 1, "mode": 3},
        ]:
            await expect_400(client, "PUT", "/tables/orders", data)
        message = await expect_400(client, "PUT", "/tables/x", {"read_rate": 1, "write_rate": 1})
        assert "table name" in message
        # Nothing was granted by the rejected batches, and the table kept its limits.
        assert (await (await client.get("/health")).json())["tables"] == 1

        missing = await client.get("/nowhere")
        assert missing.status == 404 and "error" in await missing.json()
        wrong = await client.get("/tokens")
        assert wrong.status == 405 and "error" in await wrong.json()
        assert wrong.headers["Allow"] == "POST"
        text = await (await client.get("/metrics")).text()
        assert 'gac_http_requests_total{route="/tokens",status="400"} 18.0' in text
        assert 'status="500"' not in text

    with_client(body)


def test_http_real_runner_on_loopback() -> None:
    async def scenario() -> None:
        gac = GlobalAdmission()
        runner = web.AppRunner(make_gac_app(gac))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}"
                async with session.put(f"{url}/tables/tbl", json={"mode": "PAY_PER_REQUEST"}) as r:
                    assert r.status == 200
                request = {
                    "router": "r",
                    "requests": [{"table": "tbl", "kind": "write", "want": 3}],
                }
                async with session.post(f"{url}/tokens", json=request) as r:
                    assert (await r.json())["grants"][0]["tokens"] == 3.0
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
