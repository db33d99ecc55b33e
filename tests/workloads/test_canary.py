"""Canaries against fake routers on 127.0.0.1: every AZ x router pair, steady rate, bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.workloads.conftest import StubRouter
from workloads.canary import canary_pairs, run_canaries
from workloads.history import describe_problems, read_ops


@asynccontextmanager
async def fake_routers(
    stub_router: StubRouter, statuses: dict[str, int]
) -> AsyncIterator[dict[str, str]]:
    """One tiny DynamoDB-ish server per router id, answering PutItem/GetItem from a dict (or
    the given error status)."""
    items: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for router, status in statuses.items():

            async def handle(request: web.Request, status: int = status) -> web.Response:
                op = request.headers["X-Amz-Target"].split(".")[-1]
                body = json.loads(await request.read())
                if status != 200:
                    return web.json_response({"__type": "x#ServiceUnavailable"}, status=status)
                key = body.get("Key", body.get("Item", {})).get("k", {}).get("S")
                if op == "PutItem":
                    items[key] = body["Item"]
                    return web.json_response({})
                return web.json_response({"Item": items[key]} if key in items else {})

            urls[router] = await stack.enter_async_context(stub_router(handle))
        yield urls


AZ_OF = {"rt-a": "az-a", "rt-b": "az-b", "rt-c": "az-c"}


def test_pairs_cover_every_az_and_router() -> None:
    pairs = canary_pairs({"rt-a": "u", "rt-b": "u", "rt-c": "u"}, AZ_OF)
    assert len(pairs) == 9 and len(set(pairs)) == 9


def test_canaries_probe_every_router_from_every_az(tmp_path: Path, stub_router: StubRouter) -> None:
    out = tmp_path / "canary.jsonl"

    async def main() -> int:
        async with fake_routers(stub_router, {"rt-a": 200, "rt-b": 200, "rt-c": 503}) as urls:
            return await run_canaries(
                urls, AZ_OF, "gameday", "secret", "t", 5.0, 1.0, out, time.time()
            )

    done = asyncio.run(main())

    ops = list(read_ops(out))
    assert done == len(ops) // 2
    assert describe_problems(ops) == []
    completions = [o for o in ops if o["type"] != "invoke"]
    probes = [o for o in ops if o["type"] == "invoke" and "attempt" not in o]
    per_pair = Counter((o["az"], o["router"]) for o in probes)
    assert set(per_pair) == {(az, r) for az in AZ_OF.values() for r in AZ_OF}
    # 5 probes/s for 1 s, two ops each: about 10 per pair, never more than 12 (the bound)
    assert all(2 <= n <= 12 for n in per_pair.values()), per_pair
    # a 503 is retried (with backoff, on the same router), each attempt recorded; 200s are not
    retries = Counter(o["router"] for o in ops if o["type"] == "invoke" and "attempt" in o)
    assert set(retries) == {"rt-c"} and retries["rt-c"] >= 3, retries
    for op in completions:
        if op["router"] == "rt-c":
            assert op["type"] == "info" and op["error"] == "ServiceUnavailable"
        else:
            assert op["type"] == "ok"
    reads = [o for o in completions if o["f"] == "get" and o["router"] != "rt-c"]
    assert all(o["consistent"] is True and o["value"].startswith("canary-") for o in reads)


def test_canaries_stop_on_the_event(tmp_path: Path, stub_router: StubRouter) -> None:
    out = tmp_path / "canary.jsonl"

    async def main() -> int:
        stop = asyncio.Event()
        async with fake_routers(stub_router, {"rt-a": 200}) as urls:
            asyncio.get_running_loop().call_later(0.3, stop.set)
            return await run_canaries(
                urls, {"rt-a": "az-a"}, "k", "s", "t", 5.0, 60.0, out, stop=stop
            )

    started = time.monotonic()
    asyncio.run(main())
    # Well before the 60 s duration (a starved machine is slow, never that slow).
    assert time.monotonic() - started < 30.0
    assert 2 <= len(list(read_ops(out))) <= 12
