"""Stub routers for the workload tests: an aiohttp handler served on 127.0.0.1, for the test's
event loop, removed when the block ends (whatever the test did).

    async with stub_router(handle) as url:      # url = "http://127.0.0.1:<port>"
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StubRouter = Callable[[Handler], AbstractAsyncContextManager[str]]


@asynccontextmanager
async def serve(handle: Handler) -> AsyncIterator[str]:
    """``handle`` answers every POST / (the DynamoDB wire protocol) on a free loopback port."""
    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def stub_router() -> StubRouter:
    """``serve``: an async context manager serving a handler, yielding its URL."""
    return serve
