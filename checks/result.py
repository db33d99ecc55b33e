"""Check results and how they compose: invalid beats unknown beats valid (as in Jepsen).

A check with nothing to judge in a run (the bank check without bank traffic) is *not
applicable*: its status is "n/a", its ``valid`` is None in checks.json, and it takes no part in
the verdict (neither a pass nor an unknown).

>>> ok = CheckResult("a", True, "fine")
>>> compose_validity([ok.valid, UNKNOWN])
'unknown'
>>> guarded("boom", lambda: 1 / 0).valid   # a crashing checker is unknown, never a pass
'unknown'
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

UNKNOWN: Literal["unknown"] = "unknown"
Validity = bool | Literal["unknown"]
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one checker concluded, with the evidence in `details` (JSON-ready)."""

    name: str
    valid: Validity
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    applicable: bool = True  # False: the run gave the check nothing to judge

    @property
    def status(self) -> str:
        """ "pass", "fail", "unknown", or "n/a" (not applicable)."""
        return status_of(self.valid) if self.applicable else NOT_APPLICABLE

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "valid": self.valid if self.applicable else None,
            "status": self.status,
            "summary": self.summary,
            "seconds": round(self.seconds, 3),
            "details": json_safe(self.details),
        }


@dataclass(frozen=True, slots=True)
class RunVerdict:
    """The outcome of checking one run: overall status and each check's result (what
    checks/report.py writes and prints, and checks/html_report.py renders)."""

    status: str
    results: tuple[CheckResult, ...]
    run_dir: Path
    scenario: str
    events: tuple[dict[str, Any], ...] = ()
    aborted: str | None = None  # why the run's plan did not fully execute

    def result(self, name: str) -> CheckResult | None:
        return next((r for r in self.results if r.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.status,
            "aborted": self.aborted,
            "scenario": self.scenario,
            "run_dir": str(self.run_dir),
            "checks": [r.to_json() for r in self.results],
        }


def not_applicable(name: str, why: str, details: dict[str, Any] | None = None) -> CheckResult:
    """The result of a check that had nothing to judge (``why`` says so in the reports)."""
    return CheckResult(name, True, f"not applicable: {why}", details or {}, applicable=False)


def compose_results(results: Iterable[CheckResult]) -> Validity:
    """The validity of a set of checks: not-applicable ones take no part."""
    return compose_validity(r.valid for r in results if r.applicable)


def compose_validity(values: Iterable[Validity]) -> Validity:
    """False if any is False, else "unknown" if any is unknown, else True (also when empty)."""
    result: Validity = True
    for value in values:
        if value is False:
            return False
        if value != True:  # noqa: E712 - "unknown" (or anything unexpected) is not a pass
            result = UNKNOWN
    return result


def status_of(valid: Validity) -> str:
    if valid is True:
        return "pass"
    return "fail" if valid is False else "unknown"


def guarded(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    """Run a checker; an exception becomes an "unknown" result carrying its text."""
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:  # any crash must surface as unknown, never as a pass
        return CheckResult(
            name,
            UNKNOWN,
            f"checker crashed: {type(exc).__name__}: {exc}",
            {"exception": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
            seconds=time.monotonic() - started,
        )
    if result.valid not in (True, False, UNKNOWN):
        result = replace(result, valid=UNKNOWN)
    return replace(result, seconds=time.monotonic() - started)


def json_safe(value: Any) -> Any:
    """A copy where non-finite floats become None and tuples/sets become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def compact(details: dict[str, Any]) -> dict[str, Any]:
    """Details without per-second series and tracebacks (for text reports)."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        if key in ("series", "traceback"):
            continue
        out[key] = compact(value) if isinstance(value, dict) else value
    return out


def drift_text(event: dict[str, Any]) -> str:
    """An event's timing against its plan, for reports: ``+0.12`` s of drift, or, for a fault
    ended before its planned end, ``cut short by abort`` (an early heal is not drift)."""
    if event.get("cut_short") is not None:
        by = str(event.get("cut_short_by") or "")
        cause = "the run's end" if by in ("", "the run's end") else "abort"
        return f"cut short by {cause} ({float(event['cut_short']):.1f} s early)"
    drift = event.get("drift")
    if drift is None:
        return ""
    if event.get("event") == "fault_end" and float(drift) < -0.5:  # a run recorded before
        return f"cut short ({-float(drift):.1f} s early)"  # cut_short was: never early drift
    return f"{float(drift):+.2f}"
