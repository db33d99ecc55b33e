"""API benchmark: PutItem and GetItem (consistent and eventual) through one router and all.

Starts a full local cluster (3x2x1: 6 storage nodes, 3 MemDS, GAC, 3 routers), creates an
on-demand table, and measures each operation with concurrent clients side by side in one run:
throughput and p50/p99 latency as the client sees them (SigV4-signed HTTP on kept-alive
connections, bench/leanclient.py: the client shares the cores with the cluster, and aiohttp's
client cost about as much CPU per request as the router; --aiohttp-client sends with
workloads/client.py instead), and the CPU each operation cost the routers, the storage nodes,
the other cluster processes (MemDS and GAC) and this client: a busy machine lowers the rates,
not the CPU per operation.

    .venv/bin/python bench/api.py [--seconds 5] [--clients 32] [--profile DIR] [--aiohttp-client]
        [--mesh] [--busy N] [--rounds 4] [--no-paced-raw] [--partitions N]

Consistent and eventual GetItem are measured taking turns, ``--rounds`` slices of each (a
second or so), so that what else the machine does meanwhile falls on both alike (measured one
after the other, the second one met whatever came later); their rows add the slices up.

``--busy N`` makes the machine busy in a way that can be repeated: N processes that each burn
one core's worth of CPU (a plain Python loop, at the cluster's priority) run beside the cluster
for the whole run, raw replication row included, and the table's title says so. They stop when
the bench ends, however it ends (and by themselves after --busy-limit seconds, or when this
process is gone).

The table gets the cluster's default number of partitions (4, as a new on-demand DynamoDB table
sized for 4,000 writes/s) unless ``--partitions N``; the title says when it is not the default.
Each partition is a group of 3 replicas: with 4 on the 6 storage nodes, every node holds 2 and
takes part in half the writes, so fewer writes share each node's fsync, Raft Ready and message
than with one group on 3 nodes (the raw replication row's shape).

The cluster runs without the Toxiproxy mesh unless ``--mesh``: the mesh is the game days'
network-fault layer (every link through a proxy process), not part of the request path, and
the raw replication row has none either.

``--profile DIR`` records py-spy flame graphs (SVG) of the router rt-a and of one storage node
while each operation is measured through one router: ``DIR/<op>-rt-a.svg`` and
``DIR/<op>-sn-a1.svg`` (bench output, not for git; py-spy needs ptrace, i.e. root here).
The last lines print the issue #15 ratios of this one run: PutItem through one router against
raw replication (one group on 3 storage nodes written directly, as bench/replication.py does,
measured by this run first; --raw-writes N uses a given figure instead), and eventual against
consistent GetItem. Two information lines follow (they measure nothing the ratios use): the
CPU per PutItem of each process, and raw replication again, paced at the rate PutItem reached
(``--no-paced-raw`` skips it): a storage node's CPU per write follows the rate it is written at
(fewer writes per Raft Ready, fsync and message when slower), so that line tells what the
storage side of a PutItem costs against what any write costs at that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leanclient import LeanClient  # bench/leanclient.py, beside this script
from rich.console import Console
from rich.table import Table

from chaos.backends.base import DEFAULT_ACCESS_KEY, get_json
from chaos.backends.local import LocalCluster
from cluster.config import ClusterConfig
from tests.local_nodes import LocalNodes
from workloads.client import DynamoClient

Client = DynamoClient | LeanClient

console = Console(width=120)  # the table is wider than a pipe's default 80
TABLE = "bench"
CPU_KINDS = ("router", "storage", "other", "client")
KEYS = 1000
READS = ("GetItem (consistent)", "GetItem (eventual)")
DEFAULT_PARTITIONS: int = ClusterConfig.model_fields["default_partitions"].default


BURN = """
import os, sys, time
parent, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


@contextlib.contextmanager
def burners(count: int, limit: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` CPU-burning processes for the duration of the block (each stops by itself
    after ``limit`` seconds or when this process is gone, should the block not end them);
    the block gets them, to check that none stopped before it ended."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen([sys.executable, "-c", BURN, str(os.getpid()), str(limit)])
            )
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def request_for(op: str, i: int) -> tuple[str, dict[str, object]]:
    key = {"id": {"S": f"k{i % KEYS}"}}
    if op == "PutItem":
        return op, {"TableName": TABLE, "Item": {**key, "v": {"N": str(i)}}}
    consistent = op == "GetItem (consistent)"
    return "GetItem", {"TableName": TABLE, "Key": key, "ConsistentRead": consistent}


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds ``pid`` used so far (0.0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(cluster: LocalCluster | None) -> dict[str, float]:
    """CPU seconds so far of each cluster process, by its id."""
    if cluster is None:
        return {}
    return {p: cpu_seconds(cluster.procs.pid(p)) for p in cluster.config.processes}


async def measure(
    clients: list[Client],
    op: str,
    concurrency: int,
    seconds: float,
    cluster: LocalCluster | None = None,
) -> dict[str, float]:
    return summarize([await sample(clients, op, concurrency, seconds, cluster)])


async def sample(
    clients: list[Client],
    op: str,
    concurrency: int,
    seconds: float,
    cluster: LocalCluster | None = None,
) -> dict[str, Any]:
    """``op`` from ``concurrency`` workers for ``seconds``: latencies of the successes, errors,
    elapsed seconds and the CPU seconds spent by each kind of process meanwhile."""
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        client = clients[w % len(clients)]
        for i in range(10_000_000):  # bounded; the deadline ends it first
            if time.monotonic() >= end:
                return
            operation, params = request_for(op, w * 100_003 + i)
            started = time.monotonic()
            try:
                status, _ = await client.call(operation, params)
            except Exception:
                status = 0
            if status == 200:
                latencies.append(time.monotonic() - started)
            else:
                errors += 1

    procs0, client0 = process_cpu(cluster), time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - started
    procs1, client1 = process_cpu(cluster), time.process_time()
    spent = {p: procs1[p] - procs0[p] for p in procs0}
    cpu = {"router": 0.0, "storage": 0.0, "other": 0.0, "client": client1 - client0}
    for process, seconds in spent.items():
        role = cluster.config.processes[process].role if cluster is not None else ""
        cpu[role if role in ("router", "storage") else "other"] += seconds
    return {
        "latencies": latencies,
        "errors": errors,
        "elapsed": elapsed,
        "cpu": cpu,
        "processes": spent,
    }


def summarize(samples: list[dict[str, Any]]) -> dict[str, float]:
    """One table row from the samples of one operation (slices measured apart add up)."""
    latencies = [x for s in samples for x in s["latencies"]]
    ops = max(1, len(latencies))
    elapsed = sum(s["elapsed"] for s in samples)
    processes = {p for s in samples for p in s.get("processes", {})}
    return {
        **{f"{kind} CPU": sum(s["cpu"][kind] for s in samples) * 1000 / ops for kind in CPU_KINDS},
        **{
            f"process {p}": sum(s["processes"].get(p, 0.0) for s in samples) * 1000 / ops
            for p in processes
        },
        "ops/s": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": sum(s["errors"] for s in samples),
    }


BATCHING = ("fsyncs", "readies", "messages")


def storage_counters(cluster: LocalCluster) -> dict[str, int]:
    """Summed over the storage nodes so far: journal fsyncs, Raft Readies their I/O handled
    (readyio.py) and Raft messages they sent (the nodes' status, signed with the cluster key
    the backend installed); a node that does not answer counts 0."""
    totals = dict.fromkeys(BATCHING, 0)
    for process in cluster.config.processes.values():
        if process.role != "storage":
            continue
        status = get_json(f"http://{process.admin}/replicas", 2.0) or {}
        totals["fsyncs"] += int((status.get("journal") or {}).get("fsyncs", 0))
        totals["readies"] += int((status.get("ready_io") or {}).get("readies", 0))
        peers = (status.get("peers") or {}).values()
        totals["messages"] += sum(int(link.get("sent", 0)) for link in peers)
    return totals


def start_profiles(cluster: LocalCluster, out: Path, label: str, seconds: float) -> list[Any]:
    """py-spy on rt-a and sn-a1 for ``seconds``; the recorders end by themselves."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    procs = []
    out.mkdir(parents=True, exist_ok=True)
    for process in ("rt-a", "sn-a1"):
        pid = cluster.procs.pid(process)
        if pid is None:
            continue
        svg = out / f"{label}-{process}.svg"
        procs.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "100",
                    "--nonblocking",
                    "--output",
                    str(svg),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


async def run(
    cluster: LocalCluster,
    seconds: float,
    concurrency: int,
    profile: Path | None = None,
    aiohttp_client: bool = False,
    busy: int = 0,
    rounds: int = 4,
    partitions: int = DEFAULT_PARTITIONS,
) -> tuple[Table, dict[tuple[str, str], float], dict[str, float]]:
    secret = cluster.config.credentials[DEFAULT_ACCESS_KEY]
    endpoints = list(cluster.endpoints().values())
    table = Table(
        title=f"DynamoDB API on a local 3x2x1 cluster ({concurrency} concurrent clients, "
        f"{seconds:.0f} s each"
        + (f"; table partitions: {partitions}" if partitions != DEFAULT_PARTITIONS else "")
        + (f"; busy: {busy} CPU burners beside it)" if busy else ")")
    )
    columns = ("ops/s", "p50 ms", "p99 ms", "errors", *(f"{kind} CPU" for kind in CPU_KINDS))
    for col in ("operation", "routers", *columns):
        table.add_column(col, justify="left" if col in ("operation", "routers") else "right")
    kind = DynamoClient if aiohttp_client else LeanClient
    clients: list[Client] = [kind(url, DEFAULT_ACCESS_KEY, secret) for url in endpoints]
    rates: dict[tuple[str, str], float] = {}
    for c in clients:
        await c.__aenter__()
    try:
        status, body = await clients[0].call(
            "CreateTable",
            {
                "TableName": TABLE,
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            },
        )
        assert status == 200, body
        await asyncio.sleep(1.0)  # let every router's MemDS see the table
        await measure(clients, "PutItem", concurrency, 1.0)  # fill the keys, warm up
        pools = (("1 (rt-a)", clients[:1]), (f"all {len(clients)}", clients))
        rows: dict[tuple[str, str], dict[str, float]] = {}

        async def whole(op: str, label: str, pool: list[Client]) -> dict[str, float]:
            console.print(f"measuring {op} through {label} ...")
            spies: list[Any] = []
            if profile is not None and len(pool) == 1:
                name = op.replace(" ", "").replace("(", "-").replace(")", "")
                spies = start_profiles(cluster, profile, name, seconds)
            counted = op == "PutItem" and len(pool) == 1
            before = await asyncio.to_thread(storage_counters, cluster) if counted else {}
            got = await sample(pool, op, concurrency, seconds, cluster)
            row = summarize([got])
            if counted:  # information: how many PutItems share an fsync, a Ready, a message
                after = await asyncio.to_thread(storage_counters, cluster)
                ops = max(1, len(got["latencies"]))
                row.update({f"{k}/op": (after[k] - before[k]) / ops for k in BATCHING})
            for spy in spies:
                await asyncio.to_thread(spy.wait, 30)
            return row

        for label, pool in pools:
            rows[("PutItem", label)] = await whole("PutItem", label, pool)
        for label, pool in pools:
            if profile is not None or rounds <= 1:
                for op in READS:
                    rows[(op, label)] = await whole(op, label, pool)
                continue
            # The two kinds take turns in short slices, so that the machine's drift (other
            # processes, the cluster's own background work) falls on both alike.
            console.print(f"measuring {' and '.join(READS)} through {label}, {rounds} turns ...")
            samples: dict[str, list[dict[str, Any]]] = {op: [] for op in READS}
            for turn in range(rounds):
                # ABBA: each kind goes first every other turn, so whatever the first leaves
                # behind (warm caches, background work) does not always fall on the second.
                for op in READS if turn % 2 == 0 else READS[::-1]:
                    got = await sample(pool, op, concurrency, seconds / rounds, cluster)
                    samples[op].append(got)
            for op in READS:
                rows[(op, label)] = summarize(samples[op])
        for op in ("PutItem", *READS):
            for label, _ in pools:
                row = rows[(op, label)]
                rates[(op, label)] = row["ops/s"]
                table.add_row(
                    op,
                    label,
                    f"{row['ops/s']:.0f}",
                    f"{row['p50']:.1f}",
                    f"{row['p99']:.1f}",
                    f"{row['errors']:.0f}",
                    *(f"{row[f'{kind} CPU']:.2f}" for kind in CPU_KINDS),
                )
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
    return table, rates, rows[("PutItem", "1 (rt-a)")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--profile", type=Path, help="write py-spy flame graphs here")
    parser.add_argument("--mesh", action="store_true", help="links through Toxiproxy proxies")
    parser.add_argument(
        "--aiohttp-client",
        action="store_true",
        help="send with workloads/client.py (aiohttp) instead of bench/leanclient.py",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="consistent and eventual GetItem take turns in this many slices (1: one each)",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="run N CPU-burning processes beside the cluster (a busy machine)",
    )
    parser.add_argument(
        "--busy-limit",
        type=float,
        help="seconds after which the burners stop by themselves, should this bench not stop "
        "them (default 20 x --seconds + 600, longer than the run)",
    )
    parser.add_argument(
        "--raw-writes",
        type=float,
        help="raw 1-group replication writes/s (bench/replication.py) for the PutItem ratio",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions of the bench table (default {DEFAULT_PARTITIONS}, the cluster's)",
    )
    parser.add_argument(
        "--no-paced-raw",
        dest="paced_raw",
        action="store_false",
        help="skip the information line: raw replication paced at PutItem's rate",
    )
    args = parser.parse_args()
    limit = args.busy_limit if args.busy_limit is not None else 20 * args.seconds + 600
    with burners(args.busy, limit) as procs:
        if args.busy:
            console.print(f"busy machine: {args.busy} CPU-burning processes beside the cluster")
        bench(args)
        stopped = sum(proc.poll() is not None for proc in procs)
    if stopped:  # the title said "busy": rows measured after they stopped were not
        console.print(
            f"[red]{stopped} of the {args.busy} CPU burners stopped before the run ended "
            "(--busy-limit): the last rows measured a quieter machine than the title says[/]"
        )
        sys.exit(1)


def raw_replication(clients: int, seconds: float, rate: float | None = None) -> dict[str, float]:
    """bench/replication.py's one-group row: writes straight to a group on 3 storage nodes,
    ``clients`` writers, each sending its next at once (or paced to ``rate`` writes/s in all)."""
    from replication import throughput  # bench/replication.py, beside this script

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalNodes(Path(tmp), {"p0": ("n1", "n2", "n3")}) as nodes,
    ):
        return asyncio.run(throughput(nodes, ["p0"], clients, seconds, rate))


def bench(args: argparse.Namespace) -> None:
    raw = args.raw_writes
    raw_cpu = raw_fsyncs = raw_msgs = float("nan")
    if raw is None:
        console.print("measuring raw replication (1 group, 3 storage nodes) ...")
        row = raw_replication(args.clients, args.seconds)
        raw, raw_cpu = row["writes/s"], row["CPU ms/write"]
        raw_fsyncs, raw_msgs = row["fsyncs/write"], row["msgs/write"]
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster.create(
            Path(tmp) / "cluster", "3x2x1", partitions=args.partitions, mesh=args.mesh
        )
        cluster.die_with_this_process()  # a bench killed by any signal leaves no cluster behind
        console.print("starting a 3x2x1 cluster ...")
        cluster.up()
        try:
            table, rates, put_row = asyncio.run(
                run(
                    cluster,
                    args.seconds,
                    args.clients,
                    args.profile,
                    args.aiohttp_client,
                    args.busy,
                    args.rounds,
                    args.partitions,
                )
            )
        finally:
            cluster.down()
    paced = None
    if args.paced_raw:
        console.print("measuring raw replication paced at PutItem's rate (information) ...")
        paced = raw_replication(args.clients, args.seconds, rates[("PutItem", "1 (rt-a)")])
    console.print(table)
    console.print(
        "CPU columns: milliseconds of CPU per operation, summed over the processes (client: "
        "this bench's own, signing and HTTP)"
    )
    for label in sorted({label for _, label in rates}):
        eventual = rates[("GetItem (eventual)", label)]
        consistent = rates[("GetItem (consistent)", label)]
        console.print(
            f"through {label}: eventual / consistent GetItem = {eventual / consistent:.2f} "
            "(goal >= 1)"
        )
    put = rates[("PutItem", "1 (rt-a)")]
    console.print(
        f"PutItem through one router / raw replication = {put:.0f} / {raw:.0f} "
        f"= {put / raw:.0%} (goal >= 50%)"
    )
    by_process = sorted(
        ((k.removeprefix("process "), v) for k, v in put_row.items() if k.startswith("process ")),
        key=lambda kv: -kv[1],
    )
    console.print(
        "information: PutItem through rt-a, CPU ms per PutItem by process: "
        + ", ".join(f"{p} {v:.2f}" for p, v in by_process if v >= 0.005),
        soft_wrap=True,  # one line, for grep
    )
    console.print(
        f"information: PutItem through rt-a, per PutItem over the 6 storage nodes: "
        f"{put_row['fsyncs/op']:.2f} fsyncs, {put_row['readies/op']:.2f} Raft Readies, "
        f"{put_row['messages/op']:.2f} Raft messages (raw, unpaced: {raw_fsyncs:.2f} fsyncs and "
        f"{raw_msgs:.2f} messages per write over its 3 nodes): the fewer PutItems share them, "
        "the more storage CPU each costs",
        soft_wrap=True,
    )
    if paced is not None:
        console.print(
            f"information: raw replication paced at PutItem's rate ({paced['writes/s']:.0f} "
            f"writes/s, 1 group): CPU {paced['CPU ms/write']:.2f} ms/write, "
            f"{paced['fsyncs/write']:.2f} fsyncs and {paced['msgs/write']:.1f} Raft messages "
            f"per write (unpaced: CPU {raw_cpu:.2f} ms/write): storage CPU per write "
            "follows the rate (batching), whatever the API does",
            soft_wrap=True,
        )
    busy = f", with {args.busy} CPU burners of this bench" if args.busy else ""
    console.print(f"load average: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores{busy}")


if __name__ == "__main__":
    main()
