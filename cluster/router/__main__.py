"""Run a request router: ``python -m cluster.router --config cluster.json --id rt-a``.

It serves the DynamoDB API on the address the cluster config gives it (health and Prometheus
metrics on the same port at /health and /metrics), authenticating every API call with SigV4
against the config's access keys.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from cluster.config import ClusterConfig
from cluster.logsetup import configure
from cluster.storage.transport import split_address

from .app import make_app
from .context import RouterContext
from .sigv4 import SigV4Verifier


async def serve(config: ClusterConfig, router_id: str) -> None:
    me = config.process(router_id)
    async with aiohttp.ClientSession() as session:
        ctx = RouterContext(config, router_id, session)
        await ctx.start()
        runner = web.AppRunner(make_app(ctx, SigV4Verifier(config.credentials)), access_log=None)
        await runner.setup()
        host, port = split_address(me.listen)
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
        await ctx.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.router", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the cluster's config JSON")
    parser.add_argument("--id", required=True, help="this router's process id")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    configure(args.id, args.log_level)
    asyncio.run(serve(ClusterConfig.load(args.config), args.id))


if __name__ == "__main__":
    main()
