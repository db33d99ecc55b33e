"""Installing what game days need besides Python: ``gameday setup toxiproxy|docker|k8s``.

The one way to get each prerequisite; the Makefile's ``toxiproxy`` and ``docker-engine`` targets
call these commands, and ``gameday doctor`` prints them as the fix for whatever is missing.

    gameday setup toxiproxy        # go install the real Toxiproxy server next to this Python
    gameday setup docker           # docker.io + debootstrap from Debian, start dockerd (root)
    gameday setup k8s              # k8s/packages.sh + k8s/toolchain.sh (as make k8s-toolchain)

Each streams what the installer says under a spinner with the elapsed time, and fails with the
installer's last lines and exit code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from chaos.cli_common import fails_on
from chaos.streaming import failure, run_streaming

TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_PACKAGE = f"{TOXIPROXY_MODULE}/cmd/server@{TOXIPROXY_VERSION}"
GO_FALLBACKS = ("/usr/local/go/bin/go",)  # where the official Go tarball puts it


class SetupError(RuntimeError):
    """An install step failed; the message says which, why, and the installer's last lines."""


def find_go() -> Path | None:
    """``go`` on PATH, else the official tarball's location; None when neither exists."""
    found = shutil.which("go")
    if found:
        return Path(found)
    return next((Path(p) for p in GO_FALLBACKS if os.access(p, os.X_OK)), None)


def default_bin_dir() -> Path:
    """Where toxiproxy-server goes: beside this Python (the venv's bin), where it is found first."""
    return Path(sys.executable).parent


# --- running an installer with progress ------------------------------------------------------


def run_with_progress(
    argv: list[str],
    title: str,
    console: Console,
    env: dict[str, str] | None = None,
    echo: Callable[[str], bool] = lambda line: True,
) -> list[str]:
    """Run ``argv`` under a spinner showing the elapsed time and its latest output line.

    Lines for which ``echo`` is true are also printed for good (so CI logs keep them). Returns
    every output line; SetupError with the last ones when the command fails.
    """
    started = time.monotonic()
    with console.status(f"[bold]{title}[/bold]") as status:

        def show(line: str) -> None:
            if echo(line):
                console.print(f"  {line}", markup=False, highlight=False)
            elapsed = time.monotonic() - started
            short = line if len(line) <= 60 else line[:57] + "..."
            status.update(f"[bold]{title}[/bold] [dim]{elapsed:.0f}s[/dim] {short}")

        code, lines = run_streaming(argv, show, env)
    if code != 0:
        raise SetupError(failure(argv, code, lines, indent="  "))
    return lines


# --- the installers --------------------------------------------------------------------------


def install_toxiproxy(dest: Path, console: Console) -> Path:
    """``go install`` the Toxiproxy server into a scratch dir, then move it to dest."""
    go = find_go()
    if go is None:
        raise SetupError(
            "Go is needed to build toxiproxy-server, but neither 'go' on PATH nor "
            f"{GO_FALLBACKS[0]} exists: install Go 1.22+ (https://go.dev/dl/, e.g. "
            "tar -C /usr/local -xzf go1.*.linux-amd64.tar.gz) and retry"
        )
    dest.mkdir(parents=True, exist_ok=True)
    if not os.access(dest, os.W_OK):
        raise SetupError(f"cannot write to {dest}: pass --dest DIR (a directory on your PATH)")
    with tempfile.TemporaryDirectory(prefix="gameday-toxiproxy-") as tmp:
        lines = run_with_progress(
            # Stamp the version: a plain `go install` leaves Toxiproxy's Version at "git",
            # which is what `toxiproxy-server -version` and `gameday doctor` would show.
            [
                str(go),
                "install",
                "-v",
                f"-ldflags=-X {TOXIPROXY_MODULE}.Version={TOXIPROXY_VERSION}",
                TOXIPROXY_PACKAGE,
            ],
            f"building toxiproxy-server {TOXIPROXY_VERSION} with {go} (about half a minute)",
            console,
            env={"GOBIN": tmp},
            echo=lambda line: not line.startswith(("github.com/", "golang.org/", "internal/")),
        )
        built = Path(tmp) / "server"
        if not built.exists():
            raise SetupError(f"go install finished but built nothing ({len(lines)} lines)")
        target = dest / "toxiproxy-server"
        shutil.move(str(built), str(target))
    return target


def install_docker(console: Console) -> None:
    """docker/engine.sh: docker.io + debootstrap from Debian when missing, then dockerd."""
    from chaos.assets import asset

    run_with_progress(
        ["bash", str(asset("docker") / "engine.sh")], "setting up the Docker engine", console
    )


def install_k8s(console: Console) -> Path:
    """What the k8s backend provides (as ``make k8s-toolchain``): k8s/packages.sh (Debian
    packages the nodes run on; root) then k8s/toolchain.sh (kube-*, kubectl, helm, ... built
    into their versioned cache). Returns the toolchain's bin directory."""
    from chaos.assets import asset

    k8s = asset("k8s")
    if (k8s / "packages.sh").exists():
        run_with_progress(["bash", str(k8s / "packages.sh")], "Debian packages for k8s", console)
    lines = run_with_progress(
        ["bash", str(k8s / "toolchain.sh")],
        "building the Kubernetes toolchain (from scratch 12-15 min on 2 cores; cached: instant)",
        console,
    )
    return Path(lines[-1]) if lines else Path()


# --- the command line ------------------------------------------------------------------------

setup_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Install what game days need: Toxiproxy, a Docker engine, the Kubernetes toolchain."
    " [cyan]gameday doctor[/cyan] says which are missing.",
)

_err = Console(stderr=True)


@setup_app.command("toxiproxy")
def setup_toxiproxy(
    dest: Annotated[
        Path | None,
        typer.Option(help="Directory for toxiproxy-server; default: beside this Python."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if one is installed.")] = False,
) -> None:
    """Build the real Toxiproxy server with Go and install it where gameday finds it."""
    from chaos.backends.local import toxiproxy_binary

    console = Console()
    target_dir = dest or default_bin_dir()
    if not force:
        found: Path | None = dest / "toxiproxy-server" if dest else None
        if found is None:
            with contextlib.suppress(FileNotFoundError):
                found = toxiproxy_binary()
        if found is not None and os.access(found, os.X_OK):
            console.print(f"[green]toxiproxy-server is installed:[/green] {found}")
            return
    with fails_on(SetupError, prefix="setup toxiproxy failed:"):
        target = install_toxiproxy(target_dir, console)
    console.print(f"[green]installed[/green] {target}")


@setup_app.command("docker")
def setup_docker() -> None:
    """Install docker.io and debootstrap from Debian when missing and start dockerd (root)."""
    console = Console()
    with fails_on(SetupError, prefix="setup docker failed:"):
        install_docker(console)
    console.print("[green]the Docker engine runs[/green]")


@setup_app.command("k8s")
def setup_k8s() -> None:
    """Debian packages for the nodes, then kube-apiserver, kubelet, kubectl, helm, ... built from
    the Go module proxy into ~/.cache/gameday/k8s (cached: instant)."""
    console = Console()
    with fails_on(SetupError, prefix="setup k8s failed:"):
        where = install_k8s(console)
    console.print(f"[green]the Kubernetes toolchain is in[/green] {where}")
