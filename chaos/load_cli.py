"""`gameday load`: drive Locust traffic at a running cluster, headless or with the web UI.

Opens the cluster in ``--data-dir`` on whichever backend made it (``gameday cluster up``: local
processes; a Docker or Kubernetes cluster's data dir works the same), fills in its router
endpoints and credentials, creates the workload's table if needed, then runs Locust
(workloads/locustfile.py) as a subprocess; ``--processes N`` makes it Locust's master plus N
local workers. With ``--history DIR`` every operation is recorded (one part file per worker
process, merged into ``DIR/history.jsonl``), the keys are read back into
``DIR/final_reads.json`` and Locust's CSV statistics land in ``DIR/locust_*.csv``; ``gameday
check DIR`` can judge them offline.

With ``--web`` the UI also has a "Game day" tab (chaos/control.py, workloads/webui.py): the
cluster's topology and leaders, per-AZ canaries, the events timeline, and faults injected and
healed through the orchestrator (blast radius, evidence, dead-man's switch). Its events and
canaries go to the history directory (or ``<data-dir>/webui/<time>/``).

    $ gameday load --workload register --users 10 --run-time 30s --history runs/manual
    $ gameday load --web                       # http://127.0.0.1:8089, Ctrl-C to stop
    $ gameday load --workload all --web        # every workload; choose in the UI
    $ gameday load --processes 4 --users 64    # Locust master + 4 worker processes
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from chaos.backends import open_cluster
from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.lifeline import tied_popen
from chaos.cli_common import DEFAULT_DATA_DIR, sigterm_interrupts
from chaos.control import GameDayControl
from chaos.deadman import Guard
from chaos.faults import BlastRadius
from checks.history import write_operations
from workloads.catalog import WORKLOADS
from workloads.history import HISTORY_FILE, PART_GLOB, RUN_START_ENV, merge_histories, read_ops
from workloads.keys import DISTRIBUTIONS
from workloads.runner import WebUI, run_seconds, start_locust, start_web, stop_locust
from workloads.settings import LoadSettings
from workloads.setup import SetupError, ensure_table, final_reads

ALL = "all"
console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(code)


def load(
    web: Annotated[
        bool, typer.Option(help="Serve Locust's web UI instead of a headless run.")
    ] = False,
    web_host: Annotated[str, typer.Option(help="Interface for the web UI.")] = "127.0.0.1",
    web_port: Annotated[int, typer.Option(help="Port for the web UI.")] = 8089,
    users: Annotated[int, typer.Option(help="Concurrent Locust users.", min=1)] = 5,
    spawn_rate: Annotated[float, typer.Option(help="Users started per second.", min=0.1)] = 5.0,
    run_time: Annotated[str, typer.Option(help="Headless run length: 30s, 2m, 1h30m.")] = "60s",
    workload: Annotated[
        str,
        typer.Option(help=f"One of {', '.join(WORKLOADS)}, or '{ALL}' (each on its own table)."),
    ] = "register",
    distribution: Annotated[
        str, typer.Option(help=f"Key distribution: {' or '.join(DISTRIBUTIONS)}.")
    ] = "uniform",
    keys: Annotated[
        int | None, typer.Option(help="Number of keys (default depends on the workload).", min=1)
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="Table name (default gameday-<workload>).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Open loop: total ops/s, split evenly over the users, each on a fixed schedule;"
            " ops that could not be sent or answered in time count as unavailable. Omit for a"
            " closed loop (each user waits for its answer), which hides stalls: a user blocked"
            " on a hung request sends nothing, so the success ratio stays high.",
            min=0.001,
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            help="Run Locust as a master plus this many local worker processes (Locust's"
            " --processes); users are spread over them and their histories merged.",
            min=1,
        ),
    ] = None,
    gameday_tab: Annotated[
        bool,
        typer.Option(
            help="With --web: the Game day tab (topology, canaries, faults through the"
            " orchestrator, events)."
        ),
    ] = True,
    max_azs: Annotated[
        int, typer.Option(help="Game day tab: blast radius, the most AZs down at once.", min=0)
    ] = 1,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="The cluster's data dir (gameday cluster up).")
    ] = DEFAULT_DATA_DIR,
    history: Annotated[
        Path | None,
        typer.Option(help="Record every op; write history.jsonl and final_reads.json here."),
    ] = None,
) -> None:
    """Drive [bold]Locust[/bold] traffic at a running cluster: headless (default) or web UI.

    Every request is SigV4-signed DynamoDB JSON, spread round-robin over the routers of all AZs.
    Any backend: the data dir of a local, Docker or Kubernetes cluster. The web UI (127.0.0.1
    unless --web-host says otherwise) has a [bold]Game day[/bold] tab: the topology, per-AZ
    canaries, the events, and faults injected and healed through the orchestrator.
    Exit code: Locust's (0 when no request failed).
    """
    _interrupted.clear()  # a signal that stopped an earlier run in this process is not ours
    names = list(WORKLOADS) if workload == ALL else [workload]
    if workload != ALL and workload not in WORKLOADS:
        raise _fail(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}, {ALL}")
    if distribution not in DISTRIBUTIONS:
        raise _fail(f"unknown distribution {distribution!r}; choose from {DISTRIBUTIONS}")
    if table and workload == ALL:
        raise _fail("--table needs a single --workload (each workload has its own table)")
    try:
        run_seconds(run_time)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    try:
        cluster = open_cluster(data_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    if history is not None:
        history.mkdir(parents=True, exist_ok=True)
        if (history / HISTORY_FILE).exists() or any(history.glob(PART_GLOB)):
            raise _fail(f"{history} already holds a history; choose an empty directory")

    endpoints = cluster.endpoints()
    secret = cluster.config.credentials[DEFAULT_ACCESS_KEY]
    raw_start = os.environ.get(RUN_START_ENV)  # set when part of a larger run
    settings = LoadSettings(
        endpoints=tuple(endpoints.values()),
        access_key=DEFAULT_ACCESS_KEY,
        secret_key=secret,
        workload=None if workload == ALL else workload,
        table=table,
        keys=keys,
        distribution=distribution,
        history_dir=history.resolve() if history else None,
        run_start=float(raw_start) if raw_start else time.time(),
        user_rate=rate / users if rate else None,
    )
    for name in names:
        spec = WORKLOADS[name]
        _ensure(list(endpoints.values()), secret, settings.table_for(spec), name)

    csv = history / "locust" if history else None
    # SIGTERM stops Locust like Ctrl-C does; if this process is SIGKILLed, a watchdog stops
    # Locust's whole process group (chaos/deadman.py): no load keeps running without us.
    with sigterm_interrupts(_interrupted.append):
        guard_file = cluster.data_dir / "run" / f"load-{os.getpid()}.guard.json"
        guard: Guard | None = None
        control: GameDayControl | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:  # from the watchdog's start: a SIGTERM or Ctrl-C while it starts stops in order too
            # The watchdog also heals the cluster if the Game day tab's orchestrator stalls or dies.
            guard = Guard.spawn(
                guard_file,
                cluster.data_dir / "logs" / "load-guard.log",
                backend=cluster.name,
                data_dir=str(cluster.data_dir.resolve()),
            )
            if web:
                control_env = None
                if gameday_tab:
                    session = history or cluster.data_dir / "webui" / time.strftime("%Y%m%d-%H%M%S")
                    run_start = settings.run_start or time.time()
                    control = GameDayControl(
                        cluster, session, run_start, BlastRadius(max_azs), guard
                    )
                    with console.status("starting the Game day tab (canaries, fault session) ..."):
                        control.start()
                    control_env = control.locust_env()
                ui = WebUI(web_host, web_port, users, spawn_rate, processes, csv, workload == ALL)
                proc = start_web(settings, ui, control_env=control_env, popen=TIED)
                guard.add_group(proc.pid)
                console.print(
                    f"Locust web UI on [bold]http://{web_host}:{web_port}[/bold] "
                    f"({workload}, {len(endpoints)} routers on {cluster.name}"
                    f"{', Game day tab' if control else ''}); Ctrl-C to stop"
                )
                if control is not None:
                    console.print(f"  events and canaries: {control.session_dir}")
                code = _wait(proc, None)
            else:
                console.print(
                    f"load: {workload}, {users} users for {run_time} over {len(endpoints)} routers"
                )
                proc = start_locust(
                    settings, users, spawn_rate, run_time, processes, csv, popen=TIED
                )
                guard.add_group(proc.pid)
                code = _wait(proc, run_seconds(run_time) + settings.timeout + 60)
        except KeyboardInterrupt:
            # A signal outside _wait (while the tab or Locust was starting): the same clean stop.
            if not _interrupted:
                _interrupted.append(signal.SIGINT)
            code = stop_locust(proc) if proc is not None else 1
        finally:
            if control is not None:
                with console.status("healing the Game day tab's faults ..."):
                    control.stop()
            if guard is not None:
                guard.finish()
            guard_file.unlink(missing_ok=True)
            guard_file.with_name(guard_file.name + ".lock").unlink(missing_ok=True)

        if history is not None:
            _finish_history(history, settings, endpoints, secret, names)
        if _interrupted:
            raise typer.Exit(128 + _interrupted[0])
        if code != 0:
            raise typer.Exit(code)


_interrupted: list[int] = []
#: Locust gets SIGTERM (and stops in order) when this command dies, even by SIGKILL.
TIED = partial(tied_popen, sig=signal.SIGTERM)


def _ensure(endpoints: list[str], secret: str, table: str, workload: str) -> None:
    """Create the table through the first router that answers."""
    problems = []
    for endpoint in endpoints:
        try:
            ensure_table(endpoint, DEFAULT_ACCESS_KEY, secret, table, workload, timeout=30)
            return
        except (SetupError, OSError) as exc:
            problems.append(f"{endpoint}: {exc}")
    raise _fail("could not create table " + table + ":\n" + "\n".join(problems), 1)


def _wait(proc: subprocess.Popen[bytes], timeout: float | None) -> int:
    """Wait for Locust (bounded when ``timeout`` is given); Ctrl-C stops it cleanly."""
    try:
        return proc.wait(timeout)
    except KeyboardInterrupt:
        if not _interrupted:
            _interrupted.append(signal.SIGINT)
        console.print("stopping Locust ...")
        return stop_locust(proc)
    except subprocess.TimeoutExpired:
        err.print("[yellow]Locust overran its run time; stopping it[/yellow]")
        return stop_locust(proc)


def _finish_history(
    directory: Path,
    settings: LoadSettings,
    endpoints: dict[str, str],
    secret: str,
    names: list[str],
) -> None:
    merged = merge_histories(directory)
    write_operations(merged)  # history.ops.jsonl: `gameday check` loads it without pairing again
    counts = Counter((op.get("f"), op.get("type")) for op in read_ops(merged))
    summary = Table(title=f"history: {merged}")
    for col in ("f", "invoke", "ok", "fail", "info"):
        summary.add_column(col, justify="right" if col != "f" else "left")
    for f in sorted({f for f, _ in counts}, key=str):
        summary.add_row(str(f), *(str(counts[f, t]) for t in ("invoke", "ok", "fail", "info")))
    console.print(summary)
    if len(names) != 1:
        console.print("[dim]final_reads.json is written for a single workload only[/dim]")
        return
    spec = WORKLOADS[names[0]]
    for endpoint in endpoints.values():
        try:
            values = final_reads(
                endpoint,
                DEFAULT_ACCESS_KEY,
                secret,
                settings.table_for(spec),
                spec.keys(settings.keys_for(spec)),
                spec.name,
            )
        except OSError:
            continue
        (directory / "final_reads.json").write_text(json.dumps(values, indent=1) + "\n")
        console.print(f"final reads of {len(values)} keys: {directory / 'final_reads.json'}")
        return
    err.print("[yellow]no router answered the final reads; final_reads.json not written[/yellow]")


load_command = load
