"""Open-loop Locust users against a real responder that stalls, and a client stopped by SIGSTOP.

The invariant of issue #13: a window in which served throughput collapses can no longer be
reported as available; reported availability <= served / intended in every window. Both stalls
are real: an HTTP server that holds requests unanswered, and the Locust process frozen with
SIGSTOP (it records nothing meanwhile, so only its schedule says what it meant to do).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from checks.availability import check, check_availability
from checks.rundir import RunDir
from tests.waiting import bytes_under, wait_exit
from workloads.history import describe_problems, merge_histories, read_ops
from workloads.runner import start_locust, stop_locust
from workloads.settings import LoadSettings

pytestmark = pytest.mark.slow


@dataclass
class Responder:
    """Answers every DynamoDB call with 200 {} (an absent item; a write applied), except while
    ``stalled`` is set: then requests (and health checks) are held unanswered until it clears.
    With ``throttle_every`` = n, every n-th call is refused with a ThrottlingException."""

    server: ThreadingHTTPServer
    stalled: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    served: int = 0
    calls: int = 0
    throttle_every: int = 0

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


@contextmanager
def serve() -> Iterator[Responder]:
    state: Responder

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a router does

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.calls += 1
            if state.throttle_every and state.calls % state.throttle_every == 0:
                self.answer(
                    400, b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException"}'
                )
                return
            if self.answer(200, b"{}"):
                state.served += 1

        def do_GET(self) -> None:  # /health
            self.answer(200, b'{"status":"ok"}')

        def answer(self, status: int, body: bytes) -> bool:
            if state.stalled.is_set():
                state.released.wait(timeout=10)  # bounded, in case the test dies
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                return False  # the client gave up (timed out) and closed the connection
            return True

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Responder(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def responder() -> Iterator[Responder]:
    with serve() as state:
        yield state


def test_stalls_cannot_be_reported_as_available(responder: Responder, tmp_path: Path) -> None:
    run_start = time.time()
    settings = LoadSettings(
        endpoints=(responder.url,),
        access_key="gameday",
        secret_key="secret",
        workload="register",
        keys=10,
        history_dir=tmp_path / "history",
        run_start=run_start,
        timeout=1.0,  # the op deadline
        user_rate=10.0,
    )

    def now() -> float:
        return time.time() - run_start

    with (tmp_path / "locust.log").open("wb") as log:
        proc = start_locust(settings, users=4, spawn_rate=4, run_time="60s", log=log)
        try:
            # Wait until the load runs (importing Locust takes seconds, a minute when busy);
            # while Locust lives, bounded by 300 s.
            for _ in range(3000):
                if responder.served > 30 or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert responder.served > 30, (tmp_path / "locust.log").read_text()
            time.sleep(1.0)
            # window A: the service holds every request for 2.5 s of a 4 s window
            stall = (now(), now() + 4.0)
            responder.stalled.set()
            time.sleep(2.5)
            responder.stalled.clear()
            responder.released.set()
            time.sleep(stall[1] - now() + 1.0)
            responder.released.clear()
            # window B: the client itself is frozen for 2 s of a 3 s window
            frozen = (now(), now() + 3.0)
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                time.sleep(2.0)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(frozen[1] - now() + 1.5)
            end = now()
        finally:
            stop_locust(proc)
    merge_histories(tmp_path / "history", tmp_path / "history.jsonl")
    assert describe_problems(list(read_ops(tmp_path / "history.jsonl"))) == []
    assert (tmp_path / "schedule.jsonl").exists()
    (tmp_path / "scenario.json").write_text(json.dumps({"name": "stall", "slos": {}}))
    events = [
        {"time": 0.0, "event": "run_start"},
        {"time": stall[0], "event": "fault_start", "fault_id": "stall", "fault": "stall"},
        {"time": stall[1], "event": "fault_end", "fault_id": "stall", "fault": "stall"},
        {"time": frozen[0], "event": "fault_start", "fault_id": "frozen", "fault": "sigstop"},
        {"time": frozen[1], "event": "fault_end", "fault_id": "frozen", "fault": "sigstop"},
        {"time": end, "event": "run_end"},
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    run = RunDir(tmp_path)
    result = check(run)
    assert result.details["loop"] == "open"
    windows = {w["id"]: w for w in result.details["windows"]}
    for w in windows.values():  # the invariant, for every window
        assert w["intended"] > 0
        assert w["ratio"] <= w["served"] / w["intended"], w
    steady, a, b = windows["steady"], windows["stall"], windows["frozen"]
    # Steady state stands clearly above both stalls. (Not an absolute bar: on a starved machine
    # the client itself misses some sends even then, and open loop counts those too.)
    assert steady["ratio"] > max(a["ratio"], b["ratio"]) + 0.15, (steady, a, b)
    # 2.5 s of 4 s stalled: at most about half the intended ops can have been served in time
    assert a["ratio"] < 0.75, a
    # frozen for 2 s of 3: the first second of it was never sent (past its 1 s deadline)
    assert b["ratio"] < 0.75 and b["not_sent"] > b["intended"] / 5, b
    assert b["throughput_ratio"] < 0.75, b

    # the same history judged closed loop (no schedule) is kinder: what the verdict used to say
    closed = check_availability(run.history or [], run.fault_windows(), run.slos(), span=run.span())
    closed_windows = {w["id"]: w for w in closed.details["windows"]}
    assert closed.details["loop"] == "closed"
    assert closed_windows["stall"]["ratio"] > a["ratio"] + 0.1
    assert closed_windows["frozen"]["ratio"] > b["ratio"] + 0.1


def test_clients_retry_with_backoff_and_leave_a_router_that_hangs(tmp_path: Path) -> None:
    """Two routers: one holds every request (and health check) unanswered, the other refuses
    every fourth call with a ThrottlingException. SDK-like users retry within the deadline, move
    to the router that answers, and record every attempt."""
    with serve() as hung, serve() as throttling:
        hung.stalled.set()
        throttling.throttle_every = 4
        settings = LoadSettings(
            endpoints=(hung.url, throttling.url),
            access_key="gameday",
            secret_key="secret",
            workload="register",
            keys=10,
            history_dir=tmp_path / "history",
            run_start=time.time(),
            timeout=3.0,
            attempt_timeout=0.5,
            user_rate=5.0,
        )
        with (tmp_path / "locust.log").open("wb") as log:
            proc = start_locust(settings, users=4, spawn_rate=4, run_time="8s", log=log)
            try:  # Locust's import is slow on a busy machine: wait for progress, not 90 s
                code = wait_exit(proc, "Locust's run", progress=lambda: bytes_under(tmp_path))
            finally:
                stop_locust(proc)
                hung.released.set()
        assert code in (0, 1), (tmp_path / "locust.log").read_text()  # 1: Locust saw failures
        hung_calls = hung.calls
    merge_histories(tmp_path / "history", tmp_path / "history.jsonl")
    records = list(read_ops(tmp_path / "history.jsonl"))
    assert describe_problems(records) == []
    invokes = [r for r in records if r["type"] == "invoke"]
    retries = [r for r in invokes if r.get("attempt", 1) > 1]
    errors = Counter(r.get("error", "").split(":")[0] for r in records if r["type"] != "invoke")
    assert errors["ThrottlingException"] > 0 and retries, errors
    # the hung router's attempts timed out, each recorded as unknown (it may have applied them)
    timed_out = [r for r in records if "timed out" in r.get("error", "")]
    assert timed_out and all(r["type"] == "info" for r in timed_out), errors
    # a retried write writes a fresh value: every write in the history is distinct
    writes = [r["value"] for r in invokes if r["f"] == "write"]
    assert len(writes) == len(set(writes))
    # the users left the hung router: it saw a few attempts, the other one nearly all
    assert hung_calls < len(invokes) / 5, (hung_calls, len(invokes))
    (tmp_path / "scenario.json").write_text(json.dumps({"name": "retries", "slos": {}}))
    result = check(RunDir(tmp_path))
    overall = result.details["overall"]
    assert result.details["loop"] == "open"
    assert overall["retried"] > 0
    # throttling and a hung router cost retries, not availability: the SDK's caller got answers
    assert overall["ratio"] > 0.9, overall
