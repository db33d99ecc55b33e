"""The `gameday` command line: the one entry point people and CI use.

Kept thin on purpose: each command parses its arguments and hands over to the module that does the
work, imported lazily so that `gameday --help` stays fast and works while parts are still missing.

    $ gameday --help
    $ gameday version
    $ gameday demo          # run the default game day on local processes
"""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from chaos.cluster_cli import cluster_app
from chaos.fault_cli import fault_app, faults_catalog, heal
from chaos.images import images_app
from chaos.k8s.cli import k8s_app
from chaos.load_cli import load_command
from chaos.setup_cli import setup_app

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
        "0. [cyan]gameday doctor[/cyan]: what this machine lacks, and the command that fixes it"
        " ([cyan]gameday setup toxiproxy[/cyan] for local game days).",
        "1. [cyan]gameday demo[/cyan]: run the default game day on local processes.",
        "2. Read the verdict in [cyan]runs/<timestamp>-<scenario>/[/cyan]: checks.json,"
        " report.html, junit.xml. The exit code is 0 only when every check passes.",
        "3. Start from a shipped scenario ([cyan]gameday scenario list[/cyan]): copy its YAML"
        " (topology, workload, faults, checks), edit it, [cyan]gameday scenario validate[/cyan]"
        " it, then [cyan]gameday run my.yaml[/cyan].",
        "Shell completion: [cyan]gameday --install-completion[/cyan] (bash, zsh, fish,"
        " PowerShell), then open a new shell.",
    ]
)

app = typer.Typer(
    name="gameday",
    no_args_is_help=True,
    rich_markup_mode="rich",
    help=HELP,
)


def installed_version() -> str:
    try:
        return version(DIST_NAME)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{DIST_NAME} {installed_version()}")
        raise typer.Exit()


@app.callback()
def main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed gameday version and exit.",
        ),
    ] = False,
) -> None:
    pass


app.add_typer(cluster_app, name="cluster")
app.add_typer(images_app, name="images")
app.add_typer(setup_app, name="setup")
app.add_typer(k8s_app, name="k8s")

_err = Console(stderr=True)


@app.command("version")
def show_version() -> None:
    """Print the installed gameday version (the same as [cyan]gameday --version[/cyan])."""
    typer.echo(f"{DIST_NAME} {installed_version()}")


@app.command("doctor")
def doctor() -> None:
    """Check this machine for game days: Python, Toxiproxy, Go, Docker, the Kubernetes toolchain,
    loopback subnets, ports and disk. Prints the command that fixes each problem; exit code 1
    when something required is missing (Docker and Kubernetes are optional)."""
    from chaos.doctor import exit_code, print_findings, run_checks

    findings = run_checks()
    print_findings(findings, Console())
    raise typer.Exit(exit_code(findings))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Parent of the run directory.")] = Path("runs"),
) -> None:
    """Run the demo game day (the shipped demo scenario, about two minutes) and print its verdict.

    A local 3x2x1 cluster under a register workload: a node is powered off, then a whole AZ,
    then an AZ is partitioned away, each healed in turn; then linearizability, durability,
    convergence and availability are checked. Exit code 0 only when every check passes.
    """
    from chaos.assets import shipped_scenarios
    from chaos.run import RunOptions, run_game_day

    scenario = shipped_scenarios()["demo"]
    raise typer.Exit(asyncio.run(run_game_day(scenario, RunOptions(out=out), Console())))


app.add_typer(fault_app, name="fault")
app.command("faults")(faults_catalog)
app.command("heal")(heal)
app.command("load")(load_command)

scenario_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode="rich", help="Check and inspect scenario files."
)
app.add_typer(scenario_app, name="scenario")


def complete_scenario(incomplete: str) -> list[str]:
    """Shell completion: the shipped scenario names (files complete as usual besides)."""
    from chaos.assets import shipped_scenarios

    return [name for name in shipped_scenarios() if name.startswith(incomplete)]


@scenario_app.command("list")
def scenario_list() -> None:
    """The scenarios gameday ships; run one by name: [cyan]gameday run az-outages[/cyan]."""
    from rich.table import Table

    from chaos.assets import shipped_scenarios
    from chaos.scenario import ScenarioError, load_scenario

    shipped = shipped_scenarios()
    folder = next(iter(shipped.values())).parent if shipped else "-"
    table = Table(
        title="shipped scenarios: gameday run NAME, or copy one to start your own",
        caption=f"files in {folder}",
    )
    for column in ("name", "duration", "topology", "what happens"):
        table.add_column(column, overflow="fold")
    for name, path in shipped.items():
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            table.add_row(name, "", "", f"[red]invalid: {exc}[/red]")
            continue
        duration = f"{scenario.duration:g}s"
        table.add_row(name, duration, scenario.cluster.topology, scenario.description)
    Console().print(table)


@scenario_app.command("validate")
def scenario_validate(
    files: Annotated[
        list[str] | None,
        typer.Argument(help="Scenario files or shipped names; none: every shipped scenario."),
    ] = None,
) -> None:
    """Validate scenario files: every problem is reported with its file, field and reason."""
    from chaos.assets import resolve_scenario, shipped_scenarios
    from chaos.scenario import ScenarioError
    from chaos.schedule import load_game_day

    console = Console()
    failed = 0
    paths: list[str | Path] = list(files or shipped_scenarios().values())
    for arg in paths:
        try:
            path = resolve_scenario(arg)
        except FileNotFoundError as exc:
            failed += 1
            _err.print(f"[red]{arg}[/red]: {exc}")
            continue
        try:
            game = load_game_day(path)
        except ScenarioError as exc:
            failed += 1
            _err.print(f"[red]invalid[/red] {exc}")  # the message names the file and field
            continue
        except OSError as exc:
            failed += 1
            _err.print(f"[red]{path}[/red]: {exc}")
            continue
        console.print(
            f"[green]ok[/green] {path}: {game.scenario.name}, {len(game.timeline)} faults"
        )
        for tf in game.timeline:
            console.print(f"    {tf.describe()}")
    if failed:
        raise typer.Exit(2)


#: The SCENARIO argument of `gameday run` and `gameday campaign`.
ScenarioArg = Annotated[
    str,
    typer.Argument(
        metavar="SCENARIO",
        help="A scenario YAML file, or a shipped scenario's name (gameday scenario list).",
        autocompletion=complete_scenario,
    ),
]


@app.command("run")
def run(
    scenario_arg: ScenarioArg,
    backend: Annotated[
        str,
        typer.Option(
            help="Where the cluster runs: local (processes), docker, or k8s (a Helm release on "
            "the local Kubernetes of 'gameday k8s up', or on --kubeconfig's cluster)."
        ),
    ] = "local",
    kubeconfig: Annotated[
        Path | None, typer.Option(help="k8s: the cluster to run on (default: the local one).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for a random schedule.")] = None,
    out: Annotated[Path, typer.Option(help="Parent of the run directory.")] = Path("runs"),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Use the cluster running in this data dir instead of starting one."),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Leave the cluster running afterwards.")] = False,
) -> None:
    """Run a game day: cluster, workload and canaries, the fault timeline, heal, checks, reports.

    Exit code 0 only when the whole plan ran and every check passed; 1 when a check failed or
    could not decide; 2 for an infrastructure error (the cluster could not start, a bad
    scenario, ...); 3 when the run was aborted (a stop condition, the orchestrator stalled past
    its lease, a fault that never ran); 130 / 143 after SIGINT / SIGTERM, which stop the run in
    order: heal, report (aborted), tear down. If this process is SIGKILLed, its watchdog heals
    and tears down what it started (unless --keep).
    """
    from chaos.assets import resolve_scenario
    from chaos.run import RunOptions, run_game_day
    from chaos.scenario import ScenarioError

    try:
        scenario = resolve_scenario(scenario_arg)
    except FileNotFoundError as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if backend not in ("local", "docker", "k8s"):
        _err.print(f"[red]unknown backend {backend!r}; use local, docker or k8s[/red]")
        raise typer.Exit(2)
    if kubeconfig is not None and backend != "k8s":
        _err.print("[red]--kubeconfig is an option of the k8s backend (--backend k8s)[/red]")
        raise typer.Exit(2)
    if backend in ("docker", "k8s") and data_dir is None and kubeconfig is None:
        from chaos.images import build_with_progress, engine, image_is_current

        try:
            if not image_is_current(engine()):
                # First use on this machine, or the source changed since the last build.
                build_with_progress(Console())
        except RuntimeError as exc:
            _err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    options = RunOptions(
        backend=backend, seed=seed, out=out, data_dir=data_dir, keep=keep, kubeconfig=kubeconfig
    )
    try:
        code = asyncio.run(run_game_day(scenario, options, Console()))
    except (ScenarioError, OSError) as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command("clean")
def clean(
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also remove every gameday cluster still running on this machine "
            "(local and Docker), not only what killed runs left behind.",
        ),
    ] = False,
) -> None:
    """Find and remove what killed runs, commands and tests left behind.

    Processes and local clusters of runs whose process (and watchdog) died, test-fixture nodes
    and Locust processes orphaned to init, clusters whose data dir is gone, Docker containers,
    networks and volumes of such runs, and stale loopback subnet claims. Clusters that someone
    is using are left alone unless --all. Exit code 0 when everything found was removed.
    """
    from rich.table import Table

    from chaos.clean import sweep

    console = Console()
    done = sweep(everything=all_, dry_run=dry_run)
    if not done:
        console.print("[green]nothing left behind[/green]")
        return
    table = Table(title="would remove" if dry_run else "removed")
    for column in ("kind", "what", "why", "result"):
        table.add_column(column, overflow="fold")
    for leftover, error in done:
        result = "-" if dry_run else ("[red]" + error + "[/red]" if error else "[green]ok[/green]")
        table.add_row(leftover.kind, leftover.name, leftover.why, result)
    console.print(table)
    if any(error for _, error in done):
        raise typer.Exit(1)


@app.command("check")
def check(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/2026...-demo.")],
) -> None:
    """Re-run every checker on a recorded run (reads only the run directory)."""
    from checks.report import exit_code, print_summary, run_checks

    if not (run_dir / "history.jsonl").exists():
        _err.print(f"[red]{run_dir} is not a run directory (no history.jsonl)[/red]")
        raise typer.Exit(2)
    verdict = run_checks(run_dir)
    print_summary(verdict, Console())
    raise typer.Exit(exit_code(verdict))


@app.command()
def campaign(
    scenario_arg: ScenarioArg,
    runs: Annotated[int, typer.Option(min=1, help="How many game days to run.")] = 10,
    seed: Annotated[
        int, typer.Option(help="The campaign's seed: each run's seed is derived from it.")
    ] = 1,
    parallel: Annotated[
        int, typer.Option(min=1, help="Runs at once (each is a whole cluster: mind the cores).")
    ] = 1,
    backend: Annotated[str, typer.Option(help="Where the clusters run: local, docker or k8s.")] = (
        "local"
    ),
    out: Annotated[Path, typer.Option(help="Parent of the campaign directory.")] = Path("runs"),
    keep_passing: Annotated[
        bool, typer.Option(help="Keep passing runs' cluster logs too (failing runs keep all).")
    ] = False,
) -> None:
    """Run a scenario many times, one derived seed each: a live progress bar, then a summary.

    The summary counts passes, failures and aborts, sums the safety findings (lost acknowledged
    writes, linearizability violations, divergent groups, runs left unhealed), gives the
    distributions of availability per fault window and of recovery times, names the slowest and
    worst runs, and lists each failing run with its `gameday replay` command. index.html in the
    campaign directory links every run's report.

    Exit code 0 only when every run passed; 1 when a run failed; 3 when one aborted; 2 when one
    could not start; 130 / 143 after SIGINT / SIGTERM, which stop the runs under way in order
    (healed, torn down): an interrupted campaign is never a pass.
    """
    from chaos.assets import resolve_scenario
    from chaos.campaign import CampaignOptions, run_campaign
    from chaos.scenario import ScenarioError

    options = CampaignOptions(
        runs=runs, seed=seed, parallel=parallel, backend=backend, out=out, keep_passing=keep_passing
    )
    try:
        path = resolve_scenario(scenario_arg)
        code = asyncio.run(run_campaign(path, options, Console()))
    except (ScenarioError, FileNotFoundError, ValueError) as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command("replay")
def replay(
    run_dir: Annotated[Path, typer.Argument(help="The run whose fault timeline to repeat.")],
    out: Annotated[Path, typer.Option(help="Parent of the new run directory.")] = Path("runs"),
) -> None:
    """Run a recorded run's scenario again with exactly the same fault timeline."""
    from chaos.run import RunOptions, run_game_day
    from chaos.schedule import timeline_from_json

    try:
        timeline = timeline_from_json((run_dir / "timeline.json").read_text())
        scenario = Path(json.loads((run_dir / "scenario.json").read_text())["source"])
    except (OSError, KeyError, ValueError) as exc:
        _err.print(f"[red]cannot replay {run_dir}: {exc}[/red]")
        raise typer.Exit(2) from None
    options = RunOptions(out=out, timeline=timeline)
    raise typer.Exit(asyncio.run(run_game_day(scenario, options, Console())))
