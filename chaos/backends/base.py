"""What the chaos orchestrator needs from a backend (local processes, Docker, Kubernetes).

A backend knows the cluster's processes and can power them off and on, pause and resume them,
and reach the Toxiproxy mesh that carries every link. Faults are planned as data elsewhere
(chaos/faults.py) and applied through this interface by the nemesis (chaos/nemesis.py).

    backend.kill("sn-b1"); backend.start("sn-b1")
    backend.pause("sn-a2"); backend.resume("sn-a2")
    backend.mesh().cut([...], toxic_name="f3")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cluster.config import ClusterConfig
from cluster.topology import Topology

if TYPE_CHECKING:
    from chaos.mesh import Link, LinkMesh


class Backend(Protocol):
    name: str
    config: ClusterConfig
    state_dir: Path  # where active faults and the dead-man's lease live

    def topology(self) -> Topology: ...

    def process_ids(self, role: str | None = None) -> list[str]: ...

    def alive(self, process_id: str) -> bool: ...

    def kill(self, process_id: str) -> None: ...

    def start(self, process_id: str) -> None: ...

    def pause(self, process_id: str) -> None: ...

    def resume(self, process_id: str) -> None: ...

    def health(self, process_id: str) -> dict[str, Any] | None: ...

    def wait_healthy(self, timeout: float = 60.0) -> None: ...

    def storage_status(self, node_id: str) -> dict[str, Any] | None: ...

    def mesh(self) -> LinkMesh | None: ...

    def links(self) -> dict[tuple[str, str], Link]: ...

    def replica_dir(self, node_id: str, group: str) -> Path: ...

    def endpoints(self) -> dict[str, str]: ...
