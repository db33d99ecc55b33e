"""Run every checker on a run directory and write the verdict for machines, CI and people.

    >>> verdict = run_checks(Path("runs/20240101-120000-az-power-off"))   # doctest: +SKIP
    >>> print_summary(verdict, Console())                                 # doctest: +SKIP
    >>> sys.exit(exit_code(verdict))                                      # doctest: +SKIP

`run_checks` writes, next to the artifacts it read:

- `checks.json`: `{"verdict": "pass"|"fail"|"unknown", "scenario": str, "checks": [{"name",
  "valid": true|false|"unknown"|null, "status": "pass"|"fail"|"unknown"|"n/a", "summary",
  "seconds", "details"}]}` (``null`` / "n/a": the check was not applicable to this run, e.g. the
  bank check without bank traffic);
- `junit.xml`: one testsuite, one testcase per check; invalid -> `<failure>`, a crashed checker
  -> `<error>`, other unknowns -> `<skipped message="unknown: ...">`, not applicable ->
  `<skipped message="not applicable: ...">`;
- `report.html`: a self-contained page (inline SVG, no network) with plots and tables.

The verdict composes the applicable checks as Jepsen does: fail if any is invalid, else unknown
if any is unknown, else pass. Exit codes: 0 pass, 1 fail or unknown (2, infrastructure errors,
is the caller's).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from checks import availability, bank, convergence, durability, linearizability
from checks.html_report import render_html
from checks.result import (
    NOT_APPLICABLE,
    CheckResult,
    RunVerdict,
    compact,
    compose_results,
    drift_text,
    guarded,
    json_safe,
    status_of,
)
from checks.rundir import RunDir

CHECKS_JSON = "checks.json"
JUNIT_XML = "junit.xml"
REPORT_HTML = "report.html"
STYLES = {
    "pass": "bold green",
    "fail": "bold red",
    "unknown": "bold yellow",
    "aborted": "bold magenta",
    NOT_APPLICABLE: "dim",
}
EXIT_PASS, EXIT_FAIL, EXIT_ABORTED = 0, 1, 3  # 2 (infrastructure error) is the caller's


def checkers(budget: float) -> list[tuple[str, Callable[[RunDir], CheckResult]]]:
    """The checkers run_checks runs, in report order."""
    return [
        (linearizability.NAME, lambda run: linearizability.check(run, budget=budget)),
        (durability.NAME, durability.check),
        (convergence.NAME, convergence.check),
        (availability.NAME, availability.check),
        (bank.NAME, bank.check),
    ]


def run_checks(
    run_dir: Path, *, budget: float = linearizability.DEFAULT_BUDGET, write: bool = True
) -> RunVerdict:
    """Check a run directory; with `write`, put checks.json, junit.xml and report.html in it."""
    run = RunDir(run_dir)
    results = tuple(guarded(name, partial(check, run)) for name, check in checkers(budget))
    try:
        events = tuple(run.events)
        scenario = run.name
    except (OSError, ValueError):
        events, scenario = (), run.path.name
    aborted = aborted_reason(events)
    status = status_of(compose_results(results))
    verdict = RunVerdict(
        # A violation found is the strongest news; otherwise a run cut short never passes.
        status if status == "fail" or aborted is None else "aborted",
        results,
        run.path,
        scenario,
        events,
        aborted,
    )
    if write:
        write_reports(verdict)
    return verdict


def write_reports(verdict: RunVerdict) -> None:
    """checks.json, junit.xml and report.html in the verdict's run directory."""
    out = verdict.run_dir
    (out / CHECKS_JSON).write_text(
        json.dumps(json_safe(verdict.to_json()), indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    (out / JUNIT_XML).write_bytes(junit_xml(verdict))
    (out / REPORT_HTML).write_text(render_html(verdict), encoding="utf-8")


def aborted_reason(events: tuple[dict[str, Any], ...]) -> str | None:
    """Why the run's plan did not fully execute, from its events; None when it did.

    The orchestrator says so in ``run_end`` (a stop condition, a signal, a lapsed lease, faults
    that never ran); a run that started and has no ``run_end`` was killed mid-way.
    """
    if not events:
        return None
    end = next((e for e in reversed(events) if e.get("event") == "run_end"), None)
    if end is None:
        if any(e.get("event") == "run_start" for e in events):
            return "the run never finished (no run_end event): the orchestrator was killed"
        return None
    reason = end.get("aborted")
    return str(reason) if reason else None


def exit_code(verdict: RunVerdict) -> int:
    """0 when every check passed, 1 when one failed or is unknown, 3 when the run was aborted."""
    if verdict.status == "pass":
        return EXIT_PASS
    return EXIT_ABORTED if verdict.status == "aborted" else EXIT_FAIL


def junit_xml(verdict: RunVerdict) -> bytes:
    """JUnit XML: one testcase per check."""
    results = verdict.results
    crashed = [r for r in results if r.status == "unknown" and "exception" in r.details]
    counts = {
        "tests": str(len(results) + 1),
        "failures": str(
            sum(1 for r in results if r.status == "fail") + (verdict.aborted is not None)
        ),
        "errors": str(len(crashed)),
        "skipped": str(
            sum(1 for r in results if r.status in ("unknown", NOT_APPLICABLE)) - len(crashed)
        ),
        "time": f"{sum(r.seconds for r in results):.3f}",
    }
    suites = ET.Element("testsuites", {"name": "gameday", **counts})
    suite = ET.SubElement(suites, "testsuite", {"name": f"gameday.{verdict.scenario}", **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (("run_dir", str(verdict.run_dir)), ("verdict", verdict.status)):
        ET.SubElement(props, "property", {"name": name, "value": value})
    plan = ET.SubElement(
        suite, "testcase", {"classname": "gameday.run", "name": "plan-executed", "time": "0"}
    )
    if verdict.aborted is not None:  # an interrupted or cut-short run is never a pass
        element = ET.SubElement(plan, "failure", {"message": verdict.aborted, "type": "aborted"})
        element.text = f"the run was aborted: {verdict.aborted}"
    ET.SubElement(plan, "system-out").text = verdict.aborted or "every planned fault ran"
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": "gameday.checks", "name": result.name, "time": f"{result.seconds:.3f}"},
        )
        text = json.dumps(json_safe(compact(result.details)), indent=2)
        if result.status == "fail":
            element = ET.SubElement(case, "failure", {"message": result.summary, "type": "invalid"})
            element.text = text
        elif result in crashed:
            element = ET.SubElement(case, "error", {"message": result.summary, "type": "crash"})
            element.text = str(result.details.get("traceback", ""))
        elif result.status == "unknown":
            ET.SubElement(case, "skipped", {"message": f"unknown: {result.summary}"})
        elif result.status == NOT_APPLICABLE:  # the summary opens with "not applicable: "
            ET.SubElement(case, "skipped", {"message": result.summary, "type": "not-applicable"})
        ET.SubElement(case, "system-out").text = result.summary
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data


def _num(value: Any, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _recovery(entry: dict[str, Any]) -> str:
    if entry["id"] == availability.STEADY:
        return ""
    start = entry.get("recovery_after_start")
    end = entry.get("recovery_after_end")
    start_text = "never" if start is None else f"{start:.1f}"
    end_text = "-" if not entry.get("ended") else ("never" if end is None else f"{end:.1f}")
    return f"{start_text}/{end_text}"


def print_summary(verdict: RunVerdict, console: Console) -> None:
    """Checks, availability per fault window and the fault timeline, as rich tables."""
    style = STYLES.get(verdict.status, "bold")
    console.print(
        f"[{style}]{verdict.status.upper()}[/] scenario [bold]{verdict.scenario}[/]"
        f" [dim]({verdict.run_dir})[/]"
    )
    if verdict.aborted is not None:
        console.print(f"[{STYLES['aborted']}]aborted:[/] {verdict.aborted}")
    checks = Table(title="Checks")
    checks.add_column("check", no_wrap=True)
    checks.add_column("verdict", no_wrap=True)
    checks.add_column("summary", overflow="fold")
    for r in verdict.results:
        checks.add_row(r.name, f"[{STYLES[r.status]}]{r.status}[/]", r.summary)
    console.print(checks)

    avail = verdict.result(availability.NAME)
    windows = (avail.details.get("windows") if avail else None) or []
    if windows:
        table = Table(
            title="Availability per fault window", box=box.SIMPLE_HEAD, padding=0, pad_edge=False
        )
        table.add_column("window", overflow="fold", min_width=16)
        for name in ("intended", "served", "avail", "thru", "client", "p99 ms", "recov s"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("SLO", no_wrap=True)
        for w in windows:
            span = "" if w["start"] is None else f" {w['start']:.1f}-{w['end']:.1f}s"
            table.add_row(
                w["label"] + span,
                str(w.get("intended", w["requests"])),
                str(w.get("served", "-")),
                _num(w["ratio"], ".2%"),
                _num(w.get("throughput_ratio"), ".0%"),
                _num(w.get("client_time"), ".0%"),
                _num(w["p99_ms"], ".0f"),
                _recovery(w),
                "[green]met[/]" if w.get("meets_slo") else "[red]missed[/]",
            )
        console.print(table)
        console.print(
            "[dim]avail: ops served within their deadline / ops intended; thru: served per"
            " second against steady state; client: client-seconds with every intended op"
            " served; p99 from the intended start[/]"
        )
        if avail is not None and avail.details.get("note"):
            color = "dim" if avail.details.get("loop") == availability.OPEN_LOOP else "yellow"
            console.print(f"[{color}]{avail.details['note']}[/]")
        console.print("[dim]recov s: after the fault started / after it ended[/]")
        for alarm in (avail.details.get("alarms") or []) if avail else []:
            end = "still firing" if alarm["end"] is None else f"{alarm['end']:.1f}"
            console.print(
                f"[yellow]alarm[/] {alarm['start']:.1f}-{end} s, peak error rate"
                f" {alarm['peak_error_rate']:.0%}, faults: {', '.join(alarm['faults']) or '-'}"
            )

    if verdict.events:
        table = Table(title="Fault timeline", box=box.SIMPLE_HEAD)
        table.add_column("time s", justify="right", no_wrap=True)
        table.add_column("drift s", justify="right")
        for name in ("event", "fault id", "fault", "targets"):
            table.add_column(name, overflow="fold")
        for e in verdict.events:
            table.add_row(
                _num(e.get("time"), ".2f"),
                drift_text(e),
                str(e.get("event", "")),
                str(e.get("fault_id") or ""),
                str(e.get("fault") or ""),
                ", ".join(str(t) for t in e.get("targets") or []),
            )
        console.print(table)
