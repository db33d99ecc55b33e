"""Children that die with this process, even when it is SIGKILLed: Linux's PR_SET_PDEATHSIG.

A run that tears down what it started (and `gameday load`) ties its children to itself: the
child asks the kernel, between fork and exec, for a signal when its parent goes away, so a
SIGKILLed parent takes them down at once, before the watchdog (chaos/deadman.py) even looks.
The watchdog stays: it also heals, stops process groups and removes containers, which no
signal reaches.

The kernel sends the signal when the *thread* that forked the child ends, not the process. A
worker of ``asyncio.to_thread`` or of a ``ThreadPoolExecutor`` may end at any time, taking its
children along, so every tied child is forked from one long-lived thread kept for that.

    proc = tied_popen(["locust", ...], signal.SIGTERM, stdout=log)   # dies with us
    procs = ProcessTable(run_dir, log_dir, die_with=signal.SIGKILL)   # so do the cluster's
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _prctl()  # resolved here, never in a forked child


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the thread that forked it ends."""
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:  # in the child, between fork and exec: no imports, no locks
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: as if it had fired
            os.kill(os.getpid(), sig)

    return preexec


class _Forker:
    """One daemon thread that lives as long as the process and forks every tied child."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="lifeline", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                done.set_result(job())
            except BaseException as exc:  # handed to the caller, who raises it
                done.set_exception(exc)

    def call(self, job: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return job()
        done: Future[Any] = Future()
        self._jobs.put((job, done))
        return done.result()


_forker: _Forker | None = None
_forker_lock = threading.Lock()


def _the_forker() -> _Forker:
    global _forker
    with _forker_lock:
        if _forker is None or not _forker._thread.is_alive():
            _forker = _Forker()
        return _forker


def tied_popen(
    argv: list[str], sig: int = signal.SIGKILL, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **kwargs)`` whose child gets ``sig`` when this process dies."""
    preexec = die_with_parent(sig)
    proc: subprocess.Popen[bytes] = _the_forker().call(
        lambda: subprocess.Popen(argv, preexec_fn=preexec, **kwargs)
    )
    return proc
