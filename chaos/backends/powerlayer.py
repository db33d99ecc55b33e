"""The power-loss layer of a cluster: one lazyfs mount per storage node, and its control.

A cluster created with the layer keeps each storage node's files in ``<data_dir>/backing/<id>``
and mounts chaos/backends/lazyfs.py over ``<data_dir>/nodes/<id>`` (the node's data directory)
before the node starts. The mounts live on this host, for the local backend and for Docker
alike: a Docker storage node's container bind-mounts its ``nodes/<id>`` as its data directory
(``owner`` serves the mount to the container's unprivileged user), and a container started
again after a power loss binds the fresh mount. The mount daemons are supervised like a local
cluster's processes (``run/lazyfs-<id>.pid``), so ``down``, the dead-man's switch and ``gameday
clean`` stop them; ``leftover_mounts`` finds any mount of the layer whose daemon is gone, by its
type in /proc/mounts.

    layer = PowerLayer(data_dir, procs)
    layer.mount("sn-a1")                      # before the node starts
    layer.lose("sn-a1", torn=False, seed=7)   # after SIGKILL: unsynced bytes gone, remounted
    layer.mount("sn-a1")                      # power on: waits until the mount is up
    layer.unmount_all()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .lazyfs import FSNAME, is_mounted, unmount
from .processes import ProcessTable

MARKER = "power-layer.json"  # in the data dir: this cluster's storage nodes sit on the layer
MOUNT_TIMEOUT = 60.0  # a busy machine takes seconds to start a Python daemon
CONTROL_DIR = Path(tempfile.gettempdir()) / "gameday-lazyfs"


class PowerLayerError(RuntimeError):
    """The layer could not be mounted or did not answer (the message says why and where)."""


def daemon_id(node_id: str) -> str:
    return f"lazyfs-{node_id}"


class PowerLayer:
    """The lazyfs mounts under one local cluster's storage nodes."""

    def __init__(
        self, data_dir: Path, procs: ProcessTable, owner: tuple[int, int] | None = None
    ) -> None:
        """``owner`` (uid, gid): serve the mounts to that user rather than to root alone (the
        unprivileged user of a Docker container whose data directory is bind-mounted from one)."""
        self.data_dir = data_dir
        self.procs = procs
        self.owner = owner

    @staticmethod
    def enable(data_dir: Path) -> None:
        """Mark the cluster in ``data_dir`` as running its storage nodes on the layer."""
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / MARKER).write_text(json.dumps({"layer": "lazyfs", "fstype": FSNAME}))

    @property
    def enabled(self) -> bool:
        return (self.data_dir / MARKER).exists()

    def backing_dir(self, node_id: str) -> Path:
        return self.data_dir / "backing" / node_id

    def mountpoint(self, node_id: str) -> Path:
        return self.data_dir / "nodes" / node_id

    def control(self, node_id: str) -> Path:
        """The daemon's control socket: a short path of its own (a unix socket's path must fit
        in 108 bytes, and run directories nest deep), in a directory only root may enter."""
        key = hashlib.sha256(str(self.mountpoint(node_id).resolve()).encode()).hexdigest()
        return CONTROL_DIR / f"{key[:24]}.sock"

    def mounted(self, node_id: str) -> bool:
        return self.procs.alive(daemon_id(node_id)) and is_mounted(self.mountpoint(node_id))

    def mount(self, node_id: str) -> None:
        """Mount the layer over the node's data directory: start its daemon if it is not running,
        and wait until it reports the mount up (after a power loss the daemon remounts itself)."""
        if not self.procs.alive(daemon_id(node_id)):
            self._spawn(node_id)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while True:
            if not self.procs.alive(daemon_id(node_id)):
                raise PowerLayerError(
                    f"the power-loss layer of {node_id} exited while mounting; "
                    f"see {self.procs.log_file(daemon_id(node_id))}"
                )
            if self.control(node_id).exists() and is_mounted(self.mountpoint(node_id)):
                with contextlib.suppress(PowerLayerError, ValueError):
                    if self.ask(node_id, "status", timeout=2.0).get("up"):
                        return
            if time.monotonic() > deadline:
                raise PowerLayerError(
                    f"the power-loss layer of {node_id} not mounted after {MOUNT_TIMEOUT:.0f}s; "
                    f"see {self.procs.log_file(daemon_id(node_id))}"
                )
            time.sleep(0.05)

    def _spawn(self, node_id: str) -> None:
        mountpoint = self.mountpoint(node_id)
        if is_mounted(mountpoint):
            unmount(mountpoint)  # a daemon killed with its mount still there
        self.control(node_id).unlink(missing_ok=True)
        CONTROL_DIR.mkdir(mode=0o700, exist_ok=True)
        self.procs.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "chaos.backends.lazyfs"]
        argv += ["--backing", str(self.backing_dir(node_id)), "--mount", str(mountpoint)]
        argv += ["--control", str(self.control(node_id))]
        if self.owner is not None:
            # Only root passes the directories above the mounts (they admit other users) and
            # above the backing files.
            for parent in (mountpoint.parent, self.backing_dir(node_id).parent):
                parent.mkdir(parents=True, exist_ok=True)
                parent.chmod(0o700)
            argv += ["--owner", f"{self.owner[0]}:{self.owner[1]}"]
        self.procs.spawn(daemon_id(node_id), argv)

    def ask(self, node_id: str, command: str, timeout: float = 30.0) -> dict[str, Any]:
        """One command on the layer's control socket: ``status`` or ``power-loss [torn] SEED``."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.control(node_id)))
                sock.sendall(command.encode() + b"\n")
                reply = sock.makefile().readline()
            except OSError as exc:
                raise PowerLayerError(f"the power-loss layer of {node_id}: {exc}") from exc
        if not reply:
            raise PowerLayerError(f"the power-loss layer of {node_id} gave no answer")
        body: dict[str, Any] = json.loads(reply)
        return body

    def status(self, node_id: str) -> dict[str, Any]:
        return self.ask(node_id, "status")

    def lose(self, node_id: str, *, torn: bool, seed: int) -> dict[str, Any]:
        """Power loss (the node is already dead): every unsynced byte is put back as of its last
        fsync and the mount goes, the kernel's cache of it with it; the daemon then mounts what
        was synced again, for the node's power-on. Returns what was lost (files, bytes, torn).
        """
        if not self.mounted(node_id):
            raise PowerLayerError(f"{node_id} is not on the power-loss layer (not mounted)")
        lost = self.ask(node_id, f"power-loss {'torn ' if torn else ''}{seed}")
        if not lost.pop("ok", False):
            raise PowerLayerError(f"the power-loss layer of {node_id}: {lost.get('error')}")
        return lost

    def unmount(self, node_id: str) -> None:
        """Stop the daemon (SIGTERM: libfuse unmounts) and make sure nothing stays mounted."""
        self.procs.stop(daemon_id(node_id))
        if is_mounted(self.mountpoint(node_id)):
            unmount(self.mountpoint(node_id))
        self.control(node_id).unlink(missing_ok=True)

    def unmount_all(self) -> None:
        """Every mount of the layer under this data dir, whether its daemon is alive or not."""
        for pid_file in sorted(self.procs.run_dir.glob("lazyfs-*.pid")):
            self.unmount(pid_file.stem.removeprefix("lazyfs-"))
        for mountpoint in leftover_mounts(self.data_dir):
            unmount(mountpoint)


def leftover_mounts(under: Path | None = None) -> list[Path]:
    """Mounts of the layer (type ``fuse.gameday-lazyfs``), all or those below ``under``."""
    prefix = None if under is None else str(under.resolve())
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == f"fuse.{FSNAME}":
                path = fields[1].replace("\\040", " ")
                if prefix is None or path == prefix or path.startswith(prefix + "/"):
                    found.append(Path(path))
    return found
