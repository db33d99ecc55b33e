"""The `gameday` command line: the one entry point people and CI use.

Kept thin on purpose: each command parses its arguments and hands over to the module that does the
work, imported lazily so that `gameday --help` stays fast and works while parts are still missing.

    $ gameday --help
    $ gameday version
    $ gameday demo          # run the default game day on local processes
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from chaos.cluster_cli import cluster_app

DIST_NAME = "gameday"

# Rich keeps the help's line breaks, so each paragraph is one line and the terminal wraps it.
HELP = "\n\n".join(
    [
        "Run [bold]game days[/bold] against a compact DynamoDB-style cluster.",
        "gameday starts a replicated cluster, drives client traffic at it, powers off nodes, racks"
        " and whole availability zones, cuts and degrades the links between them, and afterwards"
        " proves from the recorded history that no acknowledged write was lost, that every key"
        " behaved linearizably, that the replicas converged, and how available the service was as"
        " its clients saw it.",
        "[bold]Usual flow[/bold]",
        "1. [cyan]gameday demo[/cyan]: run the default game day on local processes.",
        "2. Read the verdict in [cyan]runs/<timestamp>-<scenario>/[/cyan]: checks.json,"
        " report.html, junit.xml. The exit code is 0 only when every check passes."
        " [dim](planned)[/dim]",
        "3. Write your own scenario (YAML: topology, workload, faults, checks) and run it."
        " [dim](planned)[/dim]",
    ]
)

app = typer.Typer(
    name="gameday",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    help=HELP,
)

app.add_typer(cluster_app, name="cluster")

_err = Console(stderr=True)


@app.command("version")
def show_version() -> None:
    """Print the installed gameday version."""
    try:
        installed = version(DIST_NAME)
    except PackageNotFoundError:  # running from a source tree that was never installed
        installed = "unknown (not installed)"
    typer.echo(f"{DIST_NAME} {installed}")


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the nodes keep their data.")] = Path(
        ".gameday/demo"
    ),
) -> None:
    """Run the demo game day on local processes and print its verdict.

    For now: three storage nodes, writes through the leaders, a SIGKILL of a leader under
    load, a restart, then checks that every acknowledged write survived and replicas
    converged. Exit code 0 only when every check passes.
    """
    from chaos.demo import run_demo

    console = Console()
    if not asyncio.run(run_demo(data_dir, console)):
        raise typer.Exit(1)
