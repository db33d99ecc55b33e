"""cluster/process.py's run_loop: every cluster process's event loop is uvloop's (issue #15)."""

from __future__ import annotations

import asyncio
import os
import signal

import uvloop

from cluster.process import run_loop, shutdown_signal


def test_run_loop_runs_the_coroutine_on_uvloop() -> None:
    seen: list[object] = []

    async def main() -> None:
        seen.append(asyncio.get_running_loop())

    run_loop(main())
    assert len(seen) == 1 and isinstance(seen[0], uvloop.Loop)


def test_shutdown_signal_ends_a_process_served_by_run_loop() -> None:
    """SIGTERM ends ``serve`` as on the standard loop (the signal handler is the loop's)."""
    stopped: list[bool] = []

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(shutdown_signal(), 5.0)
        stopped.append(True)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        run_loop(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped == [True]
