"""`gameday fault ...`, `gameday faults`, `gameday heal`: faults by hand on a running cluster.

A fault injected here stays until `gameday heal` (it is recorded, so `gameday fault list`
shows it from any shell), unless `--duration` is given: then the command holds it for that
long under a dead-man's switch and heals it itself, also on Ctrl-C.

    gameday fault power-off az-b              # an AZ, a rack (az-a/r1) or a node (sn-a1)
    gameday fault partition "az-a|az-b,az-c"
    gameday fault latency --from az-a --to az-b 200ms --duration 30s
    gameday fault inject leader_isolation group=meta
    gameday heal
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from chaos.backends import open_cluster
from chaos.backends.base import Backend
from chaos.cli_common import DEFAULT_DATA_DIR, sigterm_interrupts
from chaos.deadman import Lease, spawn_watchdog
from chaos.faults import ClusterView, Fault, PlanError, describe_catalog, groups_from_status
from chaos.faults import make_fault as build_fault
from chaos.faults import plan as plan_fault
from chaos.k8s_fault_cli import k8s_fault_app
from chaos.nemesis import FaultNotLanded, Nemesis, recorded_faults
from chaos.scenario import parse_duration

console = Console()
err = Console(stderr=True)
DataDir = Annotated[Path, typer.Option("--data-dir", help="The running cluster's data dir.")]
Duration = Annotated[
    str | None,
    typer.Option(
        help="Hold the fault this long (e.g. 30s), then heal it. Default: until 'gameday heal'."
    ),
]

fault_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Inject a fault into the running local cluster. Targets use the cluster's names: AZs "
    "(az-b), racks (az-a/r1), nodes (sn-a1), routers (rt-a). See [cyan]gameday faults[/cyan].",
)
fault_app.add_typer(k8s_fault_app, name="k8s")


def _open(data_dir: Path) -> Backend:
    try:
        return open_cluster(data_dir)  # local or docker, whichever made the data dir
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def inject(data_dir: Path, fault: Fault, duration: str | None) -> None:
    """Plan ``fault`` against the live cluster, inject it, confirm it, optionally hold+heal."""
    cluster = _open(data_dir)
    statuses = {n: cluster.storage_status(n) for n in cluster.process_ids("storage")}
    view = ClusterView.from_config(cluster.config, groups_from_status(statuses))
    try:
        plan = plan_fault(fault, view)
        hold = None if duration is None else parse_duration(duration)
    except (PlanError, ValueError) as exc:
        err.print(f"[red]cannot inject {fault.kind}:[/red] {exc}")
        raise typer.Exit(2) from None
    fault_id = f"cli-{uuid.uuid4().hex[:6]}"
    nemesis = Nemesis(cluster)
    lease = Lease(cluster.state_dir / f"{fault_id}.lease") if hold is not None else None
    watchdog = spawn_watchdog(cluster, lease) if lease is not None else None
    try:
        evidence = nemesis.inject(fault_id, plan, plan.describe())
    except FaultNotLanded as exc:
        nemesis.heal(fault_id)
        err.print(f"[red]the fault did not land, healed it:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[yellow]{fault_id}[/yellow] {plan.describe()}")
    if evidence:
        console.print(f"  confirmed: {evidence}")
    if hold is None:
        console.print("active until [cyan]gameday heal[/cyan]")
        return
    assert lease is not None and watchdog is not None
    with sigterm_interrupts():  # SIGTERM heals now too, as Ctrl-C does
        try:
            with console.status(f"holding for {hold:g}s (Ctrl-C heals now) ..."):
                time.sleep(hold)
        except KeyboardInterrupt:
            console.print("interrupted")
        finally:
            nemesis.heal(fault_id)
            lease.release()
            watchdog.wait(timeout=5)
    console.print(f"[green]healed[/green] {fault_id}")


def _side_target(target: str) -> dict[str, Any]:
    return {"target": target}


@fault_app.command("power-off")
def power_off(
    target: Annotated[str, typer.Argument(help="An AZ (az-b), a rack (az-a/r1) or a node.")],
    duration: Duration = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Hard power-off (SIGKILL of every process there); healing powers it back on."""
    if "/" in target:
        kind = "power_off_rack"
    elif target.startswith("az-"):
        kind = "power_off_az"
    else:
        kind = "power_off_node"
    inject(data_dir, _make(kind, _side_target(target)), duration)


@fault_app.command("pause")
def pause(
    target: Annotated[str, typer.Argument(help="A process, e.g. sn-b1.")],
    duration: Duration = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Gray failure: SIGSTOP a process (it keeps its connections but answers nothing)."""
    inject(data_dir, _make("pause_node", _side_target(target)), duration)


@fault_app.command("isolate")
def isolate(
    target: Annotated[str, typer.Argument(help="A node (sn-a1) or an AZ (az-a).")],
    duration: Duration = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Cut every link to and from a node or an AZ (a silent partition)."""
    kind = "isolate_az" if target.startswith("az-") and "/" not in target else "isolate_node"
    inject(data_dir, _make(kind, _side_target(target)), duration)


@fault_app.command("partition")
def partition(
    sides: Annotated[str, typer.Argument(help='Sides separated by "|", e.g. "az-a|az-b,az-c".')],
    duration: Duration = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Split the cluster into sides that cannot reach each other."""
    inject(data_dir, _make("split", {"sides": sides}), duration)


@fault_app.command("latency")
def latency(
    delay: Annotated[str, typer.Argument(help="Added one-way delay, e.g. 200ms.")],
    from_: Annotated[str, typer.Option("--from", help="Side the links start from.")],
    to: Annotated[str, typer.Option("--to", help="Side the links go to.")],
    jitter: Annotated[str, typer.Option(help="Random +/- jitter, e.g. 20ms.")] = "0ms",
    duration: Duration = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Slow the links between two sides down (Toxiproxy latency + jitter)."""
    try:
        ms, jitter_ms = parse_duration(delay) * 1000, parse_duration(jitter) * 1000
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    params = {"from_side": from_, "to_side": to, "ms": ms, "jitter_ms": jitter_ms}
    inject(data_dir, _make("latency", params), duration)


@fault_app.command("inject")
def inject_any(
    kind: Annotated[str, typer.Argument(help="A fault kind from 'gameday faults'.")],
    params: Annotated[list[str] | None, typer.Argument(help="PARAM=VALUE pairs.")] = None,
    duration: Duration = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Any fault of the catalog, with its parameters as PARAM=VALUE."""
    values: dict[str, Any] = {}
    for pair in params or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            err.print(f"[red]expected PARAM=VALUE, got {pair!r}[/red]")
            raise typer.Exit(2)
        values[key] = yaml.safe_load(raw) if raw else raw
    inject(data_dir, _make(kind, values), duration)


@fault_app.command("list")
def list_faults(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """The faults active on the cluster (injected by any gameday command)."""
    cluster = _open(data_dir)
    active = recorded_faults(cluster.state_dir)
    if not active:
        console.print("no active faults")
        return
    table = Table(title="active faults")
    for col in ("id", "since", "what"):
        table.add_column(col)
    for fault_id, entry in active.items():
        since = time.strftime("%H:%M:%S", time.localtime(entry.get("started", 0)))
        table.add_row(fault_id, since, entry.get("description", ""))
    console.print(table)


def _make(kind: str, params: dict[str, Any]) -> Fault:
    try:
        return build_fault(kind, params)
    except (ValueError, TypeError) as exc:
        err.print(f"[red]{exc}[/red] (see 'gameday faults')")
        raise typer.Exit(2) from None


def faults_catalog() -> None:
    """The fault catalog: every fault kind, what it does, and its parameters."""
    table = Table(
        title="fault catalog (use in scenarios, or 'gameday fault inject KIND ...')",
        caption="power_off_* keeps the page cache (SIGKILL: unsynced writes survive); "
        "power_loss_* drops it (every byte not fsynced is lost; local and docker backends, "
        "whose storage nodes then sit on the power-loss layer; k8s refuses it)",
    )
    for col in ("fault", "what it does", "parameters"):
        table.add_column(col)
    for entry in describe_catalog():
        params = ", ".join(f"{p.name}{'' if p.required else '?'}" for p in entry.parameters)
        table.add_row(entry.kind, entry.description, params)
    console.print(table)


def heal(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Restore the cluster to healthy from any state (safe to repeat).

    Every toxic removed, every proxy enabled, every paused process resumed, every stopped
    process started; then waits until every process is healthy.
    """
    cluster = _open(data_dir)
    with console.status("healing ..."):
        try:
            Nemesis(cluster).heal_all()
        except (RuntimeError, TimeoutError) as exc:
            err.print(f"[red]healed the faults, but the cluster is not healthy:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print("[green]healed[/green]: no faults, every process running and healthy")
