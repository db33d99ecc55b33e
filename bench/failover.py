"""Failover benchmark: how long clients cannot write or read consistently when a leader fails.

Starts a whole local cluster (3 AZs x 2 storage nodes, routers, MemDS, every link through the
Toxiproxy mesh), creates a one-partition table and keeps boto3 clients writing (PutItem) and
reading (GetItem, ConsistentRead) through a router outside the fault's AZ. Then, one fault at a
time, each ``--trials`` times, against the partition's current leader:

  leader SIGKILL    the leader's process is killed (connections refused at once)
  leader SIGSTOP    the leader is frozen: it accepts connections but never answers
  leader isolation  every link to and from the leader is cut in the mesh (data swallowed)
  AZ power-off      every process in the leader's AZ is killed
  AZ split          every link between the leader's AZ and the other two is cut

A trial's unavailability is, per operation kind, the outage the clients saw: the longest
stretch without a success, from the last success before the fault up to the first success of
an operation that started once the fault was fully in place (clients do not retry inside
boto3 here; each attempt is one request, and a failed one is retried at once). Injecting a
fault through Toxiproxy's API can take a while on a busy machine; measuring between successes
keeps that out, while the time from the start of the injection is printed for each trial too.
The median and worst of the trials are printed side by side for every fault, against the goal
(p50 <= 1.0 s, worst <= 1.5 s). Healing is off (it would move replicas while we measure);
between trials the fault is healed and the group waits until all three replicas caught up.

    .venv/bin/python bench/failover.py [--trials 10] [--faults sigkill,sigstop,...]

Everything it starts is stopped on success, failure, Ctrl-C and SIGTERM, and by a watchdog
(chaos/deadman.py) if it is killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from botocore.config import Config
from rich.console import Console
from rich.table import Table

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster
from chaos.deadman import Guard

console = Console()
TABLE = "failover"
GROUP = f"{TABLE}.p0"
REGION = "us-east-1"
GOAL_P50, GOAL_WORST = 1.0, 1.5
GIVE_UP = 15.0  # a trial that has not recovered by then counts as this long (and says so)
FAULTS = ("sigkill", "sigstop", "isolate", "az-power-off", "az-split")
TITLES = {
    "sigkill": "leader SIGKILL",
    "sigstop": "leader SIGSTOP",
    "isolate": "leader isolation",
    "az-power-off": "AZ power-off",
    "az-split": "AZ split",
}


# --- clients -------------------------------------------------------------------------------


@dataclass
class Op:
    kind: str  # "write" or "read"
    started: float
    ended: float
    ok: bool


@dataclass
class Load:
    """boto3 clients writing and reading through one router, in threads, until stopped."""

    cluster: LocalCluster
    threads_per_kind: int = 3
    pause: float = 0.02
    ops: list[Op] = field(default_factory=list)
    router: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, router: str) -> Any:
        return boto3.client(
            "dynamodb",
            endpoint_url=self.cluster.endpoints()[router],
            region_name=REGION,
            aws_access_key_id=DEFAULT_ACCESS_KEY,
            aws_secret_access_key=self.cluster.config.credentials[DEFAULT_ACCESS_KEY],
            config=Config(
                retries={"total_max_attempts": 1},  # each attempt is measured on its own
                connect_timeout=1.0,
                read_timeout=3.0,
            ),
        )

    def start(self, router: str) -> None:
        self.router = router
        self.ops = []
        self._stop.clear()
        for kind in ("write", "read"):
            for n in range(self.threads_per_kind):
                thread = threading.Thread(target=self._run, args=(kind, n), daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10.0)
        self._threads.clear()

    def _run(self, kind: str, n: int) -> None:
        client = self.client(self.router)
        for i in range(10**9):  # bounded; stop() ends it first
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                if kind == "write":
                    item = {"id": {"S": f"w{n}-{i % 200}"}, "v": {"N": str(i)}}
                    client.put_item(TableName=TABLE, Item=item)
                else:
                    key = {"id": {"S": f"w{n}-{i % 50}"}}
                    client.get_item(TableName=TABLE, Key=key, ConsistentRead=True)
                ok = True
            except Exception:  # any failure is unavailability, whatever its kind
                ok = False
            with self._lock:
                self.ops.append(Op(kind, started, time.monotonic(), ok))
            self._stop.wait(self.pause)

    def all_ok_since(self, since: float) -> bool:
        """Writes and reads started since ``since``, and every one of them succeeded."""
        with self._lock:
            recent = [o for o in self.ops if o.started >= since]
        return {o.kind for o in recent} == {"write", "read"} and all(o.ok for o in recent)

    def outage(self, kind: str, injected: float, in_place: float) -> float | None:
        """The longest stretch without a ``kind`` success the clients saw: successes from the
        last one before the injection up to the first one of an op started once the fault
        was in place, and the longest gap between consecutive ones."""
        back = self.recovered(kind, in_place)
        if back is None:
            return None
        with self._lock:
            ends = sorted(o.ended for o in self.ops if o.kind == kind and o.ok and o.ended <= back)
        before = [e for e in ends if e < injected]
        if not before:
            return None
        seq = [before[-1], *(e for e in ends if e >= injected)]
        return max(b - a for a, b in itertools.pairwise(seq))

    def recovered(self, kind: str, since: float) -> float | None:
        """End of the first successful ``kind`` op that started at or after ``since``."""
        with self._lock:
            ends = [o.ended for o in self.ops if o.kind == kind and o.ok and o.started >= since]
        return min(ends) if ends else None


# --- the cluster ---------------------------------------------------------------------------


def replicas(cluster: LocalCluster, exclude: str | None = None) -> dict[str, dict[str, Any]]:
    """Node -> the status of its replica of GROUP (nodes that do not answer are left out)."""
    found = {}
    for node in cluster.process_ids("storage"):
        if node == exclude:
            continue
        status = cluster.storage_status(node) if cluster.alive(node) else None
        for r in (status or {}).get("replicas", []):
            if r["group"] == GROUP:
                found[node] = r
    return found


def leader(cluster: LocalCluster, exclude: str | None = None) -> str | None:
    reps = replicas(cluster, exclude)
    leaders = [n for n, r in reps.items() if r["role"] == "leader"]
    return max(leaders, key=lambda n: reps[n]["term"]) if leaders else None


def wait_settled(cluster: LocalCluster, timeout: float = 60.0) -> str:
    """Every process healthy, GROUP led, its members caught up; returns the leader."""
    cluster.wait_healthy(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reps = replicas(cluster)
        lead = leader(cluster)
        if lead is not None and len(reps) == 3:
            commit = reps[lead]["commit"]
            if all(commit - r["applied"] <= 2 for r in reps.values()):
                return lead
        time.sleep(0.1)
    raise TimeoutError(f"{GROUP} did not settle in {timeout:.0f}s: {replicas(cluster)}")


def az_of(cluster: LocalCluster, process: str) -> str:
    return cluster.config.process(process).az


def in_az(cluster: LocalCluster, az: str) -> list[str]:
    return [p for p in cluster.process_ids() if az_of(cluster, p) == az]


def router_outside(cluster: LocalCluster, az: str) -> str:
    return next(r for r in cluster.process_ids("router") if az_of(cluster, r) != az)


def fault(cluster: LocalCluster, kind: str, target: str) -> Callable[[], None]:
    """Inject ``kind`` at ``target`` (the leader); returns how to heal it."""
    fault_id = f"bench-{uuid.uuid4().hex[:8]}"
    pairs = list(cluster.links())
    if kind == "sigkill":
        cluster.kill(target)
        return lambda: cluster.start(target)
    if kind == "sigstop":
        cluster.pause(target)
        return lambda: cluster.resume(target)
    if kind == "isolate":
        cut = [p for p in pairs if target in p]
    elif kind == "az-split":
        az = az_of(cluster, target)
        cut = [(a, b) for a, b in pairs if (az_of(cluster, a) == az) != (az_of(cluster, b) == az)]
    elif kind == "az-power-off":
        # The leader first: the others follow while the election already runs.
        victims = sorted(in_az(cluster, az_of(cluster, target)), key=lambda p: p != target)
        for process in victims:
            cluster.kill(process)

        def power_on() -> None:
            for process in victims:
                cluster.start(process)

        return power_on
    else:
        raise ValueError(f"unknown fault {kind!r}")
    # The leader's links to the other storage nodes first (they decide the election), then the
    # rest; each is a Toxiproxy API call, slow on a busy machine.
    storage = set(cluster.process_ids("storage"))
    first = [p for p in cut if target in p and set(p) <= storage]
    cluster.cut_links(first, fault_id=fault_id)
    cluster.cut_links([p for p in cut if p not in first], fault_id=fault_id)
    return lambda: cluster.remove_link_faults(cut, fault_id=fault_id)


def wait_steady(load: Load, timeout: float = 60.0) -> None:
    """Until writes and reads have both succeeded for a whole second (a restarted router or
    MemDS may take a moment to serve again)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if load.all_ok_since(time.monotonic() - 1.0):
            return
    raise TimeoutError(f"no steady state through {load.router} within {timeout:.0f} s")


@dataclass
class Trial:
    fault: str
    leader: str
    write: float
    read: float
    new_leader: str | None
    elected: float | None  # when a new leader was first seen (polled: an upper bound)
    injecting: float  # how long injecting the fault took
    write_since_injection: float  # from the start of the injection to the first success
    read_since_injection: float


def run_trial(cluster: LocalCluster, load: Load, kind: str) -> Trial:
    target = wait_settled(cluster)
    load.start(router_outside(cluster, az_of(cluster, target)))
    try:
        wait_steady(load)
        injected = time.monotonic()
        heal = fault(cluster, kind, target)
        # Only operations that started once the fault was fully in place count as recovery;
        # the window is still measured from the start of the injection (never kinder).
        in_place = time.monotonic()
        try:
            results: dict[str, float] = {}
            elected: float | None = None
            new_leader = None
            while len(results) < 2 and time.monotonic() - injected < GIVE_UP:
                time.sleep(0.05)
                if elected is None:
                    new_leader = leader(cluster, exclude=target)
                    if new_leader is not None:
                        elected = time.monotonic() - injected
                for op in ("write", "read"):
                    end = load.recovered(op, in_place)
                    if op not in results and end is not None:
                        results[op] = end - injected
        finally:
            heal()
    finally:
        load.stop()
    gaps = {op: load.outage(op, injected, in_place) for op in ("write", "read")}
    return Trial(
        kind,
        target,
        gaps["write"] if "write" in results and gaps["write"] is not None else GIVE_UP,
        gaps["read"] if "read" in results and gaps["read"] is not None else GIVE_UP,
        new_leader,
        elected,
        in_place - injected,
        results.get("write", GIVE_UP),
        results.get("read", GIVE_UP),
    )


# --- the run -------------------------------------------------------------------------------


@contextmanager
def local_cluster(data_dir: Path) -> Iterator[LocalCluster]:
    """A 3x2x1 cluster with the mesh and one partition per table, torn down whatever happens."""
    os.environ["GAMEDAY_HEALING"] = "off"  # nodes inherit it: no replica moves mid-measure
    cluster = LocalCluster.create(data_dir / "cluster", "3x2x1", partitions=1)
    cluster.die_with_this_process()  # a bench killed by any signal leaves no cluster behind
    guard = Guard.spawn(
        data_dir / "guard.json",
        data_dir / "guardian.log",
        backend="local",
        data_dir=str(data_dir / "cluster"),
        teardown=True,
    )

    def stop(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        cluster.up(timeout=180)
        yield cluster
    finally:
        signal.signal(signal.SIGTERM, previous)
        cluster.heal_network()
        cluster.down(wipe=True)
        guard.finish()


def create_table(cluster: LocalCluster, load: Load) -> None:
    client = load.client(cluster.process_ids("router")[0])
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for _ in range(600):
        status = client.describe_table(TableName=TABLE)["Table"]["TableStatus"]
        if status == "ACTIVE":
            return
        time.sleep(0.1)
    raise TimeoutError(f"table {TABLE} not active after 60 s")


def seconds(value: float) -> str:
    return f">{GIVE_UP:.0f} s" if value >= GIVE_UP else f"{value:.2f} s"


def report(trials: list[Trial], faults: list[str], load_before: float) -> bool:
    table = Table(title="failover: client-visible unavailability (last success -> next success)")
    table.add_column("fault")
    table.add_column("n", justify="right")
    for kind in ("write", "consistent read"):
        table.add_column(f"{kind} p50", justify="right")
        table.add_column(f"{kind} worst", justify="right")
    table.add_column(f"goal (p50 <= {GOAL_P50} s, worst <= {GOAL_WORST} s)")
    met = True
    for kind in faults:
        mine = [t for t in trials if t.fault == kind]
        if not mine:
            continue
        cells, ok = [], True
        for values in ([t.write for t in mine], [t.read for t in mine]):
            p50, worst = statistics.median(values), max(values)
            ok = ok and p50 <= GOAL_P50 and worst <= GOAL_WORST
            cells += [seconds(p50), seconds(worst)]
        met = met and ok
        verdict = "[green]met[/green]" if ok else "[red]missed[/red]"
        table.add_row(TITLES[kind], str(len(mine)), *cells, verdict)
    console.print(table)
    load_after = os.getloadavg()[0]
    console.print(
        f"load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} "
        "CPUs: timings on a shared, busy machine are upper bounds."
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per fault (default 10)")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}"
    )
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        parser.error(f"--faults: unknown {unknown}; choose from {','.join(FAULTS)}")
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    load_before = os.getloadavg()[0]
    trials: list[Trial] = []
    console.print("starting a 3x2x1 cluster with the Toxiproxy mesh ...")
    with (
        tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp,
        local_cluster(Path(tmp)) as cluster,
    ):
        load = Load(cluster)
        create_table(cluster, load)
        total = len(faults) * args.trials
        for kind in faults:
            for n in range(args.trials):
                trial = run_trial(cluster, load, kind)
                trials.append(trial)
                console.print(
                    f"[{len(trials)}/{total}] {TITLES[kind]} #{n + 1} at {trial.leader}: "
                    f"outage write {seconds(trial.write)}, read {seconds(trial.read)}; from "
                    f"injection start write {seconds(trial.write_since_injection)}, read "
                    f"{seconds(trial.read_since_injection)} (injecting took "
                    f"{trial.injecting:.2f} s; {trial.new_leader} seen leading at "
                    f"{'-' if trial.elected is None else seconds(trial.elected)})"
                )
    met = report(trials, faults, load_before)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
