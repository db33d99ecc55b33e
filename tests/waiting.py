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

import time
from collections.abc import Callable
from typing import TypeVar

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
