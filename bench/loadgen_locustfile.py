"""bench/loadgen.py's locustfile: gameday's own users plus a probe of this process's CPU.

The probe samples Locust's request count and this process's CPU time (``time.process_time``)
after ``LOADGEN_WARMUP`` seconds and again ``LOADGEN_MEASURE`` seconds later, and writes the
difference as JSON to ``LOADGEN_PROBE``: what the load generator costs per request, without
its start-up and spawn.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from workloads.locustfile import *  # noqa: F403  (the user classes Locust runs)

PROBE = Path(os.environ["LOADGEN_PROBE"])
WARMUP = float(os.environ.get("LOADGEN_WARMUP", "2"))
MEASURE = float(os.environ.get("LOADGEN_MEASURE", "5"))


def _sample(environment: Environment) -> tuple[float, float, int]:
    return time.monotonic(), time.process_time(), environment.stats.total.num_requests


def _measure(environment: Environment) -> None:
    gevent.sleep(WARMUP)
    wall0, cpu0, n0 = _sample(environment)
    gevent.sleep(MEASURE)
    wall1, cpu1, n1 = _sample(environment)
    result = {"requests": n1 - n0, "seconds": wall1 - wall0, "cpu": cpu1 - cpu0}
    PROBE.write_text(json.dumps(result))


@events.init.add_listener
def _start_probe(environment: Environment, **_: Any) -> None:
    gevent.spawn(_measure, environment)
