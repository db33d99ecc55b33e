"""A real storage node process whose journal fails exits by itself (fail-stop), and a restart
keeps every acknowledged write (node.py ``_fail_stop``; test_node_fail_stop.py in-process).

The node runs ``python -m cluster.storage``'s ``main`` behind an injected ``os.fdatasync`` that
raises EIO on the journal once a trigger file exists. It used to stay up with its journal
failed: frozen replicas, a live endpoint, an operator told by one log line only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chaos.backends.lifeline import tied_popen
from cluster.storage.client import NodeClient, NodeUnavailable
from cluster.storage.commands import PutCommand, encode_command
from tests.local_nodes import fixture_subnet, free_port

pytestmark = pytest.mark.slow
GROUPS = ("p0", "p1")
EXIT_BOUND = 30.0  # an upper bound for the exit on a busy machine (it takes well under 1 s)
DEADLINE = 60.0  # for a single-member group to elect itself, an upper bound

INJECTED = """
import os, sys
trigger, real = os.environ["FAIL_JOURNAL_AFTER"], os.fdatasync
def fdatasync(fd):
    if os.path.exists(trigger) and "/journal/" in os.readlink(f"/proc/self/fd/{fd}"):
        raise OSError(5, "EIO (injected)")
    real(fd)
os.fdatasync = fdatasync
from cluster.storage.__main__ import main
main()
"""


class Node:
    def __init__(self, tmp: Path) -> None:
        host = f"127.{fixture_subnet()}.0.1"
        self.address = f"{host}:{free_port(host)}"
        self.args = ["--node-id", "n1", "--listen", self.address, "--data-dir", str(tmp / "n1")]
        self.args += ["--admin", f"{host}:{free_port(host)}", "--healing", "off"]
        self.args += [a for g in GROUPS for a in ("--group", f"{g}=n1")]
        self.log = tmp / "n1.log"
        self.trigger = tmp / "fail"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, inject: bool) -> None:
        argv = [sys.executable, *(["-c", INJECTED] if inject else ["-m", "cluster.storage"])]
        env = {**os.environ, "FAIL_JOURNAL_AFTER": str(self.trigger)}
        with self.log.open("ab") as log:  # tied: even a SIGKILLed pytest leaves no node behind
            self.proc = tied_popen(
                [*argv, *self.args], signal.SIGKILL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def put(key: str) -> bytes:
    return encode_command(PutCommand("t", key.encode(), b"", {"v": {"S": key}}))


async def connect(node: Node) -> NodeClient:
    """A client of ``node`` once it listens."""
    deadline = time.monotonic() + DEADLINE
    while True:
        client = NodeClient(node.address)
        try:
            await client.connect()
            return client
        except NodeUnavailable:
            assert node.proc is not None and node.proc.poll() is None, node.log.read_text()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def call(client: NodeClient, op: str, **fields: Any) -> dict[str, Any]:
    """``op`` on a group that elects itself (its one member), retried until it leads."""
    deadline = time.monotonic() + DEADLINE
    while True:
        reply = await client.call(op, deadline=10.0, **fields)
        if reply.get("error") != "NotLeader" or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.05)


def test_a_node_whose_journal_fails_exits_and_keeps_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    acked: list[tuple[str, str]] = []
    failing_since = [0.0]

    async def write_then_fail() -> dict[str, Any] | str:
        async with await connect(node) as client:
            for i in range(20):
                group = GROUPS[i % 2]
                reply = await call(client, "propose", group=group, cmd=put(f"k{i}"))
                assert reply.get("result", {}).get("ok"), reply
                acked.append((group, f"k{i}"))
            node.trigger.touch()
            failing_since[0] = time.monotonic()
            try:
                return await client.call("propose", deadline=EXIT_BOUND, group="p0", cmd=put("x"))
            except (NodeUnavailable, TimeoutError) as exc:
                return repr(exc)

    async def read_back() -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        async with await connect(node) as client:
            for group, key in acked:
                reply = await call(
                    client, "get", group=group, tbl="t", pk=key.encode(), sk=b"", consistent=True
                )
                assert "item" in reply, reply
                found[key] = None if reply["item"] is None else reply["item"]["v"]["S"]
        return found

    try:
        node.start(inject=True)
        last = asyncio.run(write_then_fail())
        assert node.proc is not None
        code = node.proc.wait(EXIT_BOUND)  # TimeoutExpired: the node stayed up (the old code)
        took = time.monotonic() - failing_since[0]
        assert not (isinstance(last, dict) and "result" in last), last  # never acknowledged
        assert code == 1, code
        lines = node.log.read_text().splitlines()
        assert lines[-1].startswith(
            "node n1: journal failed: OSError: [Errno 5] EIO (injected); stopped (fail-stop)"
        ), lines[-5:]
        assert not any("Traceback" in line for line in lines), node.log.read_text()
        print(f"exit {code} {took:.2f}s after the failing write; said: {lines[-1]}")
        node.start(inject=False)
        assert asyncio.run(read_back()) == {key: key for _, key in acked}
    finally:
        node.stop()
