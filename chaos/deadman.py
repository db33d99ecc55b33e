"""The dead-man's switch: a watchdog process that heals the cluster if the orchestrator dies.

The orchestrator holds a lease — a file it rewrites with the time every ttl/4 seconds from a
thread of its own. The watchdog, a separate process in its own session, polls the file: if the
lease is not renewed for ``ttl`` seconds (the orchestrator was SIGKILLed, or hangs), it heals
everything (toxics removed, paused processes resumed, dead ones started) and exits. A released
lease ("done") or a deleted file makes it exit quietly.

    lease = Lease(state_dir / "deadman.lease", ttl=3.0)
    watchdog = spawn_watchdog(backend, lease)     # python -m chaos.deadman ...
    ...                                           # inject faults, run the game day
    lease.release()                               # normal end: the watchdog exits
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from chaos.backends.base import Backend

log = logging.getLogger(__name__)
DONE = "done"
MAX_LIFETIME = 24 * 3600.0  # even a forgotten watchdog ends


class Lease:
    def __init__(self, path: Path, ttl: float = 3.0) -> None:
        self.path = path
        self.ttl = ttl
        self._stop = threading.Event()
        self.renew()
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{time.time():.3f}")
        tmp.replace(self.path)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            self.renew()

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ttl)
        self.path.write_text(DONE)


def spawn_watchdog(backend: Backend, lease: Lease) -> subprocess.Popen[bytes]:
    log_path = backend.state_dir / "logs" / "deadman.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "chaos.deadman",
        "--backend",
        backend.name,
        "--data-dir",
        str(backend.state_dir),
        "--lease",
        str(lease.path),
        "--ttl",
        str(lease.ttl),
    ]
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def watch(lease_path: Path, ttl: float, poll: float = 0.2) -> bool:
    """Block until the lease expires (True) or is released / removed (False)."""
    started = time.monotonic()
    while time.monotonic() - started < MAX_LIFETIME:
        try:
            content = lease_path.read_text().strip()
        except FileNotFoundError:
            return False
        except OSError:
            content = ""
        if content == DONE:
            return False
        with contextlib.suppress(ValueError):
            if time.time() - float(content) > ttl:
                return True
        time.sleep(poll)
    return False


def open_backend(kind: str, data_dir: Path) -> Backend:
    if kind == "local":
        from chaos.backends.local import LocalCluster

        return LocalCluster.open(data_dir)
    if kind == "docker":
        from chaos.backends.docker import DockerCluster

        return DockerCluster.open(data_dir)
    raise ValueError(f"unknown backend {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.deadman", description=__doc__)
    parser.add_argument("--backend", default="local")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--lease", required=True, type=Path)
    parser.add_argument("--ttl", type=float, default=3.0)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s deadman %(levelname)s %(message)s")
    if not watch(args.lease, args.ttl):
        log.info("lease released: exiting")
        return
    log.warning("lease expired (orchestrator gone): healing the cluster")
    from chaos.nemesis import Nemesis

    backend = open_backend(args.backend, args.data_dir)
    Nemesis(backend).heal_all()
    args.lease.write_text(DONE)
    log.warning("healed")


if __name__ == "__main__":
    main()
