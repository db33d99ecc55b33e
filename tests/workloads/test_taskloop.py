"""workloads/taskloop.py: tasks back to back inside one Locust task call, within Locust's
contract: the same task ratios, graceful stops (end of run, ramp-down) after the task in
progress, a bounded loop, a yield after a task that did not wait, ``--tags`` filters.

Locust patches the interpreter with gevent when imported, so the users run in a child Python,
which prints what each case saw."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, time
    import gevent
    from locust import User, constant, tag, task
    from locust.env import Environment
    from locust.user.inspectuser import get_ratio
    from workloads import taskloop
    from workloads.taskloop import TaskLoopUser

    out = {}

    def body(user, name, wait=0.0):
        user.log.append(("start", name))
        if wait:
            gevent.sleep(wait)
            user.yielded = True
        user.log.append(("end", name))

    class Plain(User):
        abstract = True
        wait_time = constant(0)

        def __init__(self, environment):
            super().__init__(environment)
            self.log = []
            self.stopped = False

        def on_stop(self):
            self.stopped = True

        @task(3)
        def read(self):
            body(self, "read", 0.02)

        @task(1)
        @tag("w")
        def write(self):
            body(self, "write", 0.02)

    class Looping(TaskLoopUser, Plain):
        pass

    class Tagged(Looping):
        pass

    class Once(Looping):
        loop_tasks = False

    env = Environment(user_classes=[Looping])
    out["ratio"] = [
        get_ratio([cls], {cls.__name__: 1}, False)[cls.__name__] for cls in (Looping, Plain)
    ]

    def run(users, stop_after, ramp_to=None):
        env = Environment(user_classes=[Looping], stop_timeout=5.0)
        runner = env.create_local_runner()
        runner.start(users, spawn_rate=100)
        gevent.sleep(stop_after)
        everyone = [g.args[0] for g in runner.user_greenlets]
        if ramp_to is not None:
            runner.start(ramp_to, spawn_rate=100)
            gevent.sleep(0.2)
            left = [g.args[0] for g in runner.user_greenlets]
            gone = [u for u in everyone if u not in left]
        started = time.monotonic()
        runner.stop()
        took = time.monotonic() - started
        return everyone, took, gone if ramp_to is not None else None

    def unfinished(user):
        starts = sum(1 for what, _ in user.log if what == "start")
        return starts - sum(1 for what, _ in user.log if what == "end")

    users, took, _ = run(3, 0.3)
    out["stop"] = {
        "took": took,
        "unfinished": [unfinished(u) for u in users],
        "stopped": [u.stopped for u in users],
        "tasks": [len(u.log) // 2 for u in users],
    }
    users, took, gone = run(2, 0.3, ramp_to=1)
    out["ramp"] = {
        "gone": len(gone),
        "unfinished": [unfinished(u) for u in gone],
        "stopped": [u.stopped for u in gone],
        "took": took,
    }

    taskloop.LOOP_LENGTH = 7
    user = Looping(Environment(user_classes=[Looping]))
    user.tasks[0](user)
    out["bounded"] = len(user.log) // 2

    class Busy(TaskLoopUser):
        wait_time = constant(0)

        def __init__(self, environment):
            super().__init__(environment)
            self.ran = 0

        @task
        def spin(self):
            self.ran += 1
            self.yielded = self.claims

    taskloop.LOOP_LENGTH = 50
    for claims in (False, True):
        Busy.claims = claims
        ticks = []
        ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0) for _ in range(1000)])
        gevent.sleep(0)
        ticks.clear()
        busy = Busy(Environment(user_classes=[Busy]))
        busy.tasks[0](busy)
        out["yields", claims] = [busy.ran, len(ticks)]
        ticker.kill()
    out = {str(k): v for k, v in out.items()}

    env = Environment(user_classes=[Tagged], tags=["w"], stop_timeout=5.0)
    runner = env.create_local_runner()
    runner.start(1, spawn_rate=100)  # the runner applies --tags to the user classes' tasks
    gevent.sleep(0.2)
    user = next(iter(runner.user_greenlets)).args[0]
    runner.stop()
    out["tags"] = sorted({name for _, name in user.log})

    user = Once(Environment(user_classes=[Once]))
    user.tasks[0](user)
    out["no loop"] = len(user.log) // 2
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def seen() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_web_ui_sees_the_same_tasks_and_weights(seen: dict[str, Any]) -> None:
    looping, plain = seen["ratio"]
    tasks = {"read": {"ratio": 0.75}, "write": {"ratio": 0.25}}
    assert looping == plain == {"ratio": 1.0, "tasks": tasks}


def test_a_graceful_stop_ends_each_loop_after_the_task_in_progress(seen: dict[str, Any]) -> None:
    stop = seen["stop"]
    assert stop["unfinished"] == [0, 0, 0]  # no task cut short (the stop timeout is 5 s)
    assert stop["stopped"] == [True, True, True]  # on_stop ran
    assert stop["took"] < 1.0  # the loops ended at once, not at the stop timeout
    assert min(stop["tasks"]) >= 5  # each user ran several 20 ms tasks in 0.3 s


def test_a_ramp_down_stops_a_looping_user_after_its_task(seen: dict[str, Any]) -> None:
    ramp = seen["ramp"]
    assert ramp["gone"] == 1
    assert ramp["unfinished"] == [0] and ramp["stopped"] == [True]


def test_the_loop_is_bounded(seen: dict[str, Any]) -> None:
    assert seen["bounded"] == 7  # LOOP_LENGTH tasks, then back to Locust's loop


def test_a_task_that_did_not_wait_is_followed_by_a_yield(seen: dict[str, Any]) -> None:
    ran, ticks = seen["('yields', False)"]
    assert ran == 50 and ticks >= 49  # the other greenlet ran between the tasks
    ran, ticks = seen["('yields', True)"]
    assert ran == 50 and ticks == 0  # a task that waited anyway is not followed by a sleep(0)


def test_tags_filter_the_loop_as_they_filter_locust(seen: dict[str, Any]) -> None:
    assert seen["tags"] == ["write"]


def test_without_the_loop_each_call_runs_one_task(seen: dict[str, Any]) -> None:
    assert seen["no loop"] == 1
