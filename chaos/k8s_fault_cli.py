"""`gameday fault k8s ...`: Kubernetes-native faults on a cluster of the k8s backend.

Beside the catalog's faults (power-off of an AZ is a real power-off of its Kubernetes nodes),
what Kubernetes itself does to pods: delete them (as pod-kill chaos tools do; their controllers
recreate them), cordon nodes, drain them (cordon + the Eviction API, as ``kubectl drain``).
Targets are AZs (``az-b``) or racks (``az-b/r1``), resolved through the nodes' labels; pods
through ``spec.nodeName``. ``gameday heal`` (or ``uncordon``) brings everything back.

    gameday fault k8s delete-pods az-b         # every release pod on az-b's nodes
    gameday fault k8s drain az-c               # cordon + evict; pods stay Pending
    gameday fault k8s uncordon az-c            # they schedule again
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from chaos.backends import k8s_native, open_cluster
from chaos.backends.k8s import K8sCluster, K8sError
from chaos.cli_common import DEFAULT_DATA_DIR

console = Console()
err = Console(stderr=True)
DataDir = Annotated[
    Path, typer.Option("--data-dir", help="The data dir of a cluster of the k8s backend.")
]
Target = Annotated[str, typer.Argument(help="An AZ (az-b) or a rack (az-b/r1).")]

k8s_fault_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Kubernetes-native faults (pod delete, cordon, drain) on a cluster started with "
    "[cyan]gameday cluster up --backend k8s[/cyan].",
)


def _open(data_dir: Path) -> K8sCluster:
    try:
        cluster = open_cluster(data_dir)
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if not isinstance(cluster, K8sCluster):
        err.print(f"[red]{data_dir} holds a {cluster.name} cluster; these faults need k8s[/red]")
        raise typer.Exit(2)
    cluster.refresh()
    return cluster


def _apply(what: str, data_dir: Path, fault: Callable[[K8sCluster], list[str]]) -> None:
    """Run ``fault`` on the cluster in ``data_dir`` and say what it touched; exit 2 on error."""
    try:
        touched = fault(_open(data_dir))
    except K8sError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]{what}[/green]: {', '.join(touched) or 'nothing'}")


@k8s_fault_app.command("delete-pods")
def delete_pods(
    target: Target,
    grace: Annotated[
        int | None, typer.Option(help="Grace period in seconds (default: the pods' own).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Delete the release's pods on the nodes of an AZ or rack; their controllers recreate them."""
    _apply("deleted the pods of", data_dir, lambda c: k8s_native.delete_pods(c, target, grace))


@k8s_fault_app.command("cordon")
def cordon(target: Target, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Mark the nodes of an AZ or rack unschedulable (running pods stay)."""
    _apply("cordoned", data_dir, lambda c: k8s_native.cordon(c, target))


@k8s_fault_app.command("drain")
def drain(
    target: Target,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the pods to go.")] = 60.0,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Cordon the nodes of an AZ or rack and evict the release's pods from them."""
    _apply("drained (evicted)", data_dir, lambda c: k8s_native.drain(c, target, timeout))


@k8s_fault_app.command("uncordon")
def uncordon(target: Target, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Let the nodes of an AZ or rack take pods again (drained pods schedule back)."""
    _apply("uncordoned", data_dir, lambda c: k8s_native.uncordon(c, target))
