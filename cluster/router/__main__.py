"""Run a request router: ``python -m cluster.router --config cluster.json --id rt-a``.

It serves the DynamoDB API on the address the cluster config gives it (health and Prometheus
metrics on the same port at /health and /metrics), authenticating every API call with SigV4
against the config's access keys.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from cluster.config import ClusterConfig
from cluster.process import http_service, process_args, run_process, shutdown_signal

from .app import SERVER_OPTIONS, make_app
from .context import RouterContext
from .sigv4 import SigV4Verifier
from .tablesweep import TableSweeps
from .ttl import TtlSweeper
from .txngc import TxnSweeper


async def serve(config: ClusterConfig, router_id: str) -> None:
    async with aiohttp.ClientSession() as session:
        ctx = RouterContext(config, router_id, session)
        await ctx.start()
        sweepers = [
            asyncio.create_task(TtlSweeper(ctx).run(), name="ttl-sweeper"),
            asyncio.create_task(TxnSweeper(ctx).run(), name="txn-sweeper"),
            asyncio.create_task(TableSweeps(ctx).run(), name="table-sweeps"),
        ]
        app = make_app(ctx, SigV4Verifier(config.credentials))
        async with http_service(app, config.process(router_id).listen, **SERVER_OPTIONS):
            await shutdown_signal()
        for sweeper in sweepers:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await ctx.stop()


def main() -> None:
    run_process(process_args("python -m cluster.router", __doc__, default_id=None), serve)


if __name__ == "__main__":
    main()
