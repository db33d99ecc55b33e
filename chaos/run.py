"""`gameday run SCENARIO`: one whole game day, from cluster to verdict.

Brings the cluster up (or uses the running one), starts the workload (Locust, recording the
history) and the per-AZ canaries, executes the fault timeline under the orchestrator (which
always heals), then takes final consistent reads and replica digests, runs every checker on
the run directory, writes the reports, and tears down what it started. A live view shows the
elapsed time, the active faults and what the canaries see.

    code = asyncio.run(run_game_day(Path("scenarios/demo.yaml"), RunOptions(), console))
    # 0: every check passed; 1: a check failed or could not decide; 2: infrastructure error;
    # 3: aborted (the plan did not fully execute: a stop condition, a lapsed lease, faults that
    # never ran); 130 / 143: interrupted by SIGINT / SIGTERM (healed, reported, torn down)

The workload stops when the timeline ends, before the run's end heals the faults still active
(a write after power-on could hide a lost one from the final reads). SIGINT or SIGTERM stops the
run in order: the orchestrator stops injecting, the workload stops, the faults are healed, the
final reads and checks run and the reports are written (the verdict is aborted), the cluster
is torn down; a second signal skips straight to the teardown. A watchdog
process (chaos/deadman.py) heals and tears down everything the run started if it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from chaos.backends import create_cluster, open_cluster
from chaos.backends.base import DEFAULT_ACCESS_KEY, Backend
from chaos.backends.lifeline import tied_popen
from chaos.deadman import Guard, tear_down
from chaos.faults import BlastRadius, PowerLoss, fault_class
from chaos.orchestrator import Orchestrator, RunOutcome
from chaos.scenario import Scenario, load_scenario
from chaos.schedule import TimedFault, load_game_day, timeline_to_json
from checks.history import write_operations
from cluster import auth
from cluster.tasks import uninterrupted
from workloads import bank
from workloads.canary import run_canaries
from workloads.catalog import workload
from workloads.history import merge_histories, read_ops
from workloads.runner import start_locust, stop_locust
from workloads.settings import LoadSettings
from workloads.setup import ensure_table_async, final_reads_async

EXIT_PASS, EXIT_FAIL, EXIT_INFRA, EXIT_ABORTED = 0, 1, 2, 3
CANARY_TABLE = "gameday-canary"


@dataclass(frozen=True)
class RunOptions:
    backend: str = "local"
    seed: int | None = None
    out: Path = Path("runs")
    data_dir: Path | None = None  # a running cluster to use; None: start a fresh one
    keep: bool = False  # keep the cluster running (and its data) after the run
    timeline: list[TimedFault] | None = None  # replay: run exactly this timeline
    kubeconfig: Path | None = None  # k8s: the cluster to install on (None: the local one)


class CanaryMonitor:
    """Reads canary.jsonl as it grows: per-second success ratio for the live view and stops."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.seconds: dict[int, list[int]] = {}  # second -> [ok, total]

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as f:
            f.seek(self.offset)
            for line in f:
                if not line.endswith("\n"):
                    break
                self.offset += len(line.encode())
                op = json.loads(line)
                if op.get("type") == "invoke" or op.get("attempt", 1) > 1:
                    continue  # one verdict per probe, its first attempt's: retries add none
                bucket = self.seconds.setdefault(int(op.get("time", 0)), [0, 0])
                bucket[1] += 1
                ok = op["type"] == "ok" or op.get("error") == "ConditionalCheckFailedException"
                bucket[0] += 1 if ok else 0

    def ratio(self, last_seconds: int, now: float) -> float | None:
        ok = total = 0
        for second in range(int(now) - last_seconds, int(now)):
            counts = self.seconds.get(second, [0, 0])
            ok, total = ok + counts[0], total + counts[1]
        return None if total == 0 else ok / total


class RunControl:
    """What SIGINT / SIGTERM do to a run in progress: first an orderly stop, then a hard one."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.orchestrator: Orchestrator | None = None
        self.finishing = False  # the timeline is over: a first signal lets the report finish
        self.main: asyncio.Task[Any] | None = asyncio.current_task()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.signal is None:
            self.signal = sig
            if self.orchestrator is not None:  # the timeline stops; the run finishes in order
                self.orchestrator.request_stop(f"interrupted by {name}")
                return
            if self.finishing:  # healed already: the reads, checks and report are under way
                return
        if self.main is not None:  # not under way yet, or a second signal: stop now
            self.main.cancel()

    def exit_code(self, code: int) -> int:
        return code if self.signal is None else 128 + self.signal


async def run_game_day(scenario_path: Path, options: RunOptions, console: Console) -> int:
    control = RunControl()
    control.install()
    try:
        return await _run_game_day(scenario_path, options, console, control)
    except asyncio.CancelledError:
        console.print("[yellow]interrupted: healed and torn down; no report[/yellow]")
        return control.exit_code(EXIT_ABORTED)
    finally:
        control.uninstall()


async def _run_game_day(
    scenario_path: Path, options: RunOptions, console: Console, control: RunControl
) -> int:
    if options.timeline is not None:  # a replay: the recorded timeline, as it ran
        scenario, timeline = load_scenario(scenario_path), options.timeline
    else:  # validated and scheduled once, here
        game = load_game_day(scenario_path, options.seed)
        scenario, timeline = game.scenario, list(game.timeline)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = options.out / f"{stamp}-{scenario.name}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "scenario.json").write_text(scenario_json(scenario, scenario_path))
    (run_dir / "timeline.json").write_text(timeline_to_json(timeline))
    console.print(
        f"[bold]game day[/bold] {scenario.name}: {len(timeline)} faults over "
        f"{scenario.duration:g}s; run directory {run_dir}"
    )
    started_here = options.data_dir is None
    data_dir = options.data_dir or run_dir / "cluster"
    tear = started_here and not options.keep
    # Before anything starts: if this process is SIGKILLed, the watchdog heals what the run
    # injected and tears down what it started (the cluster unless --keep, the workload).
    guard = Guard.spawn(
        run_dir / "guard.json",
        run_dir / "guardian.log",
        backend=options.backend if started_here else open_backend_name(data_dir),
        data_dir=str(data_dir.resolve()),
        teardown=tear,
    )
    cluster: Backend | None = None
    try:
        try:
            if started_here:
                cluster = create_cluster(
                    options.backend,
                    data_dir,
                    scenario.cluster.topology,
                    scenario.cluster.partitions,
                    kubeconfig=options.kubeconfig,
                    power_layer=needs_power_layer(scenario, timeline),
                )
            else:
                cluster = open_cluster(data_dir)
            if tear:  # what the run starts dies with it, even on SIGKILL (the watchdog also acts)
                cluster.die_with_this_process()
            with console.status(f"starting the cluster ({cluster.name}) ..."):
                await uninterrupted(asyncio.to_thread(cluster.up))
        except (FileNotFoundError, ValueError, RuntimeError, TimeoutError, OSError) as exc:
            console.print(f"[red]infrastructure error:[/red] {exc}")
            return control.exit_code(EXIT_INFRA)
        try:
            outcome = await _game_day(scenario, timeline, cluster, run_dir, console, control, guard)
        except (RuntimeError, TimeoutError, OSError) as exc:
            console.print(f"[red]infrastructure error:[/red] {exc}")
            return control.exit_code(EXIT_INFRA)
    finally:
        if cluster is not None and tear:
            await asyncio.shield(asyncio.to_thread(tear_down, cluster, data_dir))
        await asyncio.shield(asyncio.to_thread(guard.finish))
    from checks.report import exit_code, print_summary, run_checks

    verdict = await asyncio.to_thread(run_checks, run_dir)
    print_summary(verdict, console)
    console.print(f"report: {run_dir / 'report.html'}")
    if outcome.aborted is not None and verdict.aborted is None:  # never kinder than the run
        console.print(f"[magenta]aborted:[/magenta] {outcome.aborted}")
        return control.exit_code(EXIT_ABORTED)
    return control.exit_code(exit_code(verdict))


def needs_power_layer(scenario: Scenario, timeline: list[TimedFault]) -> bool:
    """Whether the run may lose power: a power_loss fault in its timeline, or among the kinds
    its random schedule draws (every seed then runs on the same layer, at the same cost)."""
    spec = scenario.method.random
    drawn = spec.faults if spec is not None else {}
    return any(isinstance(t.fault, PowerLoss) for t in timeline) or any(
        issubclass(fault_class(kind), PowerLoss) for kind in drawn
    )


def open_backend_name(data_dir: Path) -> str:
    from chaos.backends.docker_plan import is_docker_cluster
    from chaos.backends.k8s_plan import is_k8s_cluster

    if is_k8s_cluster(data_dir):
        return "k8s"
    return "docker" if is_docker_cluster(data_dir) else "local"


def scenario_json(scenario: Scenario, source: Path) -> str:
    """The resolved scenario for the run directory; the checkers read its ``steady_state``."""
    data = json.loads(scenario.to_json())
    data["source"] = str(source.resolve())
    return json.dumps(data, indent=2)


async def _game_day(
    scenario: Scenario,
    timeline: list[TimedFault],
    cluster: Backend,
    run_dir: Path,
    console: Console,
    control: RunControl,
    guard: Guard,
) -> RunOutcome:
    secret = cluster.config.credentials[DEFAULT_ACCESS_KEY]
    endpoints = cluster.endpoints()
    first = next(iter(endpoints.values()))
    spec = workload(scenario.workload.name.replace("_", "-"))  # the catalog spells read-heavy
    table = scenario.workload.table or spec.default_table
    await ensure_table_async(first, DEFAULT_ACCESS_KEY, secret, table, spec.name)
    await ensure_table_async(first, DEFAULT_ACCESS_KEY, secret, CANARY_TABLE, "register")
    run_start = time.time()
    settings = LoadSettings(
        endpoints=tuple(endpoints.values()),
        access_key=DEFAULT_ACCESS_KEY,
        secret_key=secret,
        workload=spec.name,
        table=table,
        keys=scenario.workload.keys,
        distribution=scenario.workload.distribution,
        history_dir=run_dir / "history",
        run_start=run_start,
        user_rate=rate / scenario.workload.users if (rate := scenario.workload.rate) else None,
    )
    with (run_dir / "locust.log").open("ab") as log:
        locust = start_locust(
            settings,
            users=scenario.workload.users,
            spawn_rate=float(scenario.workload.users),
            run_time=f"{int(scenario.duration) + 60}s",
            processes=scenario.workload.processes,
            csv_prefix=run_dir / "locust",
            log=log,
            popen=partial(tied_popen, sig=signal.SIGTERM),  # stops in order if we die
        )
    guard.add_group(locust.pid)  # Locust and its workers die with the run, even on SIGKILL
    cluster.favour_load(locust.pid)  # the CPU weight of a machine of its own, where it shares ours
    stop_canaries = asyncio.Event()
    az_of = {r: cluster.config.process(r).az for r in endpoints}
    canaries = asyncio.create_task(
        run_canaries(
            endpoints,
            az_of,
            DEFAULT_ACCESS_KEY,
            secret,
            CANARY_TABLE,
            5.0,
            scenario.duration + 5,
            run_dir / "canary.jsonl",
            run_start,
            stop_canaries,
        )
    )
    monitor = CanaryMonitor(run_dir / "canary.jsonl")
    orchestrator = Orchestrator(
        cluster,
        timeline,
        run_dir,
        BlastRadius(
            scenario.blast_radius.max_azs,
            scenario.blast_radius.max_nodes,
            scenario.blast_radius.max_racks,
        ),
        stop_check=_stop_check(scenario, monitor, run_start),
        run_start=run_start,
        guard=guard,
        # The load stops (its history closed) before the run's end heals anything: writes after
        # a slow power-on would overwrite what the fault lost, and hide it from the final reads.
        stop_load=partial(asyncio.to_thread, stop_locust, locust),
    )
    active: dict[str, str] = {}
    recent: deque[str] = deque(maxlen=6)

    def on_event(event: dict[str, Any]) -> None:
        name, fault_id = event["event"], event.get("fault_id", "")
        if name == "fault_start":
            active[fault_id] = f"{event.get('fault')} {', '.join(event.get('targets', []))}"
        elif name == "fault_end":
            active.pop(fault_id, None)
        recent.append(f"{event['time']:6.1f}s {name} {fault_id} {event.get('fault', '')}")

    orchestrator.events.listeners.append(on_event)
    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            view = asyncio.create_task(
                _live_view(live, scenario, run_start, active, recent, monitor)
            )
            control.orchestrator = orchestrator
            try:
                outcome = await orchestrator.run(scenario.duration)
            finally:
                control.orchestrator = None
                control.finishing = True
                view.cancel()
    finally:
        stop_canaries.set()
        await asyncio.shield(asyncio.to_thread(stop_locust, locust))
        with contextlib.suppress(Exception):
            await canaries
    if outcome.aborted is not None:
        console.print(f"[magenta]aborted:[/magenta] {outcome.aborted}; finishing the report")
    history = await asyncio.to_thread(
        merge_histories, run_dir / "history", run_dir / "history.jsonl"
    )
    await asyncio.to_thread(write_operations, history)  # paired once, for the checks' loads
    await asyncio.to_thread(cluster.wait_healthy, 60.0)
    named: set[str] = set()
    for op in read_ops(history):
        named |= {op["key"]} if op.get("key") else set()
        named |= bank.accounts_named(op)  # a transfer's destination is not its key
    keys = sorted(named)
    with console.status("final reads and replica digests ..."):
        reads = await final_reads_async(first, DEFAULT_ACCESS_KEY, secret, table, keys, spec.name)
        (run_dir / "final_reads.json").write_text(json.dumps(reads, indent=1))
        digests = await asyncio.to_thread(settled_digests, cluster)
        (run_dir / "digests.json").write_text(json.dumps(digests, indent=1))
    return outcome


def _stop_check(
    scenario: Scenario, monitor: CanaryMonitor, run_start: float
) -> Callable[[], str | None]:
    def check() -> str | None:
        monitor.poll()
        now = time.time() - run_start
        for condition in scenario.stop_conditions:
            seconds = max(1, int(condition.for_seconds))
            ratio = monitor.ratio(seconds, now)
            if ratio is not None and now > seconds and ratio < condition.availability_below:
                return (
                    f"stop condition: canary availability {ratio:.0%} below "
                    f"{condition.availability_below:.0%} for {seconds}s"
                )
        return None

    return check


async def _live_view(
    live: Live,
    scenario: Scenario,
    run_start: float,
    active: dict[str, str],
    recent: deque[str],
    monitor: CanaryMonitor,
) -> None:
    for _ in range(100_000):  # bounded; cancelled when the run ends
        monitor.poll()
        now = time.time() - run_start
        ratio = monitor.ratio(5, now)
        head = Table.grid(padding=(0, 2))
        head.add_row(
            f"[bold]{scenario.name}[/bold]",
            f"{now:5.0f}s / {scenario.duration:g}s",
            "canary availability (5s): " + ("-" if ratio is None else f"{ratio:.1%}"),
        )
        faults = Table(title="active faults", expand=False)
        faults.add_column("id")
        faults.add_column("fault")
        for fault_id, what in active.items():
            faults.add_row(fault_id, what)
        live.update(Group(head, faults, "\n".join(recent)))
        await asyncio.sleep(0.5)


def settled_digests(cluster: Backend, timeout: float = 30.0) -> dict[str, Any]:
    """Per group, per node, (applied, digest) — once every group's replicas applied the same
    index (the workload has stopped, so they converge), or whatever they say at the timeout."""
    deadline = time.monotonic() + timeout
    digests: dict[str, dict[str, Any]] = {}
    while True:
        digests = {}
        for node in cluster.process_ids("storage"):
            admin = cluster.config.process(node).admin
            try:
                url = f"http://{admin}/digest"
                signed = urllib.request.Request(url, headers=auth.url_headers("GET", url))
                with urllib.request.urlopen(signed, timeout=5) as resp:
                    body = json.loads(resp.read())
            except OSError:
                continue
            for d in body["digests"]:
                digests.setdefault(d["group"], {})[node] = {
                    "applied": d["applied"],
                    "digest": d["digest"],
                }
        settled = all(
            len({v["applied"] for v in nodes.values()}) == 1 for nodes in digests.values()
        )
        if settled or time.monotonic() > deadline:
            return digests
        time.sleep(0.5)
