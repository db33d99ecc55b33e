"""Stopping a cluster process's background asyncio tasks, the same way everywhere.

A service (the MemDS refresh loop, the router's partition resolver and GAC client, a storage
client's reply reader, a replica's loop, the archiver) starts its loop with
``asyncio.create_task`` and stops it with ``cancel_and_wait``: cancelled, and awaited so that
its ``finally`` blocks have run before the service closes what the loop used.

    self.task = asyncio.create_task(self._loop(), name="memds-refresh")
    ...
    await cancel_and_wait(self.task)    # None (never started) is fine
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished unwinding."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
