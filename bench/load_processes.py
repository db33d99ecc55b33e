"""How the load generator scales with Locust's --processes: 1 worker vs 2, side by side.

The register workload (SigV4-signed DynamoDB JSON, every op recorded to the history, closed
loop with no think time) runs against a trivial responder on loopback that answers every
request with ``{}`` at once, so what is measured is the load generator itself. Each setting
runs as `gameday load` runs Locust (workloads/runner.py: master + N local workers), for the
same time and users; throughput is the ops completed in the merged history over the run.

    .venv/bin/python bench/load_processes.py [--seconds 20] [--users 32] [--responders 2]

Goal (issue #18): 2 processes at least 1.6x the ops/s of one. The responder runs in processes
of its own (SO_REUSEPORT), so on a small machine the generator and the responder share cores;
the table prints the machine's load average so a busy machine's figures can be told apart.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

from canned_http import CannedResponder, canned  # bench/canned_http.py
from rich.console import Console
from rich.table import Table

from workloads.history import merge_histories, read_ops
from workloads.runner import start_locust, stop_locust
from workloads.settings import LoadSettings

ANSWER = canned(b"{}")


def _serve(port: int) -> None:
    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        server = await asyncio.get_running_loop().create_server(
            lambda: CannedResponder(ANSWER), sock=sock
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WARMUP_S = 3.0


def measure(endpoint: str, processes: int, users: int, seconds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gameday-bench-") as tmp:
        directory = Path(tmp)
        settings = LoadSettings(
            endpoints=(endpoint,),
            access_key="gameday",
            secret_key="bench-secret",
            workload="register",
            history_dir=directory,
            run_start=time.time(),
            wait=0.0,
        )
        with (directory / "locust.log").open("wb") as log:
            proc = start_locust(
                settings, users, float(users), f"{seconds}s", processes, directory / "l", log
            )
            try:
                proc.wait(seconds + 90)
            finally:
                stop_locust(proc)
        merged = merge_histories(directory)
        counts = Counter(op["type"] for op in read_ops(merged))
        times = sorted(float(op["time"]) for op in read_ops(merged) if op["type"] != "invoke")
        if len(times) < 2:
            return {"ops": len(times), "rate": 0.0, **counts}
        # steady state: from WARMUP s after the first completion (users spawned, workers
        # connected) to the last one
        start = times[0] + WARMUP_S
        steady = [t for t in times if t >= start]
        span = times[-1] - start
        rate = len(steady) / span if span > 0 else 0.0
        return {"ops": len(times), "rate": rate, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--responders", type=int, default=2, help="responder processes")
    parser.add_argument("--rounds", type=int, default=2, help="alternate 1 and 2 this often")
    args = parser.parse_args()
    console = Console()
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    servers = [
        ctx.Process(target=_serve, args=(port,), daemon=True) for _ in range(args.responders)
    ]
    for server in servers:
        server.start()
    time.sleep(1.0)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        results: dict[int, tuple[dict[str, float], float]] = {}
        for round_ in range(args.rounds):
            for processes in (1, 2):
                load = os.getloadavg()[0]
                console.print(
                    f"round {round_ + 1}, --processes {processes}: "
                    f"{args.users} users for {args.seconds}s ..."
                )
                r = measure(endpoint, processes, args.users, args.seconds)
                if processes not in results or r["rate"] > results[processes][0]["rate"]:
                    results[processes] = (r, load)  # the best round of each
    finally:
        for server in servers:
            server.terminate()
            server.join(5)
    title = f"load generator vs a trivial responder ({os.cpu_count()} cores, best of rounds)"
    table = Table(title=title)
    for col in ("processes", "ops", "ok", "info", "steady ops/s", "vs 1", "load avg before"):
        table.add_column(col, justify="right")
    base = results[1][0]["rate"] or 1.0
    for processes, (r, load) in results.items():
        table.add_row(
            str(processes),
            f"{r['ops']:.0f}",
            f"{r.get('ok', 0):.0f}",
            f"{r.get('info', 0):.0f}",
            f"{r['rate']:.0f}",
            f"{r['rate'] / base:.2f}x",
            f"{load:.1f}",
        )
    console.print(table)
    ratio = results[2][0]["rate"] / base
    verdict = "meets" if ratio >= 1.6 else "misses"
    console.print(f"2 processes / 1 = {ratio:.2f}x: {verdict} the goal (>= 1.6x)")


if __name__ == "__main__":
    main()
