"""Real storage-node processes on per-node loopback addresses: a test harness (and benches').

Only storage nodes, each told its peers and groups on the command line (no cluster config, no
mesh): the smallest real cluster for replication and healing tests.

    with LocalNodes(tmp_path, groups={"p0": ("n1", "n2", "n3")}) as cluster:
        leader = cluster.wait_leader("p0")
        cluster.kill("n1")          # SIGKILL
        cluster.start("n1")         # same data dir
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from chaos.backends.lifeline import tied_popen
from chaos.backends.subnets import claim_subnet, release_subnet
from cluster import auth
from tests.waiting import STALL

LEADER_BOUND = 180.0  # an upper bound for a group that never elects, not an election deadline
# An admin request's bound: no test pauses these nodes, and a dead one refuses at once, so a
# slow answer is a busy node (applying, catching up beside CPU hogs), not a reason to fail.
ADMIN_BOUND = 30.0

_fixture_subnet: int | None = None


def fixture_subnet() -> int:
    """This process's own 127.X.0.0/16 for LocalNodes, claimed until the process ends (or
    ``release_fixture_subnet``)."""
    global _fixture_subnet
    if _fixture_subnet is None:
        _fixture_subnet = claim_subnet(f"pid:{os.getpid()}")
    return _fixture_subnet


def release_fixture_subnet() -> None:
    """Give this process's LocalNodes subnet back (at the end of a test session): a claim left
    to go stale is something for `gameday clean` to find."""
    global _fixture_subnet
    if _fixture_subnet is not None:
        release_subnet(_fixture_subnet, f"pid:{os.getpid()}")
        _fixture_subnet = None


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NodeProcess:
    def __init__(self, node_id: str, host: str, data_dir: Path, log_path: Path) -> None:
        self.node_id = node_id
        self.host = host
        self.port = free_port(host)
        self.admin_port = free_port(host)
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def start(self, peers: dict[str, str], groups: dict[str, tuple[str, ...]], *extra: str) -> None:
        args = [
            sys.executable,
            "-m",
            "cluster.storage",
            "--node-id",
            self.node_id,
            "--listen",
            self.address,
            "--admin",
            f"{self.host}:{self.admin_port}",
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "WARNING",
            *extra,
        ]
        for peer, addr in peers.items():
            args += ["--peer", f"{peer}={addr}"]
        for group, members in groups.items():
            args += ["--group", f"{group}={','.join(members)}"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            # Tied to this process: even a SIGKILLed pytest (or bench) leaves no node behind.
            self.proc = tied_popen(args, signal.SIGKILL, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:  # a stop that hangs becomes a power-off
                    self.proc.kill()
                    self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get_json(self, path: str) -> Any:
        url = self.admin + path
        signed = urllib.request.Request(url, headers=auth.url_headers("GET", url))
        with urllib.request.urlopen(signed, timeout=ADMIN_BOUND) as resp:
            return json.loads(resp.read())


class LocalNodes:
    def __init__(
        self,
        tmp: Path,
        groups: dict[str, tuple[str, ...]],
        nodes: tuple[str, ...] = ("n1", "n2", "n3"),
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.groups = groups
        self.extra = extra_args
        subnet = fixture_subnet()
        self.nodes = {
            n: NodeProcess(n, f"127.{subnet}.0.{i + 1}", tmp / n, tmp / f"{n}.log")
            for i, n in enumerate(nodes)
        }

    def __enter__(self) -> LocalNodes:
        try:  # nodes that never got healthy are stopped too: nothing outlives the test
            for node in self.nodes:
                self.start(node)
            self.wait_healthy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for node in self.nodes.values():
            node.kill(signal.SIGTERM)

    def peers(self) -> dict[str, str]:
        return {n: p.address for n, p in self.nodes.items()}

    def start(self, node: str) -> None:
        self.nodes[node].start(self.peers(), self.groups, *self.extra)

    def kill(self, node: str) -> None:
        self.nodes[node].kill(signal.SIGKILL)

    def wait_healthy(self, nodes: Iterable[str] | None = None, stall: float = STALL) -> None:
        """Wait while ``nodes`` (all) are alive (a busy machine is slow, not broken); a node
        that exited fails at once, and one that stays unhealthy for ``stall`` seconds after the
        previous one came up (no progress) fails too."""
        since = time.monotonic()
        for node in [self.nodes[n] for n in (self.nodes if nodes is None else nodes)]:
            while True:
                try:
                    if node.get_json("/health")["status"] == "ok":
                        break
                except OSError:
                    pass
                if not node.alive():
                    raise RuntimeError(f"{node.node_id} exited; see {node.log_path}")
                if time.monotonic() - since > stall:
                    raise TimeoutError(
                        f"{node.node_id} not healthy after {stall:.0f}s without progress; "
                        f"see {node.log_path}"
                    )
                time.sleep(0.05)
            since = time.monotonic()

    def status(self, node: str) -> dict[str, Any]:
        return dict(self.nodes[node].get_json("/replicas"))

    def addresses(self) -> dict[str, str]:
        return {n: p.address for n, p in self.nodes.items()}

    def leader(self, group: str) -> str | None:
        """The node that leads ``group`` with a valid lease, if exactly one claims it."""
        leaders = []
        for node_id, node in self.nodes.items():
            if not node.alive():
                continue
            try:
                replicas = node.get_json("/replicas")["replicas"]
            except OSError:
                continue
            for r in replicas:
                if r["group"] == group and r["role"] == "leader" and r["lease"]:
                    leaders.append(node_id)
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(
        self, group: str, timeout: float = LEADER_BOUND, not_: str | None = None
    ) -> str:
        """The leader of ``group`` (other than ``not_``). Elections on a starved machine take
        many rounds; ``timeout`` only bounds a group that never elects one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(group)
            if leader is not None and leader != not_:
                return leader
            if not any(node.alive() for node in self.nodes.values()):
                raise RuntimeError(f"no node of {group} is running")
            time.sleep(0.05)
        raise TimeoutError(f"no leader for {group} within {timeout}s")
