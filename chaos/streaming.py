"""Running a long setup command and following its output, line by line, as it comes.

Building toxiproxy-server, a debootstrap base, wheels or the Kubernetes toolchain takes minutes;
the user sees each line as it comes (a spinner, a progress event), and a failure names the
command, its exit code and its last lines. A Ctrl-C or SIGTERM while it runs stops the command
too: nothing keeps building after gameday gave up.

    code, lines = run_streaming(["go", "install", "-v", pkg], on_line=print)
    if code != 0:
        raise SetupError(failure(["go", ...], code, lines))   # "go exited with 1:\n..."
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path


def run_streaming(
    argv: list[str], on_line: Callable[[str], None], env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run ``argv`` (no stdin, stderr into stdout), calling ``on_line`` with each non-blank
    output line; returns its exit code and every such line."""
    lines: list[str] = []
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                lines.append(line)
                on_line(line)
    except BaseException:  # Ctrl-C, SIGTERM, a failing callback: stop the command too
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
        raise
    return proc.wait(), lines


def failure(argv: list[str], code: int, lines: list[str], last: int = 12, indent: str = "") -> str:
    """``<program> exited with <code>:`` and the command's last lines, for an error."""
    tail = "\n".join(f"{indent}{line}" for line in lines[-last:])
    return f"{Path(argv[0]).name} exited with {code}:\n{tail}"
