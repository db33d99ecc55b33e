"""Run a MemDS server: ``python -m cluster.memds --config cluster.json --id md-a``."""

from __future__ import annotations

from cluster.config import ClusterConfig
from cluster.metadata.partitionmap import meta_replicas
from cluster.metadata.store import MetadataStore
from cluster.process import http_service, process_args, run_process, shutdown_signal
from cluster.storage.client import GroupClient
from cluster.topology import parse_topology

from .server import MemDS


async def serve(config: ClusterConfig, process_id: str) -> None:
    nodes = GroupClient(config.dial_map(process_id, "storage"))
    memds = MemDS(MetadataStore(nodes, meta_replicas(parse_topology(config.topology))))
    memds.start()
    async with http_service(memds.app(), config.process(process_id).listen):
        await shutdown_signal()
    await memds.stop()
    await nodes.close()


def main() -> None:
    run_process(process_args("python -m cluster.memds", __doc__, default_id=None), serve)


if __name__ == "__main__":
    main()
