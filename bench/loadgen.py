"""Load-generator benchmark: signed requests per CPU-second of the Locust process, history on.

Runs gameday's own Locust users (one process, closed loop, no think time, history recorded to
a temporary run directory) three times, side by side in one run:
  1. against a trivial local responder (canned DynamoDB answers, its own process), which shows
     what the load generator alone can do;
  2. against the same responder answering each request after 20-60 ms (``--slow-ms 40``): as
     from the cluster, answers then arrive one at a time and each costs a wake-up of its own,
     which is the load generator's dearest case (the cluster's own rate decides how bunched its
     answers are, so this row stays comparable while the cluster gets faster);
  3. against a local 3x2x1 cluster (all routers), which shows it outruns the cluster.

The figure that matters is requests per CPU-second of the Locust process (its user + system
time, measured inside it after a warm-up, so start-up and spawning do not count): the machine
is shared, so wall-clock rates depend on who else runs. The goal (issue #15) is >= 6,000.

    .venv/bin/python bench/loadgen.py [--users 32] [--seconds 5] [--workload register]
                                      [--slow-ms 40] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canned_http import CannedResponder, canned  # bench/canned_http.py
from rich.console import Console
from rich.table import Table

from workloads.runner import start_locust, stop_locust
from workloads.settings import LoadSettings

console = Console(width=120)
LOCUSTFILE = Path(__file__).resolve().with_name("loadgen_locustfile.py")
GOAL = 6000.0
WARMUP = 3.0
_ITEM = b'{"Item":{"k":{"S":"r1"},"v":{"S":"bench-value"}}}'
_RESPONSE = canned(_ITEM)


# --- the trivial responder (python bench/loadgen.py responder PORT) ----------------------------


class _Later:
    """A transport whose writes leave after ``delay`` s times 0.5-1.5 (seeded)."""

    def __init__(self, transport: asyncio.Transport, delay: float, rng: random.Random) -> None:
        self.transport, self.delay, self.rng = transport, delay, rng

    def write(self, data: bytes) -> None:
        later = self.delay * self.rng.uniform(0.5, 1.5)
        asyncio.get_running_loop().call_later(later, self._write, data)

    def _write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)


class SlowResponder(CannedResponder):
    """The canned answer, ``delay`` s (0.5-1.5x) after each request (one at a time per
    connection, as Locust's users send them)."""

    def __init__(self, answer: bytes, delay: float, rng: random.Random) -> None:
        super().__init__(answer)
        self.delay, self.rng = delay, rng

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = _Later(self.transport, self.delay, self.rng)  # type: ignore[assignment]


async def _serve(port: int, seconds: float, delay: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(port)

    def protocol() -> CannedResponder:
        return SlowResponder(_RESPONSE, delay, rng) if delay > 0 else CannedResponder(_RESPONSE)

    server = await loop.create_server(protocol, "127.0.0.1", port, backlog=256)
    async with server:
        await asyncio.sleep(seconds)  # bounded: the bench stops it sooner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --- one Locust run ----------------------------------------------------------------------------


def run_locust(
    endpoints: tuple[str, ...], secret: str, workload: str, users: int, seconds: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        probe = run_dir / "probe.json"
        settings = LoadSettings(
            endpoints=endpoints,
            access_key="gameday",
            secret_key=secret,
            workload=workload,
            history_dir=run_dir,
            run_start=time.time(),
            wait=0.0,
        )
        os.environ.update(
            LOADGEN_PROBE=str(probe), LOADGEN_WARMUP=str(WARMUP), LOADGEN_MEASURE=str(seconds)
        )
        run_time = f"{int(WARMUP + seconds + 2)}s"
        with (run_dir / "locust.log").open("wb") as log:
            proc = start_locust(settings, users, users, run_time, log=log, locustfile=LOCUSTFILE)
            try:
                proc.wait(timeout=WARMUP + seconds + 60)
            except subprocess.TimeoutExpired:
                pass
            finally:
                stop_locust(proc)
        if not probe.exists():
            tail = (run_dir / "locust.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Locust wrote no measurement; its log ends:\n{tail}")
        result: dict[str, float] = json.loads(probe.read_text())
        parts = list(run_dir.glob("history-*.jsonl"))
        lines = sum(p.read_bytes().count(b"\n") for p in parts)
        result["history_lines"] = float(lines)
    return result


def add_row(table: Table, label: str, r: dict[str, float]) -> float:
    per_core = r["requests"] / r["cpu"] if r["cpu"] > 0 else float("nan")
    table.add_row(
        label,
        f"{r['requests'] / r['seconds']:,.0f}",
        f"{r['cpu'] / r['seconds'] * 100:.0f}%",
        f"{per_core:,.0f}",
        f"{per_core / GOAL:.2f}",
        f"{r['history_lines']:,.0f}",
    )
    return per_core


def bench_responder(args: argparse.Namespace, delay_ms: float = 0.0) -> dict[str, float]:
    port = _free_port()
    lifetime = str(WARMUP + args.seconds + 90)
    server = subprocess.Popen(
        [sys.executable, __file__, "responder", str(port), lifetime, str(delay_ms)],
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        late = f" answering after {delay_ms / 2:g}-{delay_ms * 1.5:g} ms" if delay_ms else ""
        console.print(f"Locust against the trivial responder{late} ...")
        return run_locust(
            (f"http://127.0.0.1:{port}",), "secret", args.workload, args.users, args.seconds
        )
    finally:
        server.terminate()
        server.wait(10)


def bench_cluster(args: argparse.Namespace) -> dict[str, float]:
    from chaos.backends.base import DEFAULT_ACCESS_KEY
    from chaos.backends.local import LocalCluster
    from workloads.catalog import workload as workload_spec
    from workloads.setup import ensure_table_async

    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster.create(Path(tmp) / "cluster", "3x2x1")
        cluster.die_with_this_process()  # a bench killed by any signal leaves no cluster behind
        console.print("starting a 3x2x1 cluster ...")
        cluster.up()
        try:
            secret = cluster.config.credentials[DEFAULT_ACCESS_KEY]
            endpoints = tuple(cluster.endpoints().values())
            table = workload_spec(args.workload).default_table
            asyncio.run(
                ensure_table_async(endpoints[0], DEFAULT_ACCESS_KEY, secret, table, args.workload)
            )
            console.print("Locust against the cluster ...")
            return run_locust(endpoints, secret, args.workload, args.users, args.seconds)
        finally:
            cluster.down()


def signing_rates(n: int = 20_000) -> tuple[float, float]:
    """Signatures per CPU-second: this project's signer and botocore's, on the same request."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from workloads.sigv4 import SigV4Signer

    body = b'{"TableName":"gameday-register","Key":{"k":{"S":"r12"}},"ConsistentRead":true}'
    signer = SigV4Signer("http://127.0.0.1:8000", "gameday", "secret")
    started = time.process_time()
    for _ in range(n):
        signer.headers("GetItem", body)
    ours = n / (time.process_time() - started)
    auth = SigV4Auth(Credentials("gameday", "secret"), "dynamodb", "us-east-1")
    started = time.process_time()
    for _ in range(n // 10):
        request = AWSRequest(
            method="POST",
            url="http://127.0.0.1:8000/",
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.GetItem",
            },
        )
        auth.add_auth(request)
    return ours, (n // 10) / (time.process_time() - started)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "responder":
        asyncio.run(_serve(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]) / 1000.0))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=32, help="Locust users (default 32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per target")
    parser.add_argument("--workload", default="register", help="gameday workload (register)")
    parser.add_argument(
        "--slow-ms",
        type=float,
        default=40.0,
        help="the slow responder answers after 0.5-1.5x this (default 40; 0: no such row)",
    )
    parser.add_argument("--skip-cluster", action="store_true", help="only the responder(s)")
    args = parser.parse_args()
    table = Table(
        title=f"Load generator: Locust, 1 process, {args.users} users, no think time, "
        f"history on, workload {args.workload}, {args.seconds:g} s measured"
    )
    for col in ("target", "req/s", "loadgen CPU", "req per CPU-s", "vs 6,000", "history lines"):
        table.add_column(col, justify="left" if col == "target" else "right")
    rows = [("trivial responder", bench_responder(args))]
    if args.slow_ms > 0:
        slow = f"responder, {args.slow_ms / 2:g}-{args.slow_ms * 1.5:g} ms"
        rows.append((slow, bench_responder(args, args.slow_ms)))
    if not args.skip_cluster:
        rows.append(("3x2x1 cluster, all routers", bench_cluster(args)))
    for label, result in rows:
        add_row(table, label, result)
    console.print(table)
    ours, botocore = signing_rates()
    console.print(
        f"signing alone, per CPU-second: workloads/sigv4.py {ours:,.0f}, botocore {botocore:,.0f} "
        f"({ours / botocore:.0f}x)"
    )
    console.print(f"load average: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
