"""Property-based fuzzing of a live router: the JSON API of every operation, and HTTP framing.

Hypothesis draws requests (fuzz_strategies.py), each is signed and sent over a real socket to
router rt-a of the session cluster, and every answer must be a well-formed reply below 500,
within the hang bound, with no traceback in the router's log and its memory bounded. The
number of examples is modest for ``make test``; raise it for a long hunt:

    GAMEDAY_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/cluster/router/test_fuzz.py

A failure prints the smallest request that broke the router (Hypothesis shrinks it).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.backends.local import LocalCluster
from tests.cluster.router.fuzz_strategies import http_messages, requests, table_requests
from tests.cluster.router.rawhttp import RawRouter
from tests.conftest import client_for

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("GAMEDAY_FUZZ_EXAMPLES", "250"))
HANG_SECONDS = 15.0  # an answer later than this is a hang (the router's own limits are < 5 s)
MAX_RSS_GROWTH = 64 * 1024 * 1024
FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,  # leave no .hypothesis directory behind
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@dataclass
class Tally:
    """What the fuzzing saw, printed at the end (pytest -s) and used for the report."""

    count: int = 0
    slowest: float = 0.0
    over_5s: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, status: int, seconds: float) -> None:
        self.count += 1
        self.slowest = max(self.slowest, seconds)
        self.over_5s += seconds > 5.0
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def __str__(self) -> str:
        by_status = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.count} requests, slowest {self.slowest:.2f} s, {self.over_5s} over 5 s; "
            f"statuses {by_status}"
        )


@pytest.fixture(scope="module")
def fuzz_table(local_cluster: LocalCluster) -> Iterator[str]:
    client = client_for(local_cluster)
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})
    yield name
    client.delete_table(TableName=name)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RouterWatch:
    """rt-a's memory and log, before and after a fuzz run."""

    def __init__(self, cluster: LocalCluster) -> None:
        pid = cluster.procs.pid("rt-a")
        assert pid is not None
        self.pid = pid
        self.log = cluster.procs.log_file("rt-a")
        self.rss = _rss(pid)
        self.log_size = self.log.stat().st_size if self.log.exists() else 0

    def check(self) -> None:
        growth = _rss(self.pid) - self.rss
        assert growth < MAX_RSS_GROWTH, f"router RSS grew {growth / 2**20:.0f} MiB"
        with self.log.open("rb") as f:
            f.seek(self.log_size)
            added = f.read().decode(errors="replace")
        assert "Traceback" not in added and " ERROR " not in added, added[-4000:]


def test_fuzz_json_api_of_every_operation(
    local_cluster: LocalCluster, fuzz_table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = RawRouter.of(local_cluster)
    watch = RouterWatch(local_cluster)
    made = [f"fuzz-made-{uuid.uuid4().hex[:6]}", f"fuzz-made-{uuid.uuid4().hex[:6]}"]
    tally = Tally()

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        strategy = st.one_of(*[requests(fuzz_table)] * 19, table_requests(made))
        operation, request = data.draw(strategy, label="request")
        reply = raw.call(operation, json.dumps(request).encode(), timeout=HANG_SECONDS)
        tally.add(reply.status, reply.seconds)
        assert reply.status < 500, (operation, reply.body[:500])
        body = reply.json  # every answer is DynamoDB JSON
        if reply.status >= 400:
            assert reply.type and isinstance(body.get("message"), str), body

    try:
        fuzz()
    finally:
        client = client_for(local_cluster)
        for name in made:
            if name in client.list_tables()["TableNames"]:
                client.delete_table(TableName=name)
        with capsys.disabled():
            print(f"\nJSON API fuzz against rt-a: {tally}")
    assert raw.call("ListTables", b"{}").status == 200
    watch.check()


def _exchange(raw: RawRouter, message: bytes) -> bytes:
    """Send ``message``, collect what comes back until the router goes quiet, then half-close
    and read to the end: the router must close within the hang bound."""
    received = b""
    with raw.connect(timeout=0.5) as sock:
        try:
            sock.sendall(message)
            while chunk := sock.recv(65536):
                received += chunk
            return received  # the router closed the connection
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return received
        sock.settimeout(HANG_SECONDS)
        try:
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def test_fuzz_http_framing(local_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    raw = RawRouter.of(local_cluster)
    watch = RouterWatch(local_cluster)
    tally = Tally()

    @settings(FUZZ_SETTINGS, max_examples=max(20, EXAMPLES // 2))
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        message = data.draw(http_messages(lambda body: raw.head("ListTables", body)))
        started = time.monotonic()
        received = _exchange(raw, message)
        seconds = time.monotonic() - started
        statuses = [int(s) for s in re.findall(rb"^HTTP/1\.[01] (\d{3}) ", received, re.M)]
        for status in statuses or [0]:  # 0: closed without an answer
            tally.add(status, seconds)
        assert all(status < 500 for status in statuses), received[:500]

    try:
        fuzz()
    finally:
        with capsys.disabled():
            print(f"\nHTTP framing fuzz against rt-a: {tally}")
    assert raw.call("ListTables", b"{}").status == 200
    watch.check()
