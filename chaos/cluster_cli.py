"""`gameday cluster ...`: start, inspect and stop a cluster (local processes, Docker, Kubernetes).

gameday cluster up [--topology 3x2x1] [--data-dir .gameday/cluster] [--backend docker|k8s]
gameday cluster up --backend k8s [--kubeconfig F] [--namespace N]   (helm install)
gameday cluster status [--json]
gameday cluster scrub [--partition P] [--json]
gameday cluster down [--wipe]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from chaos.backends import BACKENDS, create_cluster, open_cluster
from chaos.backends.base import DEFAULT_ACCESS_KEY, Backend
from chaos.cli_common import DEFAULT_DATA_DIR

DataDir = Annotated[
    Path, typer.Option("--data-dir", help="Where the cluster keeps its config, data and logs.")
]

cluster_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Start, inspect and stop a cluster of local processes (one address per node on "
    "127.x.y.z), or of Docker containers with [cyan]--backend docker[/cyan]. Restarting "
    "[cyan]up[/cyan] on an existing data dir recovers all its data.",
)
console = Console()
err = Console(stderr=True)


def _open(data_dir: Path) -> Backend:
    try:
        return open_cluster(data_dir)
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@cluster_app.command("up")
def up(
    topology: Annotated[
        str, typer.Option(help="AZSxRACKSxNODES: availability zones, racks per AZ, nodes per rack.")
    ] = "3x2x1",
    partitions: Annotated[int, typer.Option(help="Partitions per new table.", min=1)] = 4,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for health (default: 60; 300 on k8s)."),
    ] = None,
    backend: Annotated[
        str, typer.Option(help=f"Where the processes run: {', '.join(BACKENDS)}.")
    ] = "local",
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="k8s: the cluster to install on (default: the local Kubernetes of "
            "'gameday k8s up'; power-off of nodes needs that one)."
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="k8s: the release's namespace (default: gameday-<hash of data dir>)."),
    ] = None,
    power_loss_layer: Annotated[
        bool,
        typer.Option(
            help="local, docker: storage nodes on the power-loss layer, so that power_loss faults "
            "(gameday fault inject power_loss_node target=sn-a1) lose what was not fsynced."
        ),
    ] = False,
) -> None:
    """Start every process of the cluster and wait until all are healthy.

    With [cyan]--backend k8s[/cyan] the cluster is a Helm release of charts/gameday.
    """
    try:
        if backend == "docker" or (backend == "k8s" and kubeconfig is None):
            from chaos.images import build_with_progress, engine, image_is_current

            if not image_is_current(engine()):
                build_with_progress(console)  # first use, or the source changed: (re)build
        cluster = create_cluster(
            backend,
            data_dir,
            topology,
            partitions,
            kubeconfig=kubeconfig,
            namespace=namespace,
            power_layer=power_loss_layer,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    started = time.monotonic()
    total = len(cluster.process_ids())
    with console.status("starting processes ...") as status:
        done: list[str] = []

        def progress(process_id: str) -> None:
            done.append(process_id)
            status.update(f"healthy: {len(done)}/{total} ({process_id})")

        try:
            cluster.up(timeout, progress)
        except (RuntimeError, TimeoutError, OSError) as exc:
            err.print(f"[red]cluster did not come up:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(
        f"[green]cluster up[/green] in {time.monotonic() - started:.1f}s "
        f"({cluster.config.topology}, {total} processes, data in {data_dir})"
    )
    endpoints = cluster.endpoints()
    table = Table(title="DynamoDB endpoints (one router per AZ)")
    table.add_column("router")
    table.add_column("endpoint_url")
    for router, url in endpoints.items():
        table.add_row(router, url)
    console.print(table)
    secret = cluster.config.credentials[DEFAULT_ACCESS_KEY]
    first = next(iter(endpoints.values()))
    console.print(
        f"credentials: aws_access_key_id=[bold]{DEFAULT_ACCESS_KEY}[/bold] "
        f"aws_secret_access_key=[bold]{secret}[/bold] (any region)\n"
        f"try: AWS_ACCESS_KEY_ID={DEFAULT_ACCESS_KEY} AWS_SECRET_ACCESS_KEY={secret} "
        f"AWS_DEFAULT_REGION=us-east-1 aws dynamodb list-tables --endpoint-url {first}",
        soft_wrap=True,  # one line each, ready to copy
    )


@cluster_app.command("status")
def status(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show every process by AZ and rack, its health, and the replicas each node holds."""
    cluster = _open(data_dir)
    rows = collect_status(cluster)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"cluster in {data_dir} ({cluster.config.topology})")
    for col in ("process", "role", "az", "rack", "health", "address", "replicas", "leads", "lag"):
        table.add_column(col)
    for row in rows["processes"]:
        health = "[green]up[/green]" if row["healthy"] else "[red]down[/red]"
        table.add_row(
            row["id"],
            row["role"],
            row["az"],
            row.get("rack") or "",
            health,
            row["address"],
            str(row.get("replicas", "")),
            str(row.get("leads", "")),
            str(row.get("max_lag", "")),
        )
    console.print(table)
    if rows["partitions"]:
        parts = Table(title="replication groups")
        for col in ("group", "leader", "term", "commit", "members"):
            parts.add_column(col)
        for group in rows["partitions"]:
            parts.add_row(
                group["group"],
                group["leader"] or "[red]none[/red]",
                str(group["term"]),
                str(group["commit"]),
                ", ".join(group["members"]),
            )
        console.print(parts)
    if not rows["healthy"]:
        raise typer.Exit(1)


def collect_status(cluster: Backend) -> dict[str, Any]:
    from chaos.backends.k8s import K8sCluster
    from chaos.backends.k8s_native import describe

    where = describe(cluster) if isinstance(cluster, K8sCluster) else None
    processes: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for process_id in cluster.process_ids():
        info = cluster.config.process(process_id)
        row: dict[str, Any] = {
            "id": process_id,
            "role": info.role,
            "az": info.az,
            "rack": info.rack,
            "address": info.listen,
            "healthy": cluster.health(process_id) is not None,
        }
        if where is not None:
            row["k8s_node"] = where.get(process_id, {}).get("node")
        if info.role == "storage" and row["healthy"]:
            body = cluster.storage_status(process_id) or {"replicas": []}
            replicas = body["replicas"]
            row["replicas"] = len(replicas)
            row["leads"] = sum(1 for r in replicas if r["role"] == "leader")
            row["max_lag"] = max((r["commit"] - r["applied"] for r in replicas), default=0)
            for r in replicas:
                g = groups.setdefault(
                    r["group"],
                    {
                        "group": r["group"],
                        "leader": None,
                        "term": 0,
                        "commit": 0,
                        "members": r["members"],
                    },
                )
                if r["role"] == "leader" and r["term"] >= g["term"]:
                    g["leader"] = process_id
                g["term"] = max(g["term"], r["term"])
                g["commit"] = max(g["commit"], r["commit"])
        processes.append(row)
    return {
        "topology": cluster.config.topology,
        "healthy": all(p["healthy"] for p in processes),
        "processes": processes,
        "partitions": sorted(groups.values(), key=lambda g: g["group"]),
        "endpoints": cluster.endpoints(),
    }


@cluster_app.command("scrub")
def scrub(
    partition: Annotated[
        str | None, typer.Option(help="A partition (group id) or a table; default: all.")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Scrub now: compare each partition's replicas at one log index and with the WAL archive;
    a bad replica is named, quarantined and rebuilt. A partition where a replica sent no report
    is "incomplete". Exit 1 when an alarm remains or a partition is incomplete."""
    from chaos.scrub import render, scrub_cluster

    cluster = _open(data_dir)
    admins = {p: cluster.config.process(p).admin for p in cluster.process_ids("storage")}
    rows = scrub_cluster(admins, partition)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        console.print(render(rows))
    if not rows or any(r.get("verdict") in ("alarm", "incomplete") for r in rows):
        raise typer.Exit(1)


@cluster_app.command("down")
def down(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    wipe: Annotated[bool, typer.Option(help="Also delete all data, logs and config.")] = False,
) -> None:
    """Stop every process (SIGTERM, then SIGKILL); --wipe deletes the data too."""
    cluster = _open(data_dir)
    cluster.down(wipe=wipe)
    console.print(f"[green]cluster stopped[/green]{' and wiped' if wipe else ''}")
