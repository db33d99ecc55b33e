"""run_checks on whole run directories: checks.json, junit.xml, report.html and the summary."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.console import Console

from checks import exit_code, print_summary, run_checks
from tests.checks.helpers import event, op, write_jsonl

AZS = ("az-a", "az-b", "az-c")


def make_run(
    path: Path, *, lose_write: bool = False, diverge: bool = False, stale_read: bool = False
) -> Path:
    """A 60 s run: az-a powered off from 20 s to 30 s, requests time out from 20 s to 22 s."""
    path.mkdir(parents=True, exist_ok=True)
    scenario = {"name": "az-power-off", "slos": {"availability": 0.8, "p99_ms": 500}}
    (path / "scenario.json").write_text(json.dumps(scenario))
    fault = {"fault": "power_off_az", "targets": ["az-a"]}
    write_jsonl(
        path / "events.jsonl",
        [
            event(0.0, "run_start"),
            event(20.0, "fault_start", "f1", **fault, detail={"nodes": ["sn-a1", "sn-a2"]}),
            event(20.3, "fault_confirmed", "f1", **fault),
            event(30.0, "fault_end", "f1", **fault),
            event(60.0, "run_end"),
        ],
    )
    records: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    for i in range(1200):  # one op every 50 ms, 10 ms each: a sequential history
        t = i * 0.05
        key, process = f"k{i % 3}", f"w{i % 4}"
        down = 20 <= t < 22
        if i % 2:
            records += op(
                process,
                "read",
                None,
                t,
                t + 0.01,
                "info" if down else "ok",
                key=key,
                result=state.get(key),
            )
        else:
            records += op(process, "write", i, t, t + 0.01, "info" if down else "ok", key=key)
            if not down:
                state[key] = i
    if stale_read:  # the last op reads k2; make it return k2's first value, long overwritten
        records[-1]["value"] = 2
    write_jsonl(path / "history.jsonl", records)
    canary = []
    for second in range(60):
        for az in AZS:
            for router in ("rt-a", "rt-b", "rt-c"):
                bad = 20 <= second < 30 and "a" in (az[-1], router[-1])
                canary += op(
                    f"c-{az}-{router}",
                    "get",
                    None,
                    second,
                    second + 0.005,
                    "info" if bad else "ok",
                    key="canary",
                    result=None,
                    az=az,
                    router=router,
                )
    write_jsonl(path / "canary.jsonl", sorted(canary, key=lambda r: r["time"]))
    final = dict(state)
    if lose_write:
        final["k0"] = 0
    (path / "final_reads.json").write_text(json.dumps(final))
    digest = {"applied": 400, "digest": "d1"}
    groups = {g: {f"sn-{az}1": dict(digest) for az in AZS} for g in ("g0", "g1")}
    if diverge:
        groups["g1"]["sn-az-b1"]["digest"] = "d2"
    (path / "digests.json").write_text(json.dumps(groups))
    return path


def junit(path: Path) -> ET.Element:
    return ET.parse(path / "junit.xml").getroot()


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "@import" not in html and "url(" not in html
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html


def test_passing_run_writes_all_three_reports(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    verdict = run_checks(run)
    assert verdict.status == "pass", [r.summary for r in verdict.results]
    assert exit_code(verdict) == 0

    data = json.loads((run / "checks.json").read_text())
    assert data["verdict"] == "pass" and data["scenario"] == "az-power-off"
    assert [c["name"] for c in data["checks"]] == [
        "linearizability",
        "durability",
        "convergence",
        "availability",
        "bank",
    ]
    # No bank traffic in this run: the bank check is not applicable, never a pass.
    assert all(c["valid"] is True for c in data["checks"] if c["name"] != "bank")
    [bank] = [c for c in data["checks"] if c["name"] == "bank"]
    assert bank["valid"] is None and bank["status"] == "n/a", bank

    root = junit(run)
    cases = root.findall(".//testcase")
    assert len(cases) == 6 and root.get("failures") == "0" and root.get("skipped") == "1"
    assert cases[0].get("name") == "plan-executed"  # then one per check
    assert not root.findall(".//failure")
    [skipped] = root.findall(".//testcase[@name='bank']/skipped")
    assert (skipped.get("message") or "").startswith("not applicable: ")
    console = Console(record=True, width=200)
    print_summary(verdict, console)
    assert "n/a" in console.export_text()

    html = (run / "report.html").read_text()
    assert_self_contained(html)
    assert "power_off_az az-a" in html  # the fault window label on the plots and tables
    assert html.count("<svg") == 4  # throughput, latency, availability, canaries per AZ
    assert "fault_confirmed" in html and "az-power-off" in html
    assert ">N/A</span>" in html  # the bank check's badge


def test_failing_run_reports_failures(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", lose_write=True, diverge=True, stale_read=True)
    verdict = run_checks(run)
    assert verdict.status == "fail" and exit_code(verdict) == 1
    statuses = {r.name: r.status for r in verdict.results}
    assert statuses == {
        "linearizability": "fail",
        "durability": "fail",
        "convergence": "fail",
        "availability": "pass",
        "bank": "n/a",  # no bank operations: nothing to check
    }
    lin = verdict.result("linearizability")
    assert lin is not None and lin.details["invalid_keys"][0]["key"] == "k2"
    root = junit(run)
    failures = root.findall(".//failure")
    assert root.get("failures") == "3" and len(failures) == 3
    assert any("sn-az-b1" in (f.get("message") or "") for f in failures)
    assert json.loads((run / "checks.json").read_text())["verdict"] == "fail"
    html = (run / "report.html").read_text()
    assert_self_contained(html)
    assert "lost" in html and "FAIL" in html


def test_crashing_checker_is_unknown_never_a_pass(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "digests.json").write_text("{not json")
    verdict = run_checks(run)
    convergence = verdict.result("convergence")
    assert convergence is not None and convergence.valid == "unknown"
    assert "JSONDecodeError" in convergence.summary
    assert verdict.status == "unknown" and exit_code(verdict) == 1
    root = junit(run)
    assert root.get("errors") == "1"
    [error] = root.findall(".//testcase[@name='convergence']/error")
    assert "JSONDecodeError" in (error.get("message") or "")
    console = Console(record=True, width=200)
    print_summary(verdict, console)
    assert "unknown" in console.export_text()


def test_empty_run_directory_is_unknown_with_skipped_testcases(tmp_path: Path) -> None:
    verdict = run_checks(tmp_path)
    assert verdict.status == "unknown" and exit_code(verdict) == 1
    root = junit(tmp_path)
    assert root.get("skipped") == "5"
    assert len(root.findall(".//skipped")) == 5
    assert json.loads((tmp_path / "checks.json").read_text())["verdict"] == "unknown"
    assert_self_contained((tmp_path / "report.html").read_text())


def test_print_summary_tables(tmp_path: Path) -> None:
    verdict = run_checks(make_run(tmp_path / "run"), write=False)
    assert not (tmp_path / "run" / "checks.json").exists()
    console = Console(record=True, width=200)
    print_summary(verdict, console)
    text = console.export_text()
    assert "PASS" in text and "az-power-off" in text
    for title in ("Checks", "Availability per fault window", "Fault timeline"):
        assert title in text
    assert "power_off_az az-a" in text and "fault_confirmed" in text
    assert "linearizability" in text and "steady" in text


def test_module_entry_point_exit_codes(tmp_path: Path, capsys: Any) -> None:
    from checks.__main__ import main

    assert main([str(make_run(tmp_path / "good"))]) == 0
    assert main([str(make_run(tmp_path / "bad", lose_write=True)), "--no-write"]) == 1
    assert not (tmp_path / "bad" / "checks.json").exists()
    assert main([str(tmp_path / "missing")]) == 2
    assert "durability" in capsys.readouterr().out


def test_bank_run_is_judged_by_the_bank_check_alone(tmp_path: Path) -> None:
    """A bank game day's history has transfers and audits, no registers: linearizability and
    durability are not applicable (never a pass, never an unknown that fails every such run),
    and the bank check judges the audits and the final balances."""
    run = make_run(tmp_path / "run")
    scenario = {"name": "bank-transfers", "workload": {"name": "bank"}}
    (run / "scenario.json").write_text(json.dumps(scenario))
    audit = {"accounts": ["a", "b"], "initial": 100}
    records = op("p0", "transfer", ["a", "b", 10], 1.0, 1.01, key="a")
    records += op("p1", "audit", audit, 2.0, 2.01, key="")
    records[-1]["value"] = {"a": 90, "b": 110}  # an audit completes with the balances read
    write_jsonl(run / "history.jsonl", records)
    (run / "final_reads.json").write_text(json.dumps({"a": "90", "b": "110"}))
    verdict = run_checks(run)
    statuses = {r.name: r.status for r in verdict.results}
    assert statuses["linearizability"] == statuses["durability"] == "n/a", statuses
    assert statuses["bank"] == "pass" and statuses["convergence"] == "pass", statuses
    # The same run with half a transfer seen by the audit fails on the bank check.
    records[-1]["value"] = {"a": 90, "b": 100}
    write_jsonl(run / "history.jsonl", records)
    assert run_checks(run).status == "fail"
