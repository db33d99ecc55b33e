"""Re-check a run directory offline: `python -m checks RUN_DIR [--budget SECONDS] [--no-write]`.

    $ .venv/bin/python -m checks runs/20240101-120000-az-power-off
    PASS scenario az-power-off (runs/20240101-120000-az-power-off)
    ...

Prints the summary tables, writes checks.json, junit.xml and report.html into the run directory
(unless --no-write) and exits 0 when every check passed, 1 when one failed or is unknown, and 2
when the run directory cannot be read or the reports cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from checks.linearizability import DEFAULT_BUDGET
from checks.report import exit_code, print_summary, run_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checks", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="per-key seconds")
    parser.add_argument("--no-write", action="store_true", help="print only, write no reports")
    args = parser.parse_args(argv)
    console = Console()
    if not args.run_dir.is_dir():
        console.print(f"[red]not a run directory: {args.run_dir}[/]")
        return 2
    try:
        verdict = run_checks(args.run_dir, budget=args.budget, write=not args.no_write)
    except OSError as exc:
        console.print(f"[red]cannot write the reports: {exc}[/]")
        return 2
    print_summary(verdict, console)
    return exit_code(verdict)


if __name__ == "__main__":
    sys.exit(main())
