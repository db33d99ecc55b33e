"""Supervising cluster processes on this machine: spawn detached, remember pids, send signals.

Processes are started in their own session so they outlive the CLI that started them
(``gameday cluster up`` returns; the cluster keeps running). Each one's pid is kept in
``<run_dir>/<id>.pid`` and its output in ``<log_dir>/<id>.log``, so any later command — or the
dead-man's switch — can find and signal it.

    procs = ProcessTable(data_dir / "run", data_dir / "logs")
    procs.spawn("sn-a1", [sys.executable, "-m", "cluster.storage", ...])
    procs.signal("sn-a1", signal.SIGKILL)      # power off
    procs.alive("sn-a1")                       # False
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .lifeline import tied_popen

MAX_LOG_BYTES = 16 * 1024 * 1024  # a log this big is rotated when its process starts again
KEEP_LOGS = 2  # <id>.log.1 and <id>.log.2


def rotate_log(path: Path, max_bytes: int = MAX_LOG_BYTES, keep: int = KEEP_LOGS) -> None:
    """Shift ``path`` to ``path.1`` (older ones up to ``keep``) once over ``max_bytes``."""
    try:
        if path.stat().st_size <= max_bytes:
            return
    except FileNotFoundError:
        return
    for n in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        newer = path if n == 1 else path.with_name(f"{path.name}.{n - 1}")
        if newer.exists():
            newer.replace(older)


def start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot, from /proc), to tell it from a later
    process that reuses its pid; None when it is gone or a zombie (killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def pid_alive(pid: int) -> bool:
    return start_time(pid) is not None


class ProcessTable:
    def __init__(self, run_dir: Path, log_dir: Path, die_with: int | None = None) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        # A signal every process spawned from now on gets when this process dies (a run that
        # tears down what it started; chaos/backends/lifeline.py); None: they outlive it.
        self.die_with = die_with

    def pid_file(self, process_id: str) -> Path:
        return self.run_dir / f"{process_id}.pid"

    def log_file(self, process_id: str) -> Path:
        return self.log_dir / f"{process_id}.log"

    def pid(self, process_id: str) -> int | None:
        try:
            return int(self.pid_file(process_id).read_text())
        except (OSError, ValueError):
            return None

    def alive(self, process_id: str) -> bool:
        pid = self.pid(process_id)
        return pid is not None and pid_alive(pid)

    def spawn(
        self,
        process_id: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        rotate_bytes: int | None = None,
    ) -> int:
        """Start ``argv`` detached; refuses if a live process already has this id.

        With ``rotate_bytes`` its output goes through chaos/backends/logpipe.py, which keeps the
        log under that size (plus two rotated files) however long the process runs.
        """
        if self.alive(process_id):
            raise RuntimeError(f"{process_id} is already running (pid {self.pid(process_id)})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_file(process_id)
        rotate_log(log_path)
        if rotate_bytes is None:
            with log_path.open("ab") as log:  # the child keeps its own descriptor
                proc = self._popen(argv, log.fileno(), env)
        else:
            read_end, write_end = os.pipe()
            try:
                reader = [sys.executable, "-m", "chaos.backends.logpipe", "--log", str(log_path)]
                reader += ["--max-bytes", str(rotate_bytes), "--keep", str(KEEP_LOGS)]
                self._popen(reader, read_end, None, stdout=subprocess.DEVNULL)
                proc = self._popen(argv, write_end, env)
            finally:  # the reader ends at EOF: when the process (the last writer) exits
                os.close(read_end)
                os.close(write_end)
        self.pid_file(process_id).write_text(str(proc.pid))
        return proc.pid

    def _popen(
        self, argv: list[str], out: int, env: dict[str, str] | None, stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        """``argv`` in a session of its own, its output to ``out`` (or, with ``stdout``, its
        input from ``out`` and its output there)."""
        options: dict[str, Any] = {
            "stdin": subprocess.DEVNULL if stdout is None else out,
            "stdout": out if stdout is None else stdout,
            "stderr": subprocess.STDOUT,
            "start_new_session": True,
            "env": {**os.environ, **(env or {})},
        }
        if self.die_with is not None:
            return tied_popen(argv, self.die_with, **options)
        return subprocess.Popen(argv, **options)

    def signal(self, process_id: str, sig: int) -> bool:
        """Send ``sig``; False when there was no live process to receive it."""
        pid = self.pid(process_id)
        if pid is None or not self.alive(process_id):
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        if sig == signal.SIGKILL:
            self.wait_dead(process_id, 5.0)
        return True

    def wait_dead(self, process_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap(process_id)
            if not self.alive(process_id):
                return True
            time.sleep(0.01)
        return False

    def stop(self, process_id: str, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; resumes a paused process first."""
        if not self.alive(process_id):
            return
        self.signal(process_id, signal.SIGCONT)
        self.signal(process_id, signal.SIGTERM)
        if not self.wait_dead(process_id, grace):
            self.signal(process_id, signal.SIGKILL)

    def _reap(self, process_id: str) -> None:
        """Collect our own child's exit status so it does not linger as a zombie."""
        pid = self.pid(process_id)
        if pid is not None:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
