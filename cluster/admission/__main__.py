"""Run the Global Admission Control service: ``python -m cluster.admission --config c.json``."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from cluster.config import ClusterConfig
from cluster.logsetup import configure
from cluster.storage.transport import split_address

from .gac import GlobalAdmission, make_gac_app


async def serve(config: ClusterConfig, process_id: str) -> None:
    runner = web.AppRunner(make_gac_app(GlobalAdmission()), access_log=None)
    await runner.setup()
    host, port = split_address(config.process(process_id).listen)
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.admission", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the cluster's config JSON")
    parser.add_argument("--id", default="gac", help="this process's id in the config")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    configure(args.id, args.log_level)
    asyncio.run(serve(ClusterConfig.load(args.config), args.id))


if __name__ == "__main__":
    main()
