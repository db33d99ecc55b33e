"""The cluster's shared configuration: every process, its address, and how to reach each peer.

One JSON file, written by a backend (local, docker, kubernetes) and read by every process, so a
router knows where the storage nodes are and a node knows how to dial its peers. ``dial`` lets
the backend route a link through something else (a Toxiproxy listener): process ``src`` reaches
``dst`` at ``dial[src][dst]`` when present, else at ``dst``'s own address.

    config = ClusterConfig.load(Path("data/cluster.json"))
    config.dial_address("rt-a", "sn-b1")     # "127.0.0.1:21005" (a proxy) or "127.20.0.4:7100"
    config.processes_with_role("storage")
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["storage", "router", "memds", "gac"]
UnsafeMode = Literal["ack-before-commit", "stale-reads", "no-fsync"]


SECRET_FILE_MODE = 0o600


def new_secret() -> str:
    """A fresh random secret access key: every cluster gets its own."""
    return secrets.token_urlsafe(30)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a router waits on storage, derived from the storage nodes' failure detector.

    A leader that has not answered within ``attempt`` is treated like one that is being
    replaced: its followers start an election after one election timeout of silence, so
    waiting longer only delays finding the new leader. ``request`` bounds all the work of one
    API request on one partition (attempts, leader look-ups, retries): a partition without a
    reachable quorum is answered with a retryable error within it, never a hang.
    """

    election: float  # the nodes' minimum election timeout, seconds
    connect: float  # to open a connection to a node (loopback or a proxy: fast or never)
    attempt: float  # for one node's reply to one read before asking another replica
    write_attempt: float  # for a write's reply (no retry elsewhere: its outcome is unknown)
    request: float  # all attempts of one request on one partition

    @classmethod
    def derive(cls, tick_ms: float, election_ticks: int) -> Timeouts:
        election = tick_ms * election_ticks / 1000.0
        return cls(
            election=election,
            connect=max(0.05, election / 2),
            attempt=max(0.1, election),
            write_attempt=max(0.2, 1.6 * election),
            request=max(0.4, 1.8 * election),
        )


class ProcessInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    role: Role
    az: str
    rack: str | None = None
    listen: str  # host:port of the process's service (client/peer port, or HTTP API)
    admin: str  # host:port of its admin HTTP endpoint (health, metrics)


class ClusterConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topology: str = "3x2x1"
    processes: dict[str, ProcessInfo]
    credentials: dict[str, str] = Field(
        description="access key id -> secret access key", repr=False
    )
    # The key internal traffic proves (cluster/auth.py). Configs written before it existed (or
    # by a deployment that sets none) derive one from the credentials.
    internal_key: str | None = Field(default=None, repr=False)
    dial: dict[str, dict[str, str]] = Field(default_factory=dict)
    default_partitions: int = 4
    tick_ms: float = 50.0  # the storage nodes' Raft tick
    election_ticks: int = Field(default=8, ge=3)  # their minimum election timeout, in ticks
    # Deliberately broken behaviours, for tests only: they prove the checkers can fail.
    # "ack-before-commit" (storage leaders acknowledge writes before a quorum has them),
    # "stale-reads" (routers serve strongly consistent reads from any replica) and "no-fsync"
    # (storage nodes never fsync: only a power loss, not a power off, can show it).
    unsafe: tuple[UnsafeMode, ...] = ()

    def timeouts(self) -> Timeouts:
        return Timeouts.derive(self.tick_ms, self.election_ticks)

    @classmethod
    def load(cls, path: Path) -> ClusterConfig:
        return cls.model_validate_json(path.read_text())

    def save(self, path: Path) -> None:
        """Write the config atomically, readable by its owner only (0600): it holds the
        secret keys. The mode is set at creation, so the secret is never readable by others,
        not even for a moment, whatever the umask."""
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(self.model_dump_json(indent=2))
        tmp.replace(path)

    def internal_secret(self) -> str:
        """The secret behind internal authentication (cluster.auth.install takes it)."""
        if self.internal_key:
            return self.internal_key
        return "derived:" + "\n".join(f"{k}={v}" for k, v in sorted(self.credentials.items()))

    def process(self, process_id: str) -> ProcessInfo:
        try:
            return self.processes[process_id]
        except KeyError:
            raise KeyError(f"no process {process_id!r} in the cluster config") from None

    def processes_with_role(self, role: Role) -> list[ProcessInfo]:
        return [p for p in self.processes.values() if p.role == role]

    def dial_address(self, src: str, dst: str) -> str:
        """Where ``src`` connects to reach ``dst`` (possibly through a proxy)."""
        return self.dial.get(src, {}).get(dst) or self.process(dst).listen

    def dial_map(self, src: str, role: Role) -> dict[str, str]:
        """Dial addresses from ``src`` to every process of ``role`` (itself excluded)."""
        return {
            p.id: self.dial_address(src, p.id)
            for p in self.processes_with_role(role)
            if p.id != src
        }
