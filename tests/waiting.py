"""Waits that hold on a busy machine: for progress, not for a fixed deadline.

A wait fails when what it watches stops moving for ``stall`` seconds (the thing is stuck, not
slow), or once ``bound`` seconds passed in all (nothing hangs forever). On a machine whose load
average is 20, an election, a catch-up or a restart is slow yet keeps moving; only a stuck one
fails.

    wait_for("replicas converge", converged, progress=lambda: applied_indexes(cluster))
    wait_for("a leader", lambda: cluster.leader("p0"), stall=None)   # only the bound

``progress()`` returns any comparable value; each change restarts the ``stall`` clock.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

STALL = 60.0  # seconds without progress before a wait fails
BOUND = 600.0  # seconds in all: an upper bound for a hung test, not a deadline for a slow one


def wait_for(
    what: str,
    check: Callable[[], T | None],
    *,
    progress: Callable[[], object] | None = None,
    stall: float | None = STALL,
    bound: float = BOUND,
    every: float = 0.1,
) -> T:
    """``check()``'s first truthy value; AssertionError naming ``what`` when stuck or bounded.

    Without ``progress``, the ``stall`` clock never restarts: ``stall`` is then the deadline.
    """
    started = since = time.monotonic()
    last = progress() if progress is not None else None
    while True:
        value = check()
        if value:
            return value
        now = time.monotonic()
        if progress is not None:
            current = progress()
            if current != last:
                last, since = current, now
        if stall is not None and now - since > stall:
            raise AssertionError(f"{what}: no progress for {stall:.0f}s (last: {last!r})")
        if now - started > bound:
            raise AssertionError(f"{what}: not within {bound:.0f}s (last: {last!r})")
        time.sleep(every)


def bytes_under(*roots: Path) -> int:
    """Bytes in the files below ``roots``: a ``progress`` for anything that writes as it goes
    (a log, a history), e.g. ``progress=lambda: bytes_under(tmp_path)``."""
    total = 0
    for root in roots:
        paths = [root] if root.is_file() else root.rglob("*")
        for path in paths:
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
    return total


def wait_exit(
    proc: subprocess.Popen[Any],
    what: str,
    *,
    progress: Callable[[], object] | None = None,
    stall: float | None = STALL,
    bound: float = BOUND,
) -> int:
    """``proc``'s exit code, once it exits: it may take long while ``progress()`` moves (a
    Locust that imports for a minute on a busy machine, then runs), not stall."""
    wait_for(what, lambda: proc.poll() is not None, progress=progress, stall=stall, bound=bound)
    return int(proc.returncode)
