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

A follower's side of the same lease is its stickiness: it refuses votes until election_ticks of
its ticks have passed since it last heard the leader. Ticks must therefore reach its core in
real-time order with the messages: a tick that stands for an instant before a heartbeat arrived,
processed after it, would count time that passed *before* the heartbeat, and after a stall the
catch-up ticks could end the stickiness the moment the heartbeat is processed, while the leader
holds a lease from that very heartbeat for lease_ticks more. ``TickSchedule`` hands out the due
instants; the node submits them before every peer message as well as from its tick loop:

    schedule = TickSchedule(tick_seconds=0.05, start=time.monotonic())
    for instant in schedule.due(time.monotonic()):  # before stepping a message, and each loop
        for replica in replicas: replica.tick(instant)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

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


STALL_WARN_SECONDS = 0.5
"""A stall of the event loop this long is logged (a WARNING, at most one per 10 s): one that
long can depose this node's leaders, so a game day's availability dip can be traced to it."""


class TickSchedule:
    """The tick instants, ``start + k * tick_seconds``, each handed out once and in order."""

    def __init__(self, tick_seconds: float, start: float) -> None:
        self.tick_seconds = tick_seconds
        self.next_at = start
        self.stalls = 0  # stalls of at least STALL_WARN_SECONDS, logged or not
        self._warned_at = -1e9

    def due(self, now: float) -> Iterator[float]:
        """Every instant not handed out yet that is at or before ``now`` (monotonic)."""
        late = now - self.next_at
        if late >= STALL_WARN_SECONDS:
            self.stalls += 1
            if now - self._warned_at >= 10.0:
                self._warned_at = now
                why = "CPU starved, or a blocking call on the loop"
                log.warning("event loop stalled: ticks %.2f s late (%s); %d stalls so far",
                            late, why, self.stalls)  # fmt: skip
        while self.next_at <= now:
            instant = self.next_at
            self.next_at += self.tick_seconds
            yield instant
