"""A storage node's admin HTTP endpoint: health, replicas, digests and Prometheus metrics.

It listens on the node's own admin address; every route but /health and /metrics needs the
cluster's internal key (cluster/auth.py). Services running inside the node mount their routes
here too (host.py).

    runner = await start_admin(node)   # node: any AdminNode (StorageNode is one)
    ...; await runner.cleanup()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cluster.auth import guard

from .host import NodeService
from .replica import Replica, ReplicaClosed
from .transport import PeerLinks, split_address

SHUTDOWN_SECONDS = 2.0  # admin HTTP connections get this long to finish when stopping


class AdminNode(Protocol):
    """What the admin endpoint reads from its node."""

    @property
    def node_id(self) -> str: ...

    @property
    def admin_address(self) -> str: ...

    @property
    def replicas(self) -> Mapping[str, Replica]: ...

    @property
    def registry(self) -> CollectorRegistry: ...

    @property
    def services(self) -> list[NodeService]: ...

    @property
    def links(self) -> PeerLinks: ...

    def unsafe_modes(self) -> list[str]: ...

    def status(self) -> dict[str, Any]: ...


class ReplicaCollector(Collector):
    """Per-replica gauges read at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, node: AdminNode) -> None:
        self.node = node

    def collect(self) -> Any:
        labels = ["group"]
        gauges = {
            name: GaugeMetricFamily(f"storage_replica_{name}", help_, labels=labels)
            for name, help_ in [
                ("term", "Current Raft term"),
                ("commit_index", "Commit index"),
                ("applied_index", "Applied index"),
                ("is_leader", "1 when this replica leads its group"),
                ("elections_won", "Times this replica became leader"),
            ]
        }
        for group, replica in self.node.replicas.items():
            st = replica.raft.status()
            gauges["term"].add_metric([group], st.term)
            gauges["commit_index"].add_metric([group], st.commit)
            gauges["applied_index"].add_metric([group], st.applied)
            gauges["is_leader"].add_metric([group], 1 if st.leader == st.id else 0)
            gauges["elections_won"].add_metric([group], replica.elections)
        mode = GaugeMetricFamily(
            "storage_replica_mode",
            "1 for the replica's mode: full, log (log replica) or quarantined",
            labels=["group", "mode"],
        )
        for group, replica in self.node.replicas.items():
            mode.add_metric([group, replica.mode.value], 1)
        peer = GaugeMetricFamily("storage_peer_connected", "Outbound link is up", labels=["peer"])
        heard = GaugeMetricFamily(
            "storage_peer_heard_seconds_ago", "Seconds since a message arrived", labels=["peer"]
        )
        for name, stats in self.node.links.stats().items():
            peer.add_metric([name], 1 if stats["connected"] else 0)
            if stats["heard_seconds_ago"] is not None:
                heard.add_metric([name], stats["heard_seconds_ago"])
        yield from gauges.values()
        yield mode
        yield peer
        yield heard


async def start_admin(node: AdminNode) -> web.AppRunner:
    """Serve the node's admin endpoint (and its services' routes) on its admin address."""

    async def health(_: web.Request) -> web.Response:
        leaders = sum(1 for r in node.replicas.values() if r.raft.leader == node.node_id)
        body = {"status": "ok", "node": node.node_id, "replicas": len(node.replicas)}
        # Replicas refilled after losing their data: up, but not a full copy yet.
        rejoining = sorted(g for g, r in node.replicas.items() if r.raft.status().rejoining)
        body |= {"leaders": leaders, "rejoining": rejoining}
        return web.json_response(body | {"unsafe": node.unsafe_modes()})

    async def replicas(_: web.Request) -> web.Response:
        return web.json_response(node.status())

    async def digest(request: web.Request) -> web.Response:
        group = request.query.get("group")
        if group is not None and group not in node.replicas:
            return web.json_response({"error": f"no group {group}"}, status=404)
        targets = [node.replicas[group]] if group else list(node.replicas.values())
        digests = []
        for replica in targets:
            try:
                digests.append(await replica.digest())
            except ReplicaClosed:  # rebuilt or removed meanwhile: it has no digest to give
                if group is not None:
                    return web.json_response({"error": f"group {group} closed"}, status=404)
        return web.json_response({"digests": digests})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(node.registry), content_type="text/plain")

    app = web.Application(middlewares=[guard()])
    app.router.add_get("/health", health)
    app.router.add_get("/replicas", replicas)
    app.router.add_get("/digest", digest)
    app.router.add_get("/metrics", metrics)
    for service in node.services:
        for method, path, handler in service.routes():
            app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    host, port = split_address(node.admin_address)
    await web.TCPSite(runner, host, port).start()
    return runner
