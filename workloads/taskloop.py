"""Locust users whose tasks run back to back inside the task call Locust makes.

Between two tasks Locust's own loop picks the next task, sets the user's state and sleeps
``wait_time()``: with no think time a ``gevent.sleep(0)``, a trip through the gevent hub. For
a load generator that sends one request per task and has no think time, that loop cost ~8% of
its CPU per request (issue #15, bench/loadgen.py). A :class:`TaskLoopUser` whose ``loop_tasks``
is true runs up to ``LOOP_LENGTH`` tasks per call Locust makes: the one Locust picked, then each
next one picked as Locust picks it (``random.choice(self.tasks)``: weights and ``--tags``
filters apply). Locust's contract is kept:

- stopping: a graceful stop (``stop(force=False)``: the run's end with a stop timeout, a
  ramp-down, the web UI's stop button) ends the loop after the task in progress, and Locust
  then stops the user as before; a forced stop kills the greenlet wherever it waits, as before;
- fairness: after a task that did not wait on the hub (the user's ``yielded`` stays false: no
  answer came, nothing slept) the loop sleeps 0 as Locust's loop does after every task;
- ``tasks``, which the web UI's task ratios show, names and weighs the same tasks: each entry
  runs its task alone when called inside the loop, and the loop when Locust calls it.

With ``loop_tasks`` false (think time between tasks) Locust's loop runs every task itself.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any, ClassVar

import gevent
from locust import TaskSet, User
from locust.env import Environment

LOOP_LENGTH = 1000  # tasks per call Locust makes, at most; then Locust's loop turns once


class _LoopingTask:
    """A task of a :class:`TaskLoopUser`: the loop when Locust calls it, the task alone inside
    the loop. Carries the task's name, docstring and attributes (``@tag``)."""

    def __init__(self, task: Callable[[Any], object]) -> None:
        self.task = task
        functools.update_wrapper(self, task)

    def __call__(self, user: TaskLoopUser) -> None:
        if user.in_loop or not user.loop_tasks:
            self.task(user)
            return
        user.in_loop = True
        try:
            user.run_tasks(self.task)
        finally:
            user.in_loop = False


class TaskLoopUser(User):
    """A Locust user whose tasks (plain functions) run in a loop inside one task call.

    A task sets ``self.yielded = True`` when it waited on the gevent hub (an answer, a sleep)."""

    abstract = True
    loop_tasks: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Locust's metaclass has collected the class's tasks (with their weights) by now
        # (a task of weight n is n entries of the same function: one wrapper for all of them)
        functions = [t for t in cls.tasks if not isinstance(t, (type, TaskSet))]
        if len(functions) < len(cls.tasks):
            return  # a nested TaskSet: Locust's loop runs this class's tasks
        wrapped: dict[Any, _LoopingTask] = {}
        for t in functions:
            if t not in wrapped:
                wrapped[t] = t if isinstance(t, _LoopingTask) else _LoopingTask(t)
        cls.tasks = [wrapped[t] for t in functions]

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.in_loop = False
        self.yielded = False
        self.stop_asked = False

    def stop(self, force: bool = False) -> bool:
        self.stop_asked = True  # the loop ends after the task in progress
        return bool(super().stop(force))

    def run_tasks(self, first: Callable[[Any], object]) -> None:
        """Run ``first``, then tasks picked as Locust picks them, until ``LOOP_LENGTH`` tasks
        ran or a stop was asked."""
        self.yielded = False
        first(self)
        for _ in range(LOOP_LENGTH - 1):  # bounded; Locust's loop then picks and calls again
            if self.stop_asked:
                return
            if not self.yielded:
                gevent.sleep(0)  # as Locust's loop would: the other users run meanwhile
            self.yielded = False
            task = random.choice(self.tasks)
            if not isinstance(task, _LoopingTask):
                return  # tasks changed under us (not functions any more): Locust's loop decides
            task.task(self)
