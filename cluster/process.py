"""What every cluster process's ``__main__`` shares: arguments, logging, serving until signalled.

def main() -> None:
    args = process_args("python -m cluster.memds", __doc__, default_id=None)
    run_process(args, serve)          # serve(config, process_id) -> coroutine

async def serve(config, process_id):
    async with http_service(app, config.process(process_id).listen):
        await shutdown_signal()       # SIGTERM or SIGINT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from cluster import auth
from cluster.config import ClusterConfig
from cluster.logsetup import configure
from cluster.storage.transport import split_address

# How long a stopping process waits for open HTTP connections (aiohttp's default is 60 s, which
# makes a stop under load look like a hang; clients retry elsewhere anyway).
SHUTDOWN_SECONDS = 2.0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to the end on a uvloop event loop (libuv's, in C): the same asyncio API,
    fewer CPU cycles per wake, read and write than the standard loop's, which a router or a
    storage node does several of for every request (issue #15). uvloop is a dependency of
    the project (pyproject, the image's wheels): a process without it fails to import here
    rather than running on a slower loop unnoticed."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def shutdown_signal(stop: asyncio.Event | None = None) -> None:
    """Return once SIGTERM or SIGINT arrives (SIGKILL is a crash the process recovers from),
    or once ``stop`` is set (the process must end by itself: a storage node that failed)."""
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@asynccontextmanager
async def http_service(app: web.Application, address: str, **options: Any) -> AsyncIterator[None]:
    """Serve ``app`` on ``address`` (host:port) for the duration of the block; ``options`` go
    to aiohttp's request handlers (timeouts, limits, the server log)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS, **options)
    await runner.setup()
    host, port = split_address(address)
    await web.TCPSite(runner, host, port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def process_args(prog: str, doc: str | None, default_id: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--config", required=True, type=Path, help="the cluster's config JSON")
    parser.add_argument(
        "--id",
        required=default_id is None,
        default=default_id,
        help="this process's id in the config",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args()


def run_process(
    args: argparse.Namespace,
    serve: Callable[[ClusterConfig, str], Coroutine[Any, Any, None]],
) -> None:
    configure(args.id, args.log_level)
    config = ClusterConfig.load(args.config)
    auth.install(config.internal_secret())
    run_loop(serve(config, args.id))
