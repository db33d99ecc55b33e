"""Locust users for gameday: DynamoDB workloads over SigV4, each op recorded to the history.

One locustfile serves the web UI, headless runs, ``--processes`` and distributed workers. It is
configured by ``GAMEDAY_*`` environment variables (see workloads/settings.py), which
``gameday load`` sets after creating the table:

    GAMEDAY_ENDPOINTS=http://127.20.1.100:8000 GAMEDAY_ACCESS_KEY=gameday \\
    GAMEDAY_SECRET_KEY=... GAMEDAY_WORKLOAD=register GAMEDAY_HISTORY_DIR=runs/x \\
        locust -f workloads/locustfile.py --headless -u 5 -r 5 -t 30s \\
               --host http://127.20.1.100:8000

Choosing the users: with ``GAMEDAY_WORKLOAD`` set, only that workload's class is runnable (the
others are marked abstract). Without it all five are, each on its own ``gameday-<workload>``
table, and Locust's own selection applies: name classes on the command line
(``locust -f workloads/locustfile.py RegisterUser``) or pick them in the web UI
(``--class-picker``).

Pacing: with ``GAMEDAY_USER_RATE`` each user runs open loop, one op every ``1 / rate`` s on a
schedule fixed in advance (workloads/schedule.py); each invoke records its intended start, slots
whose deadline passed while the user was stuck are skipped, and the user's schedule goes into the
history so that the checker counts every op it meant to send. Without it users run closed loop
(think time ``GAMEDAY_WAIT``), which hides stalls from the verdict. Locust's own statistics
measure service time either way; the checker's latencies count from the intended start. With
no think time (open loop, or ``GAMEDAY_WAIT=0``) a user runs its tasks back to back inside the
task call Locust makes (workloads/taskloop.py: same task weights, a graceful stop ends the loop
after the op in progress).

Every request is reported through the ordinary ``events.request``, named by its DynamoDB
operation, so Locust's statistics, CSV and UI see it; ConditionalCheckFailed counts as a
success there (a normal answer of a conditional workload), while the history says ``fail``.
Requests go over workloads/lean_http.py (one keep-alive connection per user and router) signed
by workloads/sigv4.py, with orjson: Locust's FastHttpSession and botocore's signer cost more
CPU per request than the cluster does (bench/loadgen.py measures it). History capture is a
recorder the users call around each op, buffered per OS process and flushed every second and
by the ``test_stop``/``quitting`` listeners.
"""

from __future__ import annotations

import atexit
import itertools
import os
import random
import re
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import gevent
import orjson
from locust import between, constant, events, task
from locust.env import Environment
from locust.exception import CatchResponseError

from workloads import bank, ops
from workloads.catalog import QUERY_SORT_KEYS
from workloads.catalog import workload as workload_spec
from workloads.history import HistoryWriter, OpF, OpRecorder, OpType, RunClock
from workloads.keys import key_chooser, key_name
from workloads.lean_http import Connection, get_status
from workloads.outcomes import is_expected, judge
from workloads.retry import EndpointPool, RetryPolicy, moves_on
from workloads.schedule import Pacer, schedule_end_record, schedule_record
from workloads.settings import LoadSettings
from workloads.sigv4 import SigV4Signer
from workloads.taskloop import TaskLoopUser

SETTINGS = LoadSettings.from_env()
CLOCK = RunClock(SETTINGS.run_start)
HOST = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"
FLUSH_INTERVAL = 1.0
HEALTH_INTERVAL = 1.0
RETRY = RetryPolicy()

_user_numbers = itertools.count()
# members looked up once: OpType.OK costs ~0.2 us each time (Python 3.11), a dozen per request
_OK, _INFO = OpType.OK, OpType.INFO


# --- history capture ---------------------------------------------------------------------------


class _ProcessHistory:
    """This OS process's part file. Created on first use, after Locust's --processes fork."""

    writer: HistoryWriter | None = None
    pid: int | None = None


def history_writer() -> HistoryWriter | None:
    if SETTINGS.history_dir is None:
        return None
    pid = os.getpid()
    if _ProcessHistory.writer is None or _ProcessHistory.pid != pid:
        writer = HistoryWriter(SETTINGS.history_dir / f"history-{HOST}-{pid}.jsonl")
        _ProcessHistory.writer, _ProcessHistory.pid = writer, pid
        gevent.spawn(_flush_periodically, writer)
    return _ProcessHistory.writer


def _flush_periodically(writer: HistoryWriter) -> None:
    for _ in range(10**8):  # bounded; the process ends it first
        gevent.sleep(FLUSH_INTERVAL)
        writer.flush()


def flush_history(**_: Any) -> None:
    if _ProcessHistory.writer is not None and _ProcessHistory.pid == os.getpid():
        _ProcessHistory.writer.flush()


events.test_stop.add_listener(flush_history)  # type: ignore[no-untyped-call]
events.quitting.add_listener(flush_history)  # type: ignore[no-untyped-call]
atexit.register(flush_history)


# --- router health ---------------------------------------------------------------------------


class EndpointHealth:
    """This OS process's view of which routers answer ``GET /health``, probed every second.

    Users skip a router marked down (``down``) as well as one that just failed them."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self.endpoints = endpoints
        self.down: set[str] = set()

    def probe_forever(self) -> None:
        for _ in range(10**7):  # bounded; the process ends it first
            for endpoint in self.endpoints:
                try:  # cooperative: Locust has monkey-patched sockets for gevent
                    healthy = get_status(endpoint, "/health", 0.5) == 200
                except (OSError, ValueError):
                    healthy = False
                (self.down.discard if healthy else self.down.add)(endpoint)
            gevent.sleep(HEALTH_INTERVAL)


class _ProcessHealth:
    health: EndpointHealth | None = None
    pid: int | None = None


def endpoint_health(endpoints: tuple[str, ...]) -> EndpointHealth:
    pid = os.getpid()
    if _ProcessHealth.health is None or _ProcessHealth.pid != pid:
        health = EndpointHealth(endpoints)
        _ProcessHealth.health, _ProcessHealth.pid = health, pid
        if len(endpoints) > 1:  # with one router there is nowhere else to go
            gevent.spawn(health.probe_forever)
    return _ProcessHealth.health


# --- the users ---------------------------------------------------------------------------------


class DynamoUser(TaskLoopUser):
    """One client: a router endpoint (round-robin), a SigV4 signer, a key chooser, a recorder."""

    abstract = True
    workload: ClassVar[str] = ""
    # open loop: perform() paces every op by the schedule; closed loop: think time between tasks
    wait_time = constant(0) if SETTINGS.user_rate else between(0.0, SETTINGS.wait)
    # no think time: tasks run back to back inside one Locust task call (workloads/taskloop.py)
    loop_tasks = bool(SETTINGS.user_rate) or SETTINGS.wait == 0
    network_timeout = min(SETTINGS.attempt_timeout, SETTINGS.timeout)
    connection_timeout = min(network_timeout, 1.0)
    # no transport retries: they would hide attempts; perform() records each one

    def __init__(self, environment: Environment) -> None:
        self.number = next(_user_numbers)
        endpoints = SETTINGS.endpoints or ((environment.host,) if environment.host else ())
        if not endpoints:
            raise ValueError("no endpoints: set GAMEDAY_ENDPOINTS or --host")
        # round-robin over the routers; each user moves on by itself when its router fails it
        self.pool = EndpointPool(endpoints, first=self.number + os.getpid())
        self.host = self.pool.current(0.0)
        super().__init__(environment)
        self.health = endpoint_health(tuple(endpoints))
        self.spec = workload_spec(self.workload)
        self.table = SETTINGS.table_for(self.spec)
        # distinct per worker process and user, and the same on a rerun with the same layout
        worker = getattr(environment.runner, "worker_index", 0)
        seed = f"{SETTINGS.seed}/{self.workload}/{worker}/{self.number}"
        self.keys = key_chooser(SETTINGS.distribution, SETTINGS.keys_for(self.spec), seed)
        self.rng = random.Random(seed)
        self.signers = {
            e: SigV4Signer(e, SETTINGS.access_key, SETTINGS.secret_key) for e in endpoints
        }
        self.connections = {
            e: Connection(e, self.network_timeout, self.connection_timeout) for e in endpoints
        }
        self.urls = {e: e + "/" for e in endpoints}  # as Locust's request events name them
        self.recorder = OpRecorder(history_writer(), CLOCK, f"{HOST}-{os.getpid()}-u{self.number}")
        self.writes = itertools.count(1)
        self.pacer: Pacer | None = None
        if SETTINGS.user_rate:
            # a random phase, so that users spread their ops over the period instead of in step
            first = CLOCK.now() + self.rng.uniform(0.0, 1.0 / SETTINGS.user_rate)
            self.pacer = Pacer(SETTINGS.user_rate, first, SETTINGS.timeout)
            if self.recorder.writer is not None:
                self.recorder.writer.append_record(schedule_record(self.recorder.base, self.pacer))

    def on_stop(self) -> None:
        for connection in self.connections.values():
            connection.close()
        if self.pacer is not None and self.recorder.writer is not None:
            self.recorder.writer.append_record(schedule_end_record(self.recorder.base, CLOCK.now()))

    def next_slot(self) -> float | None:
        """Open loop: wait for this op's intended start and return it; closed loop: None."""
        if self.pacer is None:
            return None
        slot = self.pacer.next_slot(CLOCK.now())
        delay = slot.intended - CLOCK.now()
        if delay > 0:
            gevent.sleep(delay)
            self.yielded = True
        return slot.intended

    def next_key(self) -> str:
        return key_name(self.spec.key_prefix, self.keys.next())

    def new_value(self) -> str:
        """Unique across the run: host, pid and user number, then a per-user counter."""
        return f"{self.recorder.base}-{next(self.writes)}"

    def perform(
        self,
        f: OpF,
        key: str,
        call: ops.Call,
        value: Any = None,
        consistent: bool | None = None,
        result: Callable[[dict[str, Any]], Any] | None = None,
        again: Callable[[], tuple[ops.Call, Any]] | None = None,
    ) -> Outcome:
        """Send ``call`` as an AWS SDK would, recording every attempt; return how it ended.

        Retryable outcomes (throttling, 5xx, no answer) are retried after a capped exponential
        backoff with full jitter while the op's deadline (GAMEDAY_TIMEOUT from its intended
        start) allows; after a timeout, a refused connection or a 5xx the next attempt goes to
        another router. Each attempt is its own op in the history (an unknown outcome completes as
        info), and a write's retry writes a fresh value from ``again()`` so that every write in
        the history stays distinct. The completion's value is ``result(answer)`` when ok and
        ``result`` is given, else the value sent.
        """
        intended = None if self.pacer is None else self.next_slot()
        deadline = (CLOCK.now() if intended is None else intended) + SETTINGS.timeout
        outcome = Outcome(_INFO, "interrupted", {}, value)
        for attempt in range(1, RETRY.max_attempts + 1):
            if attempt > 1 and again is not None:
                call, value = again()
            endpoint = self.pool.current(CLOCK.now(), self.health.down)
            outcome = self.attempt(
                endpoint, f, key, call, value, consistent, result, intended, attempt
            )
            error = outcome.error
            if error is not None and moves_on(error):  # no answer, or a 5xx: another router next
                self.pool.failed(endpoint, CLOCK.now())
            elif outcome.type is _OK or outcome.answer:
                self.pool.healthy(endpoint)  # it answered: the router itself is fine
            if outcome.type is _OK or not RETRY.retryable(outcome.type, error):
                break
            remaining = deadline - CLOCK.now()
            if remaining <= 0:
                break
            gevent.sleep(RETRY.delay(attempt, self.rng, remaining))
            self.yielded = True
            if CLOCK.now() >= deadline:
                break
        return outcome

    def attempt(
        self,
        endpoint: str,
        f: OpF,
        key: str,
        call: ops.Call,
        value: Any,
        consistent: bool | None,
        result: Callable[[dict[str, Any]], Any] | None,
        intended: float | None,
        attempt: int = 1,
    ) -> Outcome:
        """One request to ``endpoint``, recorded as an invoke and its completion. If the user is
        killed mid-request, the op completes as info ("interrupted")."""
        body = orjson.dumps(call.params)
        headers = self.signers[endpoint].headers(call.operation, body)
        retry = attempt if attempt > 1 else None
        pending = self.recorder.invoke(f, key, value, consistent, intended, retry)
        outcome: OpType = _INFO
        error: str | None = "interrupted"
        answer: dict[str, Any] = {}
        final = value
        try:
            started = time.perf_counter()
            status, content, failure = 0, b"", None
            try:
                status, content = self.connections[endpoint].post(headers, body)
            except Exception as exc:  # any transport error: no answer, an unknown outcome
                failure = exc
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if status:
                self.yielded = True  # an answer came: lean_http waited for it on the hub
            outcome, error, answer = judge(status, content, failure)
            if outcome is _OK and result is not None:
                try:
                    final = result(answer)
                except (KeyError, ValueError, TypeError):
                    outcome, error = _INFO, "MalformedResponse"
            counted = outcome is _OK or is_expected(error)
            self.environment.events.request.fire(
                request_type="POST",
                name=call.operation,
                response_time=elapsed_ms,
                response_length=len(content),
                exception=None if counted else (failure or CatchResponseError(error)),
                context={},
                url=self.urls[endpoint],
            )
        finally:
            done = final if outcome is _OK else value
            self.recorder.finish(pending, outcome, done, None if outcome is _OK else error)
        return Outcome(outcome, error, answer, value)


class Outcome(NamedTuple):
    """How an op ended: its last attempt's outcome, error and answer, and the value it sent."""

    type: OpType
    error: str | None
    answer: dict[str, Any]
    value: Any


class RegisterUser(DynamoUser):
    """Registers for linearizability: consistent read, unique write, cas (weights 2:1:1).

    A cas expects the value this user last saw for the key; without one it reads instead.
    """

    workload = "register"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.seen: dict[str, str] = {}

    def read_key(self, key: str) -> None:
        call = ops.get_item(self.table, key, consistent=True)
        done = self.perform(OpF.READ, key, call, consistent=True, result=ops.read_value)
        if done.type is _OK:
            current = ops.read_value(done.answer)
            if current is None:
                self.seen.pop(key, None)
            else:
                self.seen[key] = current

    @task(2)
    def read(self) -> None:
        self.read_key(self.next_key())

    @task(1)
    def write(self) -> None:
        key = self.next_key()

        def put() -> tuple[ops.Call, str]:
            value = self.new_value()
            return ops.put_item(self.table, key, value), value

        done = self.perform(OpF.WRITE, key, *put(), again=put)
        if done.type is _OK:
            self.seen[key] = done.value

    @task(1)
    def cas(self) -> None:
        key = self.next_key()
        expected = self.seen.get(key)
        if expected is None:
            self.read_key(key)
            return

        def swap() -> tuple[ops.Call, list[str]]:
            new = self.new_value()
            return ops.cas(self.table, key, expected, new), [expected, new]

        done = self.perform(OpF.CAS, key, *swap(), again=swap)
        if done.type is _OK:
            self.seen[key] = done.value[1]
        else:
            self.seen.pop(key, None)  # stale, or unknown: read before the next cas


class _YcsbUser(DynamoUser):
    abstract = True
    padding: ClassVar[str] = "x" * 100

    def get(self) -> None:
        key = self.next_key()
        call = ops.get_item(self.table, key, consistent=False)
        self.perform(OpF.GET, key, call, consistent=False, result=ops.read_value)


class ReadHeavyUser(_YcsbUser):
    """YCSB-B: 95% eventually consistent get, 5% put."""

    workload = "read-heavy"

    @task(95)
    def read(self) -> None:
        self.get()

    @task(5)
    def put(self) -> None:
        key = self.next_key()

        def put() -> tuple[ops.Call, str]:
            value = self.new_value()
            return ops.put_item(self.table, key, value, self.padding), value

        self.perform(OpF.PUT, key, *put(), again=put)


class UpdateHeavyUser(_YcsbUser):
    """YCSB-A: 50% eventually consistent get, 50% unconditional update."""

    workload = "update-heavy"

    @task(50)
    def read(self) -> None:
        self.get()

    @task(50)
    def update(self) -> None:
        key = self.next_key()

        def update() -> tuple[ops.Call, str]:
            value = self.new_value()
            return ops.update_value(self.table, key, value), value

        self.perform(OpF.UPDATE, key, *update(), again=update)


class ReadModifyWriteUser(DynamoUser):
    """YCSB-F: consistent get; or get then an update conditioned on the version read.

    The update's history value is the new value (a write); ConditionalCheckFailed (someone
    else updated in between) is recorded as fail.
    """

    workload = "rmw"

    def get(self, key: str) -> Outcome:
        call = ops.get_item(self.table, key, consistent=True)
        return self.perform(OpF.GET, key, call, consistent=True, result=ops.read_value)

    @task(1)
    def read(self) -> None:
        self.get(self.next_key())

    @task(1)
    def read_modify_write(self) -> None:
        key = self.next_key()
        got = self.get(key)
        if got.type is not OpType.OK:
            return
        version = ops.read_version(got.answer)

        def update() -> tuple[ops.Call, str]:
            value = self.new_value()
            return ops.versioned_update(self.table, key, version, value), value

        self.perform(OpF.UPDATE, key, *update(), again=update)


class QueryUser(DynamoUser):
    """Items under a few partition keys: put 3, Query over a sort-key range 5, delete 1.

    History keys are ``"<pk>#<sk>"`` for put/delete and ``"<pk>"`` for query, whose value is
    ``[lo, hi]`` at invoke and ``[[sk, v], ...]`` when ok.
    """

    workload = "query"

    def sort_key(self) -> int:
        return self.rng.randrange(QUERY_SORT_KEYS)

    @task(3)
    def put(self) -> None:
        pk, sk = self.next_key(), self.sort_key()

        def put() -> tuple[ops.Call, str]:
            value = self.new_value()
            return ops.put_sorted(self.table, pk, sk, value), value

        self.perform(OpF.PUT, ops.sorted_key_name(pk, sk), *put(), again=put)

    @task(5)
    def query(self) -> None:
        pk, lo = self.next_key(), self.sort_key()
        hi = min(QUERY_SORT_KEYS - 1, lo + self.rng.randrange(1, 20))
        call = ops.query_range(self.table, pk, lo, hi, consistent=True)
        self.perform(OpF.QUERY, pk, call, [lo, hi], consistent=True, result=ops.query_items)

    @task(1)
    def delete(self) -> None:
        pk, sk = self.next_key(), self.sort_key()
        call = ops.delete_sorted(self.table, pk, sk)
        self.perform(OpF.DELETE, ops.sorted_key_name(pk, sk), call, None)


class BankUser(DynamoUser):
    """A bank (workloads/bank.py): transfers between two accounts of ``GAMEDAY_KEYS`` (at most
    100) on many partitions, 3 in 4 ops, and audits of every account, 1 in 4.

    A transfer's retries reuse its ClientRequestToken, so an unknown outcome followed by a
    retry cannot move the money twice; a transfer cancelled for lack of funds is a normal
    answer (a ConditionalCheckFailed reason), one cancelled by a conflict is retried.
    """

    workload = "bank"
    # A transaction is several Raft steps: give each attempt the whole op deadline.
    network_timeout = SETTINGS.timeout

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        count = min(100, SETTINGS.keys_for(self.spec))
        self.accounts = [key_name(self.spec.key_prefix, i) for i in range(count)]

    def account(self) -> str:
        return self.accounts[self.keys.next() % len(self.accounts)]

    @task(3)
    def transfer(self) -> None:
        src, dst = self.account(), self.account()
        for _ in range(100):  # bounded: two distinct accounts (GAMEDAY_KEYS >= 2)
            if dst != src or len(self.accounts) < 2:
                break
            dst = self.account()
        amount = self.rng.randint(1, bank.MAX_AMOUNT)
        token = bank.token_for(self.new_value())
        call = bank.transfer(self.table, src, dst, amount, token)
        self.perform(OpF.TRANSFER, src, call, [src, dst, amount])

    @task(1)
    def audit(self) -> None:
        accounts = self.accounts
        call = bank.audit(self.table, accounts)
        value = {"accounts": accounts, "initial": bank.INITIAL_BALANCE}
        self.perform(
            OpF.AUDIT,
            bank.AUDIT_KEY,
            call,
            value,
            consistent=True,
            result=lambda answer: bank.balances(accounts, answer),
        )


USER_CLASSES: tuple[type[DynamoUser], ...] = (
    RegisterUser,
    ReadHeavyUser,
    UpdateHeavyUser,
    ReadModifyWriteUser,
    QueryUser,
    BankUser,
)


def select_workload(name: str | None) -> None:
    """Leave only ``name``'s user class runnable (all of them when ``name`` is None)."""
    for cls in USER_CLASSES:
        cls.abstract = name is not None and cls.workload != name


select_workload(SETTINGS.workload)

# Locust starts its --run-time timer with gevent's cached loop time, which went stale while this
# file's imports (botocore, aiohttp) ran; without a refresh a 5 s run ends after about 2 s.
gevent.get_hub().loop.update_now()
