"""Calls on a replica's store made in one event-loop pass run as one job on the I/O thread.

Every read of a replica (GetItem, Query, Scan, a transaction's reads, status) runs on the
node's I/O thread, the one that owns the store's SQLite connection. As one executor job each,
a read cost a hand-off that wakes the thread, and a ``call_soon_threadsafe`` back (a write to
the loop's self-pipe and a wake-up of the loop) for its answer: more than the SQLite lookup
itself. ``StoreCalls`` gathers the calls made during one pass of the loop and runs them, in
the order made, as one job that hands every outcome back at once. Each call still runs on
that one thread between the same jobs as before (Ready batches, dumps): it sees the store as
the applies before it left it, and raises its own exception to its own caller only.

    calls = StoreCalls(executor)
    item = await calls.run(lambda: store.get("t", b"k", b""))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

SLICE_SECONDS = 0.002
"""A job hands back the outcomes it has whenever it has run this long since it last did."""

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class StoreCalls:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._queued: list[_Call] = []

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the executor's thread; raises what it raised (RuntimeError when the
        executor has shut down). A caller that stops waiting does not stop ``fn``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._submit, loop)
        self._queued.append((fn, future))
        return await future

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        calls, self._queued = self._queued, []

        def run_all() -> None:
            outcomes: list[tuple[bool, Any]] = []
            sent, since = 0, time.monotonic()
            for fn, _ in calls:
                try:
                    outcomes.append((True, fn()))
                except BaseException as exc:  # its caller's to handle
                    outcomes.append((False, exc))
                if len(outcomes) < len(calls) and time.monotonic() - since > SLICE_SECONDS:
                    # After a long call (a page of a scan), what is done leaves at once: an
                    # answer waits for at most about one call or SLICE_SECONDS more.
                    deliver(calls[sent : len(outcomes)], outcomes[sent:])
                    sent, since = len(outcomes), time.monotonic()
            deliver(calls[sent:], outcomes[sent:])

        def deliver(done: list[_Call], outcomes: list[tuple[bool, Any]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_deliver, done, outcomes)

        try:
            self.executor.submit(run_all)
        except RuntimeError as exc:  # the executor shut down (the replica closed)
            _deliver(calls, [(False, RuntimeError(str(exc))) for _ in calls])


def _deliver(calls: list[_Call], outcomes: list[tuple[bool, Any]]) -> None:
    for (_, future), (ok, value) in zip(calls, outcomes, strict=True):
        if future.done():  # its caller stopped waiting
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
