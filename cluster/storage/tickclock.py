"""How far a replica's processed Raft ticks lag real time, for its leader lease.

A leader's lease is counted in ticks. When the event loop stalls, the ticks already submitted
wait in the replica's inbox, so the tick count the core has seen falls behind real time and the
lease would look longer than it is. A lease read must never be judged then: it waits for the
tick loop to catch up (the inbox applies the waiting ticks together), and refuses if it is still
late. Each tick records the instant it stands for, not when the inbox got to it, so a tick
queued before a stall does not make a lagging count look current.

    clock = TickClock(tick_seconds=0.05)
    clock.ticked(time.monotonic())           # from the inbox, after raft.tick()
    await clock.caught_up(timeout=0.2)       # a lease read: wait while late ...
    clock.late()                             # ... then refuse if still late
"""

from __future__ import annotations

import asyncio
import time

LATE_AFTER_TICKS = 1.5
"""The newest processed tick may stand this many tick intervals in the past before it is late."""


class TickClock:
    def __init__(self, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self.last_tick_at = time.monotonic()
        self._waiters: list[asyncio.Future[None]] = []

    def ticked(self, instant: float) -> None:
        """The core processed a tick standing for ``instant`` (monotonic): wake the waiters."""
        self.last_tick_at = max(self.last_tick_at, instant)
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def late(self) -> bool:
        return time.monotonic() - self.last_tick_at > self.tick_seconds * LATE_AFTER_TICKS

    async def caught_up(self, timeout: float) -> None:
        """Wait (at most ``timeout``) while the processed ticks lag real time."""
        end = time.monotonic() + timeout
        while self.late() and (remaining := end - time.monotonic()) > 0:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                return
            finally:
                if future in self._waiters:
                    self._waiters.remove(future)
