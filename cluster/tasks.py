"""Stopping a cluster process's background asyncio tasks, the same way everywhere.

A service (the MemDS refresh loop, the router's partition resolver and GAC client, a storage
client's reply reader, a replica's loop, the archiver) starts its loop with
``asyncio.create_task`` and stops it with ``cancel_and_wait``: cancelled, and awaited so that
its ``finally`` blocks have run before the service closes what the loop used.

    self.task = asyncio.create_task(self._loop(), name="memds-refresh")
    ...
    await cancel_and_wait(self.task)    # None (never started) is fine

Work that must not stop half-way (a storage node swapping a rebuilt replica's files) is
awaited with ``uninterrupted``: a cancelled caller waits for it to end, then is cancelled.

A periodic job (the router's TTL and transaction sweepers) is ``run_every``: one round each
interval, an expected error skipping a round, a bug logged without ending the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished unwinding."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def uninterrupted(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even when the caller is cancelled meanwhile; the cancellation
    is raised once it has ended (nothing it does runs on unwatched, nothing stops half-way)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})  # a cancel of the caller never reaches ``task``
        except asyncio.CancelledError:
            cancelled = True  # (a second cancel too: it used to cancel ``task`` itself)
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the caller is told of its cancellation only
        raise asyncio.CancelledError
    return task.result()


async def run_every(
    seconds: float,
    step: Callable[[], Awaitable[Any]],
    what: str,
    expected: tuple[type[BaseException], ...],
    log: logging.Logger,
) -> None:
    """Await ``step`` every ``seconds``, until cancelled. An ``expected`` error skips one round
    (logged at INFO: the next round tries again); any other is logged with its traceback and
    the loop goes on (a bug must not end ``what`` for the process's lifetime)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except expected as exc:
            log.info("%s skipped: %s", what, exc)
        except Exception:
            log.exception("%s failed", what)
