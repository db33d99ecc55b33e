"""StoreCalls: the store calls of one loop pass run in order as one job on the I/O thread."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cluster.storage.storecalls import StoreCalls


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.jobs = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


def test_calls_of_one_pass_run_in_order_as_one_job_on_the_thread() -> None:
    async def main() -> None:
        io = CountingExecutor()
        calls = StoreCalls(io)
        ran: list[tuple[int, str]] = []

        def call(i: int) -> int:
            ran.append((i, threading.current_thread().name))
            return i * 10

        results = await asyncio.gather(*(calls.run(lambda i=i: call(i)) for i in range(8)))
        assert results == [i * 10 for i in range(8)]
        assert [i for i, _ in ran] == list(range(8))
        assert all(name != threading.current_thread().name for _, name in ran)
        assert io.jobs == 1
        assert await calls.run(lambda: "later") == "later" and io.jobs == 2
        io.shutdown()

    asyncio.run(main())


def test_each_caller_gets_its_own_exception() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(max_workers=1) as io:
            calls = StoreCalls(io)

            def fail() -> int:
                raise KeyError("gone")

            ok, bad, ok2 = await asyncio.gather(
                calls.run(lambda: 1), calls.run(fail), calls.run(lambda: 2), return_exceptions=True
            )
            assert (ok, ok2) == (1, 2) and isinstance(bad, KeyError)

    asyncio.run(main())


def test_a_shut_down_executor_raises_runtime_error() -> None:
    async def main() -> None:
        io = ThreadPoolExecutor(max_workers=1)
        io.shutdown()
        with pytest.raises(RuntimeError):
            await StoreCalls(io).run(lambda: 1)

    asyncio.run(main())


def test_a_caller_that_stopped_waiting_does_not_break_the_others() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(max_workers=1) as io:
            calls = StoreCalls(io)
            gate = threading.Event()
            slow = asyncio.ensure_future(calls.run(gate.wait))
            other = asyncio.ensure_future(calls.run(lambda: "other"))
            await asyncio.sleep(0.01)
            slow.cancel()
            gate.set()
            assert await other == "other"

    asyncio.run(main())


def test_answers_leave_after_a_long_call_without_waiting_for_the_rest() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(max_workers=1) as io:
            calls = StoreCalls(io)
            gate = threading.Event()
            slow = asyncio.ensure_future(calls.run(lambda: time.sleep(0.01) or "slow"))
            blocked = asyncio.ensure_future(calls.run(lambda: gate.wait(5) and "blocked"))
            assert await asyncio.wait_for(slow, 2) == "slow"  # the job still runs ``blocked``
            assert not blocked.done()
            gate.set()
            assert await blocked == "blocked"

    asyncio.run(main())
