"""What a storage node offers the services that run inside it (healing, scrub, archive).

The node (``node.py``) implements :class:`NodeHost`; a service (``cluster.healing.admin``)
is handed one and never sees the rest of the node. The node's entry point (``__main__``)
builds the services and adds them before the node starts, so storage never imports healing:

    node = StorageNode(config)
    node.add_service(Admin(node, HealingSettings(), node_azs={...}, meta_home=(...)))
    await node.start()      # opens replicas, starts services, then serves their routes

A service's HTTP routes are declared by ``routes()`` and mounted by the node's admin endpoint;
client ops are the node's own (``node._HANDLERS``), never registered from outside.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from .archive import Archiver
from .replica import Replica

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


class NodeHost(Protocol):
    """The narrow view of a storage node that its services use."""

    @property
    def node_id(self) -> str: ...

    @property
    def listen(self) -> str:
        """Where this node listens for peers and clients."""
        ...

    @property
    def peers(self) -> Mapping[str, str]:
        """Every other storage node: id -> the address this node dials (maybe via the mesh)."""
        ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def tick_seconds(self) -> float: ...

    @property
    def replicas(self) -> Mapping[str, Replica]:
        """The replicas hosted here, by group."""
        ...

    @property
    def registry(self) -> CollectorRegistry:
        """The node's Prometheus registry (services add their collectors)."""
        ...

    @property
    def archiver(self) -> Archiver | None:
        """The WAL archiver, when the node archives."""
        ...

    def rate_of(self, group: str) -> tuple[float | None, bool]:
        """The group's partition rate (units/s, None: unlimited) and whether it is provisioned."""
        ...

    def incarnation_of(self, group: str) -> int:
        """The incarnation of the table the group's replica here belongs to (0: unknown)."""
        ...


class NodeService(Protocol):
    """Something that runs inside a node: started after the replicas are open and before the
    admin endpoint serves its ``routes()``, stopped first."""

    def routes(self) -> list[Route]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
