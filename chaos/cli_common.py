"""What the ``gameday`` subcommands share: where a cluster lives by default, and how a
command ends on an error it expects.

    with fails_on(SetupError, "setup docker failed:"):
        install_docker(console)      # SetupError: "setup docker failed: <why>" on stderr, exit 1
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

#: The data dir of the cluster that ``gameday cluster up`` starts when given none.
DEFAULT_DATA_DIR = Path(".gameday/cluster")

_err = Console(stderr=True)


@contextlib.contextmanager
def fails_on(*errors: type[Exception], prefix: str = "", code: int = 1) -> Iterator[None]:
    """Run the body; one of ``errors`` is printed in red on stderr (after ``prefix``, when
    given) and ends the command with exit ``code``, without a traceback."""
    try:
        yield
    except errors as exc:
        _err.print(f"[red]{prefix}[/red] {exc}" if prefix else f"[red]{exc}[/red]")
        raise typer.Exit(code) from None
