"""``gameday k8s``: start, inspect and stop the local Kubernetes, and power its nodes off and on.

gameday k8s up                     # 3 AZs x 2 racks: six real kubelet nodes, Ready
gameday k8s up --shape 3x1         # one node per AZ
gameday k8s status
gameday k8s node power-off az-b-r1
gameday k8s node power-on az-b-r1
gameday k8s down                   # nothing left: processes, mounts, cgroups, links, rules
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from chaos.cli_common import fails_on, sigterm_interrupts
from chaos.k8s.localkube import LocalKube
from chaos.k8s.nodes import LocalKubeError

k8s_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="A real local Kubernetes (control plane on loopback, one kubelet node per rack) for "
    "the k8s backend. Needs root and the toolchain from k8s/toolchain.sh (built on first use, "
    "12-15 min, then cached). State and the kubeconfig live in .gameday/k8s/ "
    "(GAMEDAY_K8S_DIR overrides).",
)
node_app = typer.Typer(no_args_is_help=True, help="Power a node off (a real power cut) or on.")
k8s_app.add_typer(node_app, name="node")

_out = Console()
_err = Console(stderr=True)


def _progress(start: float) -> Callable[[str], None]:
    def say(line: str) -> None:
        _out.print(f"[dim]{time.monotonic() - start:6.1f}s[/dim] {line}", markup=True)

    return say


@k8s_app.command("up")
def up(
    shape: Annotated[
        str,
        typer.Option(
            help="AZS x RACKS per AZ: one Kubernetes node per rack (a topology like 3x2x1 works)."
        ),
    ] = "3x2",
    cluster_image: Annotated[
        bool,
        typer.Option(
            help="Load the docker backend's image gameday-cluster:latest into every node "
            "(built with 'gameday images build' when missing)."
        ),
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every node Ready.")] = 180.0,
    infra_node: Annotated[
        bool,
        typer.Option(
            help="Add node 'infra' outside every AZ (label and NoSchedule taint "
            "gameday.dev/pool=infra) for what no AZ outage may take down (the Toxiproxy mesh)."
        ),
    ] = True,
) -> None:
    """Start etcd, the control plane, kube-proxy, CoreDNS and one kubelet node per rack."""
    kube = LocalKube()
    start = time.monotonic()
    # SIGTERM mid-start tears down what was started, as Ctrl-C does.
    try:
        with sigterm_interrupts():
            if cluster_image:
                _ensure_cluster_image()
            status = kube.up(
                shape,
                _progress(start),
                cluster_image=cluster_image,
                timeout=timeout,
                infra_node=infra_node,
            )
    except LocalKubeError as exc:
        _err.print(f"[red]k8s up failed:[/red] {exc}")
        raise typer.Exit(1) from None
    _out.print(f"[green]{len(status.nodes)} nodes Ready[/green]: {', '.join(status.nodes)}")
    _out.print(f"kubeconfig: {status.kubeconfig}   (export KUBECONFIG={status.kubeconfig})")


def _ensure_cluster_image() -> None:
    from chaos.images import CLUSTER_IMAGE, build_with_progress, engine, image_is_current

    try:
        if not image_is_current(engine()):
            _out.print(f"{CLUSTER_IMAGE} is missing or older than this source: building it first")
            build_with_progress(_out)
    except Exception as exc:
        raise LocalKubeError(
            f"the docker backend's image is needed ({exc}); or pass --no-cluster-image"
        ) from None


@k8s_app.command("down")
def down() -> None:
    """Stop everything and undo every host change (mounts, cgroups, links, iptables, sysctls)."""
    start = time.monotonic()
    left = LocalKube().down(_progress(start))
    if left:
        _err.print("[red]could not remove:[/red]\n  " + "\n  ".join(left))
        raise typer.Exit(1)
    _out.print(f"[green]down[/green] in {time.monotonic() - start:.1f}s; nothing left")


@k8s_app.command("status")
def status() -> None:
    """Processes and node readiness; exit code 1 when the cluster is not running."""
    st = LocalKube().status()
    _out.print(f"state: {st.state_dir}\nkubeconfig: {st.kubeconfig}")
    for pid_id, alive in st.processes.items():
        _out.print(f"  {pid_id:<28} {'[green]running' if alive else '[red]stopped'}")
    for name, ready in st.nodes.items():
        colour = "green" if ready == "Ready" else "red"
        _out.print(f"  node {name:<23} [{colour}]{ready}")
    if not st.running:
        _out.print("[yellow]not running[/yellow] (gameday k8s up)")
        raise typer.Exit(1)


@node_app.command("power-off")
def power_off(name: Annotated[str, typer.Argument(help="Node name, e.g. az-b-r1.")]) -> None:
    """SIGKILL the node's kubelet, containerd, shims and pod processes (a power cut)."""
    with fails_on(LocalKubeError):
        killed = LocalKube().power_off(name)
    _out.print(f"{name}: powered off ({killed} processes killed)")


@node_app.command("power-on")
def power_on(name: Annotated[str, typer.Argument(help="Node name, e.g. az-b-r1.")]) -> None:
    """Start the node's containerd and kubelet again; its pods come back with their volumes."""
    with fails_on(LocalKubeError):
        LocalKube().power_on(name)
    _out.print(f"{name}: powered on")


@k8s_app.command("recycle-volumes")
def recycle_volumes() -> None:
    """Make Released local PersistentVolumes Available again (their data is deleted)."""
    with fails_on(LocalKubeError):
        names = LocalKube().recycle_volumes()
    _out.print(f"recycled {len(names)} volumes" + (f": {', '.join(names)}" if names else ""))
