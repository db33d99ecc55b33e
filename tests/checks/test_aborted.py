"""A run whose plan did not fully execute is `aborted`: never a pass, in every report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from checks import exit_code, run_checks
from checks.report import EXIT_ABORTED, EXIT_FAIL
from tests.checks.test_report import make_run


def _rewrite_end(run: Path, end: dict[str, object] | None) -> None:
    path = run / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()]
    events = [e for e in events if e["event"] != "run_end"]
    if end is not None:
        events.append({"time": 35.0, "event": "run_end", **end})
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_a_stop_condition_makes_an_otherwise_clean_run_aborted(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    reason = "stop condition: canary availability 12% below 50% for 5s"
    _rewrite_end(run, {"aborted": reason, "planned": 3, "executed": 1})
    verdict = run_checks(run)
    assert all(r.status in ("pass", "n/a") for r in verdict.results)  # the checks held
    assert verdict.status == "aborted" and verdict.aborted == reason
    assert exit_code(verdict) == EXIT_ABORTED != 0

    data = json.loads((run / "checks.json").read_text())
    assert data["verdict"] == "aborted" and data["aborted"] == reason
    root = ET.parse(run / "junit.xml").getroot()
    failure = root.find(".//testcase[@name='plan-executed']/failure")
    assert failure is not None and failure.get("message") == reason
    assert root.get("failures") == "1"
    html = (run / "report.html").read_text()
    assert "ABORTED" in html and "canary availability 12% below 50%" in html


def test_a_run_without_run_end_was_killed_and_is_aborted(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    _rewrite_end(run, None)
    verdict = run_checks(run)
    assert verdict.status == "aborted" and "never finished" in (verdict.aborted or "")


def test_a_failed_check_outranks_the_abort(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", lose_write=True)
    _rewrite_end(run, {"aborted": "interrupted by SIGTERM"})
    verdict = run_checks(run)
    assert verdict.status == "fail" and verdict.aborted == "interrupted by SIGTERM"
    assert exit_code(verdict) == EXIT_FAIL
    data = json.loads((run / "checks.json").read_text())
    assert data["aborted"] == "interrupted by SIGTERM"


def test_a_complete_run_is_not_aborted(tmp_path: Path) -> None:
    verdict = run_checks(make_run(tmp_path / "run"))
    assert verdict.status == "pass" and verdict.aborted is None
    root = ET.parse(tmp_path / "run" / "junit.xml").getroot()
    assert root.find(".//testcase[@name='plan-executed']/failure") is None


def test_a_fault_the_abort_ended_early_is_cut_short_not_negative_drift(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from checks.report import print_summary

    run = make_run(tmp_path / "run")
    path = run / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()]
    ends = [e for e in events if e["event"] == "fault_end"]
    assert ends
    for e in ends:  # as the orchestrator records a fault an abort healed 92.5 s early
        e.pop("drift", None)
        e.update(cut_short=92.5, cut_short_by="interrupted by SIGTERM")
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    _rewrite_end(run, {"aborted": "interrupted by SIGTERM", "planned": 1, "executed": 1})
    verdict = run_checks(run)
    out = StringIO()
    print_summary(verdict, Console(file=out, width=200))
    assert "cut short by abort (92.5 s early)" in out.getvalue()
    assert "-92.5" not in out.getvalue()
    html = (run / "report.html").read_text()
    assert "cut short by abort (92.5 s early)" in html and "-92.5" not in html
