"""What the ``gameday`` subcommands share: where a cluster lives by default, how a command
ends on an error it expects, and how SIGTERM stops a long one.

    with fails_on(SetupError, "setup docker failed:"):
        install_docker(console)      # SetupError: "setup docker failed: <why>" on stderr, exit 1
    with sigterm_interrupts():
        hold_a_fault()               # SIGTERM: KeyboardInterrupt here, as Ctrl-C
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def sigterm_interrupts(note: Callable[[int], object] | None = None) -> Iterator[None]:
    """Within the body SIGTERM stops the command as Ctrl-C does: KeyboardInterrupt (after
    ``note(signum)``, when given). The handler in place before is put back on every way out
    (return, error, Ctrl-C), so a command run in-process (a test suite) leaves the process's
    SIGTERM as it found it: pytest used to keep the handler and ignore a CI's SIGTERM."""

    def interrupt(signum: int, _frame: object) -> None:
        if note is not None:
            note(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:  # None: a handler not set from Python (none to put back), so the default
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
