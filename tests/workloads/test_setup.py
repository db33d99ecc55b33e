"""ensure_table against a fake router on 127.0.0.1 whose metadata group is still electing."""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager

import pytest
from aiohttp import web

from tests.workloads.conftest import StubRouter
from workloads.setup import SetupError, ensure_table_async

NOT_LEADER = {
    "__type": "com.amazonaws.dynamodb.v20120810#ServiceUnavailable",
    "message": "meta group: meta: not the leader (leader hint: None)",
}


def router(
    stub_router: StubRouter, unavailable_creates: int, create_error: str = ""
) -> AbstractAsyncContextManager[str]:
    """Answers DescribeTable (absent, then ACTIVE once created); CreateTable is refused with a
    503 ``unavailable_creates`` times (an election), or always with ``create_error`` (400)."""
    state = {"creates": 0, "created": False}

    async def handle(request: web.Request) -> web.Response:
        op = request.headers["X-Amz-Target"].split(".")[-1]
        body = json.loads(await request.read())
        if op == "CreateTable":
            state["creates"] += 1
            if create_error:
                return web.json_response({"__type": f"x#{create_error}"}, status=400)
            if state["creates"] <= unavailable_creates:
                return web.json_response(NOT_LEADER, status=503)
            state["created"] = True
            return web.json_response({"TableDescription": {"TableName": body["TableName"]}})
        if not state["created"]:
            return web.json_response({"__type": "x#ResourceNotFoundException"}, status=400)
        schema = [{"AttributeName": "k", "KeyType": "HASH"}]
        table = {"TableName": body["TableName"], "TableStatus": "ACTIVE", "KeySchema": schema}
        return web.json_response({"Table": table})

    return stub_router(handle)


def test_a_table_is_created_once_the_metadata_group_has_a_leader(stub_router: StubRouter) -> None:
    """More 503s than one call's retries (a slow election): still created within the timeout."""

    async def main() -> dict[str, object]:
        async with router(stub_router, unavailable_creates=7) as url:
            return await ensure_table_async(url, "k", "s", "t", "register", timeout=120)

    assert asyncio.run(main())["TableStatus"] == "ACTIVE"


def test_a_refused_create_table_fails_at_once_naming_the_error(stub_router: StubRouter) -> None:
    async def main() -> None:
        async with router(
            stub_router, unavailable_creates=0, create_error="ValidationException"
        ) as url:
            await ensure_table_async(url, "k", "s", "t", "register", timeout=120)

    with pytest.raises(SetupError, match=r"CreateTable t: HTTP 400 .*ValidationException"):
        asyncio.run(main())
