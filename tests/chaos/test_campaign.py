"""`gameday campaign`: seeds, reading each run's verdict, the summary, the exit code, the index."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos.campaign import (
    EXIT_ABORTED,
    EXIT_FAIL,
    EXIT_PASS,
    RunResult,
    derive_seeds,
    exit_code,
    read_result,
    summarize,
    write_index,
)
from chaos.clean import processes


def test_seeds_are_derived_reproducibly_and_all_differ() -> None:
    seeds = derive_seeds(7, 200)
    assert seeds == derive_seeds(7, 200)
    assert len(set(seeds)) == 200
    assert derive_seeds(7, 5) == seeds[:5]  # a longer campaign extends a shorter one
    assert derive_seeds(8, 5) != seeds[:5]


def fake_run(tmp_path: Path, index: int, *, lost: int = 0, ratio: float = 0.97) -> RunResult:
    run_dir = tmp_path / f"runs/{index:03d}/20261204-000000-x"
    run_dir.mkdir(parents=True)
    checks = [
        {"name": "linearizability", "valid": True, "summary": "ok", "details": {}},
        {
            "name": "durability",
            "valid": lost == 0,
            "summary": f"{lost} lost",
            "details": {"lost_write_count": lost},
        },
        {
            "name": "convergence",
            "valid": lost == 0,
            "summary": "",
            "details": {"divergent_groups": [{"diverged": ["sn-a1"]}, {"lagging": ["sn-b1"]}]},
        },
        {
            "name": "availability",
            "valid": True,
            "summary": "ok",
            "details": {
                "windows": [
                    {"label": "steady", "fault": None, "ratio": 0.99},
                    {
                        "label": "pl",
                        "fault": "power_loss_az",
                        "ratio": ratio,
                        "recovery_after_end": 2.5,
                        "ended": True,
                    },
                ]
            },
        },
    ]
    verdict = "pass" if lost == 0 else "fail"
    (run_dir / "checks.json").write_text(json.dumps({"verdict": verdict, "checks": checks}))
    code = 0 if lost == 0 else 1
    result = RunResult(index, 1000 + index, code, run_dir=str(run_dir), seconds=40.0 + index)
    read_result(result, code)
    return result


def test_a_campaign_passes_only_when_every_run_passed(tmp_path: Path) -> None:
    good = [fake_run(tmp_path, i) for i in (1, 2)]
    bad = fake_run(tmp_path, 3, lost=2, ratio=0.5)

    all_good = summarize(good, 90.0)
    mixed = summarize([*good, bad], 130.0)

    assert exit_code(all_good, None) == EXIT_PASS
    assert exit_code(mixed, None) == EXIT_FAIL
    assert exit_code(all_good, 2) == 130  # interrupted is never a pass
    assert mixed["safety"]["lost_acknowledged_writes"] == 2
    assert mixed["safety"]["divergent_groups"] == mixed["safety"]["lagging_groups"] == 3
    assert mixed["counts"]["fail"] == 1 and mixed["failing"] == [3]
    assert mixed["worst"][0] == 3 and mixed["slowest"][0] == 3
    assert mixed["availability"]["power_loss_az"]["min"] == 0.5
    assert mixed["recovery_after_end"]["median"] == 2.5
    assert "durability" in bad.reason and bad.replay_command().startswith("gameday replay ")


def test_an_aborted_or_unstarted_run_is_not_a_pass(tmp_path: Path) -> None:
    aborted = RunResult(1, 5, 3)
    read_result(aborted, 3)
    never = RunResult(2, 6)

    assert exit_code(summarize([aborted], 1.0), None) == EXIT_ABORTED
    assert exit_code(summarize([never], 1.0), None) != EXIT_PASS
    assert aborted.reason  # says why: no run directory


def test_the_index_links_every_run_and_shows_how_to_replay_failures(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path, 1), fake_run(tmp_path, 2, lost=1)]
    write_index(tmp_path, Path("x.yaml"), summarize(runs, 10.0), runs)

    page = (tmp_path / "index.html").read_text()
    assert page.count('href="runs/') == 2
    assert "gameday replay" in page and "lost acknowledged writes: 1" in page


@pytest.mark.chaos
@pytest.mark.slow
def test_an_interrupted_campaign_stops_its_runs_and_is_never_a_pass(tmp_path: Path) -> None:
    """SIGTERM while the first run is under way: that run stops in order (healed, torn down),
    no other run starts, the summary is written, and the exit code says interrupted."""
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "node-power-off.yaml"
    argv = [sys.executable, "-m", "chaos.cli_entry", "campaign", str(scenario)]
    argv += ["--runs", "3", "--out", str(tmp_path)]
    with (tmp_path / "campaign.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not list(tmp_path.glob("*/runs/*/*/events.jsonl")):
                assert proc.poll() is None, (tmp_path / "campaign.log").read_text()
                assert time.monotonic() < deadline, "the first run never started its timeline"
                time.sleep(1)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 128 + signal.SIGTERM
    body = json.loads(next(tmp_path.glob("*/campaign.json")).read_text())
    assert body["summary"]["counts"]["not run"] == 2
    assert body["summary"]["stopped_by"] == "SIGTERM"
    assert body["runs"][0]["verdict"] != "pass"
    assert body["summary"]["safety"]["runs_left_unhealed"] == 0
    left = [p.pid for p in processes() if str(tmp_path) in " ".join(p.argv)]
    assert left == [], "a run's processes outlived the campaign"
