"""Checkers that judge a game day from its run directory alone, and the reports they write.

Linearizability per key, durability of acknowledged writes, convergence of replicas and
availability per fault window; each returns valid / invalid / unknown with its evidence, and the
verdict composes them (invalid beats unknown beats valid). Only recorded artifacts are read, so
any run can be re-checked offline:

    >>> from pathlib import Path
    >>> from rich.console import Console
    >>> import checks
    >>> verdict = checks.run_checks(Path("runs/20240101-120000-az-power-off"))  # doctest: +SKIP
    >>> checks.print_summary(verdict, Console())                                # doctest: +SKIP
    >>> checks.exit_code(verdict)                                               # doctest: +SKIP
    0
"""

from checks.report import exit_code, print_summary, run_checks, write_reports
from checks.result import UNKNOWN, CheckResult, RunVerdict, Validity, compose_validity

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "RunVerdict",
    "Validity",
    "compose_validity",
    "exit_code",
    "print_summary",
    "run_checks",
    "write_reports",
]
