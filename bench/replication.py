"""Replication benchmark: commit throughput and latency, and the write-unavailability window.

Starts real storage-node processes on loopback (3 nodes), then measures, side by side in one run:
  1. committed writes/s and p50/p99 commit latency with concurrent writers, one group;
  2. the same with many groups on the same 3 nodes;
  3. one group again at half the throughput of 1. (paced writers): the latency at that load;
  4. the write-unavailability window after SIGKILL of the leader (median and worst of N kills).

    .venv/bin/python bench/replication.py [--seconds 5] [--writers 32] [--groups 12] [--kills 10]

A write's latency is measured at the client from send to acknowledgement, i.e. after a quorum
fsynced it and the leader applied it; at half load (paced writers) from the instant it was due
to be sent, so that a stall also counts in the writes that queued behind it. "records/fsync" is
the nodes' journal at work (group commit: how many groups' WAL appends one fsync covered,
journal.py), "fsyncs/write" the journal fsyncs of all 3 nodes per acknowledged write,
"readies/trip" how many replicas' Readies one trip to a node's I/O thread handled
(readyio.py), "msgs/write" the Raft messages all 3 nodes sent each other per acknowledged write
(heartbeats included; like fsyncs/write it counts work, not time, so it holds on a busy
machine), and "CPU ms/write" the CPU time (user + system) of all 3 node processes per
acknowledged write: on a busy machine writes/s measures the machine, CPU per write still
mostly the code. "client ms/write" is this process's own CPU per write (the writers share the
2 cores with the nodes: a client that cost more per write at 12 groups would lower that row by
itself). The last lines print the issue #15 goals against this run's figures, the load
average (a busy machine measures itself, not the code), and for information what one fsync
costs this disk alone (a process appending 700 B + fdatasync 400 times/s with the nodes idle):
the floor under every commit (which waits for the leader's and a follower's, made in
parallel).

``--profile DIR`` records py-spy flame graphs of every node during each run (1g, 12g, 1g-paced),
of the thread holding the GIL (where the node's Python CPU time goes; threads waiting for an
fsync or a socket are left out): ``DIR/<setup>-<node>.svg``, and the same samples as collapsed
stacks (``.txt``, one ``frame;frame;... count`` line each, to grep or diff). Bench output, not
for git; py-spy needs ptrace (root here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from cluster.storage.client import GroupClient
from cluster.storage.commands import PutCommand, encode_command
from tests.local_nodes import LocalNodes

console = Console(width=150)  # the table stays whole when the output is a file


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def journal_totals(cluster: LocalNodes) -> tuple[int, int, int, int, int]:
    """(fsyncs, records) of every node's journal so far, (trips, readies) of their I/O
    threads (readyio.py; 0 from a node without one), and the Raft messages they sent."""
    fsyncs = records = trips = readies = sent = 0
    for node in cluster.nodes:
        status = cluster.status(node)
        sent += sum(int(link.get("sent", 0)) for link in (status.get("peers") or {}).values())
        journal = status.get("journal") or {}
        fsyncs += int(journal.get("fsyncs", 0))
        records += int(journal.get("records", 0))
        io = status.get("ready_io") or {}
        trips += int(io.get("batches", 0))
        readies += int(io.get("readies", 0))
    return fsyncs, records, trips, readies, sent


IO_COUNTS = ("batches", "inline", "submits", "wakes")


def io_totals(cluster: LocalNodes) -> dict[str, int]:
    """Every node's I/O hand-off counters (readyio.py's stats) summed: trips (batches), trips
    the event loop ran itself (inline), jobs handed to the I/O thread (submits: thread
    wake-ups at most) and its hand-backs to the loop (wakes); 0 where a node has none."""
    totals = dict.fromkeys(IO_COUNTS, 0)
    for node in cluster.nodes:
        io = cluster.status(node).get("ready_io") or {}
        for key in IO_COUNTS:
            totals[key] += int(io.get(key, 0))
    return totals


def nodes_cpu(cluster: LocalNodes) -> float:
    """CPU seconds the node processes used so far (user + system, from /proc)."""
    total = 0
    for process in cluster.nodes.values():
        if process.proc is not None:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{process.proc.pid}/stat").read_text().rpartition(")")[2]
                total += sum(int(f) for f in fields.split()[11:13])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def start_profiles(cluster: LocalNodes, out: Path, label: str, seconds: float) -> list[Any]:
    """py-spy on every node for ``seconds`` (an SVG and collapsed stacks each); the recorders
    end by themselves."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for node, process in cluster.nodes.items():
        if process.proc is None:
            continue
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
            args = ["record", "--pid", str(process.proc.pid), "--duration", str(int(seconds))]
            args += ["--rate", "100", "--nonblocking", "--gil", "--format", fmt]
            args += ["--output", str(out / f"{label}-{node}.{suffix}")]
            procs.append(
                subprocess.Popen([spy, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
    return procs


async def throughput(
    cluster: LocalNodes,
    groups: list[str],
    writers: int,
    seconds: float,
    rate: float | None = None,
    profile: Path | None = None,
) -> dict[str, float]:
    """Writes from ``writers`` concurrent clients for ``seconds``; with ``rate`` (writes/s in
    all) each writer is paced to its share, else each sends its next write at once. With
    ``profile``, py-spy records every node meanwhile (``start_profiles``)."""
    writer = GroupClient(cluster.addresses())
    for g in groups:
        cluster.wait_leader(g, timeout=60)
    label = f"{len(groups)}g" + ("-paced" if rate else "")
    spies = [] if profile is None else start_profiles(cluster, profile, label, seconds)
    latencies: list[float] = []
    failures = 0
    fsyncs0, records0, trips0, readies0, sent0 = journal_totals(cluster)
    io0 = io_totals(cluster)
    cpu0 = nodes_cpu(cluster)
    client0 = time.process_time()
    start = time.monotonic()
    end = start + seconds
    interval = writers / rate if rate else 0.0

    async def one(worker: int) -> None:
        nonlocal failures
        for i in range(1_000_000):  # bounded; the deadline ends it first
            due = 0.0
            if interval:
                due = start + (i + worker / writers) * interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() >= end:
                return
            group = groups[(worker + i) % len(groups)]
            cmd = encode_command(
                PutCommand("bench", f"w{worker}-{i}".encode(), b"", {"v": {"N": str(i)}})
            )
            # Paced: from the instant the write was due, not when this writer got to send it
            # (a writer still waiting for a stalled write sends late; its users would not have
            # waited to ask): a stall shows in every write it delays (no coordinated omission).
            started = due if interval else time.monotonic()
            reply = await writer.call_leader(group, "propose", deadline=5.0, cmd=cmd, timeout=5.0)
            if "result" in reply:
                latencies.append(time.monotonic() - started)
            else:
                failures += 1

    started = time.monotonic()
    await asyncio.gather(*(one(w) for w in range(writers)))
    elapsed = time.monotonic() - started
    await writer.close()
    for spy in spies:
        await asyncio.to_thread(spy.wait)
    cpu1 = nodes_cpu(cluster)
    client1 = time.process_time()
    fsyncs1, records1, trips1, readies1, sent1 = journal_totals(cluster)
    io1 = io_totals(cluster)
    per_write = {f"io {k}/write": (io1[k] - io0[k]) / max(1, len(latencies)) for k in IO_COUNTS}
    return {
        **per_write,
        "writes/s": len(latencies) / elapsed,
        "p50 ms": percentile(latencies, 50) * 1000,
        "p99 ms": percentile(latencies, 99) * 1000,
        "failed": failures,
        "records/fsync": (records1 - records0) / max(1, fsyncs1 - fsyncs0),
        "fsyncs/write": (fsyncs1 - fsyncs0) / max(1, len(latencies)),
        "readies/trip": (readies1 - readies0) / max(1, trips1 - trips0),
        "msgs/write": (sent1 - sent0) / max(1, len(latencies)),
        "CPU ms/write": (cpu1 - cpu0) * 1000 / max(1, len(latencies)),
        "client ms/write": (client1 - client0) * 1000 / max(1, len(latencies)),
    }


# What one fsync costs this disk, alone: a journal-sized append (700 B) and fdatasync, paced,
# in a process of its own (no GIL to wait for), with the nodes idle. A floor for the nodes'
# commit latency, printed for information beside the half-load goal.
FSYNC_PROBE = """
import os, sys, time
path, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
lat, start, i = [], time.monotonic(), 0
while (due := start + i / rate) < start + seconds:
    time.sleep(max(0.0, due - time.monotonic()))
    i += 1
    os.write(fd, b"x" * 700)
    t = time.monotonic()
    os.fdatasync(fd)
    lat.append(time.monotonic() - t)
os.close(fd)
os.unlink(path)
lat.sort()
print(lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000)
"""


async def fsync_floor(
    directory: Path, seconds: float = 3.0, rate: float = 400
) -> tuple[float, float]:
    """(p50, p99) ms of FSYNC_PROBE in ``directory``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FSYNC_PROBE, str(directory / "fsync-probe"), str(seconds), str(rate),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    p50, p99 = (float(v) for v in out.split())
    return p50, p99


async def failover(cluster: LocalNodes, kills: int) -> list[float]:
    """Kill the leader of p0 under a steady write loop; measure kill -> next acknowledged write."""
    windows: list[float] = []
    for n in range(kills):
        writer = GroupClient(cluster.addresses())
        leader = cluster.wait_leader("p0", timeout=60)
        killed_at: float | None = None
        window: float | None = None
        for i in range(100_000):  # bounded write loop
            cmd = encode_command(PutCommand("bench", f"f{n}-{i}".encode(), b"", {"v": {"N": "1"}}))
            reply = await writer.call_leader("p0", "propose", deadline=10.0, cmd=cmd, timeout=1.0)
            if killed_at is not None and "result" in reply:
                window = time.monotonic() - killed_at
                break
            if killed_at is None and i == 20:
                cluster.kill(leader)
                killed_at = time.monotonic()
        await writer.close()
        assert window is not None, "writes never resumed"
        windows.append(window)
        console.print(
            f"  kill {n + 1}/{kills}: leader {leader} -> "
            f"writes resumed after {window * 1000:.0f} ms"
        )
        cluster.start(leader)
        cluster.wait_healthy()
    return windows


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--profile", type=Path, help="write py-spy flame graphs here")
    args = parser.parse_args()

    many = [f"p{i}" for i in range(args.groups)]
    table = Table(
        title=f"Replication on 3 local nodes ({args.writers} concurrent writers, "
        f"{args.seconds:.0f} s each)"
    )
    cols = ["writes/s", "p50 ms", "p99 ms", "failed", "records/fsync", "fsyncs/write"]
    cols += ["readies/trip", "msgs/write", "CPU ms/write", "client ms/write"]
    for col in ("setup", *cols):
        table.add_column(col, justify="right" if col != "setup" else "left")
    with tempfile.TemporaryDirectory() as tmp:
        groups: dict[str, tuple[str, ...]] = {g: ("n1", "n2", "n3") for g in many}
        with LocalNodes(Path(tmp), groups) as cluster:
            console.print("measuring one group ...")
            one = await throughput(
                cluster, ["p0"], args.writers, args.seconds, profile=args.profile
            )
            console.print(f"measuring {args.groups} groups ...")
            spread = await throughput(
                cluster, many, args.writers, args.seconds, profile=args.profile
            )
            half_rate = one["writes/s"] / 2
            console.print(f"measuring one group at half load ({half_rate:.0f} writes/s) ...")
            half = await throughput(
                cluster, ["p0"], args.writers, args.seconds, half_rate, args.profile
            )
            console.print(f"killing the leader {args.kills} times ...")
            windows = await failover(cluster, args.kills)
            disk = await fsync_floor(Path(tmp))
    rows = (
        ("1 group", one),
        (f"{args.groups} groups", spread),
        ("1 group, half load", half),
    )
    for name, row in rows:
        table.add_row(
            name,
            f"{row['writes/s']:.0f}",
            f"{row['p50 ms']:.1f}",
            f"{row['p99 ms']:.1f}",
            f"{row['failed']:.0f}",
            f"{row['records/fsync']:.1f}",
            f"{row['fsyncs/write']:.2f}",
            f"{row['readies/trip']:.1f}",
            f"{row['msgs/write']:.1f}",
            f"{row['CPU ms/write']:.2f}",
            f"{row['client ms/write']:.2f}",
        )
    console.print(table)
    for name, row in rows:
        counts = ", ".join(f"{k} {row[f'io {k}/write']:.2f}" for k in IO_COUNTS)
        console.print(f"for information, I/O hand-offs per write of 3 nodes, {name}: {counts}")
    fo = Table(title=f"Write unavailability after SIGKILL of the leader ({len(windows)} kills)")
    for col in ("median ms", "worst ms", "best ms"):
        fo.add_column(col, justify="right")
    fo.add_row(
        *(f"{v * 1000:.0f}" for v in (statistics.median(windows), max(windows), min(windows)))
    )
    console.print(fo)
    median = statistics.median(windows)
    goals = [
        (f"{args.groups} groups / 1 group writes/s", spread["writes/s"] / one["writes/s"], ">= 1"),
        ("1 group writes/s", one["writes/s"], ">= 3000"),
        ("1 group p99 ms at half load (from when due)", half["p99 ms"], "<= 10"),
        ("failover median ms", median * 1000, "<= 500"),
    ]
    for name, value, goal in goals:
        console.print(f"{name}: {value:.2f} (goal {goal})")
    console.print(
        f"for information: this disk's fsync alone (700 B append + fdatasync, 400/s, own "
        f"process, nodes idle): p50 {disk[0]:.2f} ms, p99 {disk[1]:.2f} ms"
    )
    console.print(f"load average: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")


if __name__ == "__main__":
    asyncio.run(main())
