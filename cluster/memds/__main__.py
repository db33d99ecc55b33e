"""Run a MemDS server: ``python -m cluster.memds --config cluster.json --id md-a``."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from cluster.config import ClusterConfig
from cluster.logsetup import configure
from cluster.metadata.partitionmap import meta_replicas
from cluster.metadata.store import MetadataStore
from cluster.storage.client import GroupClient
from cluster.storage.transport import split_address
from cluster.topology import parse_topology

from .server import MemDS


async def serve(config: ClusterConfig, process_id: str) -> None:
    me = config.process(process_id)
    nodes = GroupClient(config.dial_map(process_id, "storage"))
    memds = MemDS(MetadataStore(nodes, meta_replicas(parse_topology(config.topology))))
    memds.start()
    runner = web.AppRunner(memds.app(), access_log=None)
    await runner.setup()
    host, port = split_address(me.listen)
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await memds.stop()
    await runner.cleanup()
    await nodes.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.memds", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the cluster's config JSON")
    parser.add_argument("--id", required=True, help="this MemDS server's process id")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    configure(args.id, args.log_level)
    asyncio.run(serve(ClusterConfig.load(args.config), args.id))


if __name__ == "__main__":
    main()
