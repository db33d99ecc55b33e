"""The CI chaos suite: every shipped scenario as a real game day, and proof the checkers bite.

``pytest -m chaos`` runs one test per scenario in scenarios/ (the nightly suite; see
.ci/nightly.yml). ``make test`` runs the short subset marked ``chaos_smoke``. A failing game day
keeps its run directory (report.html, checks.json, logs) and names it in the failure.
Deliberately broken clusters (test-only flags) must make the checkers fail.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from chaos.backends.local import LocalCluster
from chaos.run import EXIT_FAIL, EXIT_PASS, RunOptions, run_game_day

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SMOKE = {"node-power-off", "az-partition"}  # the short subset `make test` runs


def run_scenario(path: Path, out: Path, data_dir: Path | None = None) -> tuple[int, Path]:
    console = Console(record=True, width=120)
    code = asyncio.run(run_game_day(path, RunOptions(out=out, data_dir=data_dir), console))
    run_dirs = sorted(out.iterdir())
    return code, run_dirs[-1]


def checks_of(run_dir: Path) -> dict[str, object]:
    body = json.loads((run_dir / "checks.json").read_text())
    return {c["name"]: c["valid"] for c in body["checks"]}


def _params() -> list[object]:
    marks = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        extra = [pytest.mark.chaos_smoke] if path.stem in SMOKE else []
        marks.append(pytest.param(path, id=path.stem, marks=extra))
    return marks


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(900)  # a 60-120 s game day plus start-up and checks, on a busy machine
@pytest.mark.parametrize("scenario", _params())
def test_shipped_scenario_passes(scenario: Path, tmp_path: Path) -> None:
    code, run_dir = run_scenario(scenario, tmp_path / "runs")
    if code != EXIT_PASS:
        kept = Path("runs") / "failed" / run_dir.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run_dir, kept, dirs_exist_ok=True)
        pytest.fail(f"{scenario.stem}: {checks_of(run_dir)}; run directory kept in {kept}")
    for name in ("checks.json", "junit.xml", "report.html", "events.jsonl", "history.jsonl"):
        assert (run_dir / name).exists(), name
    if scenario.stem.startswith("bank"):  # the bank check must have had something to judge
        checks = json.loads((run_dir / "checks.json").read_text())["checks"]
        bank = next(c for c in checks if c["name"] == "bank")
        assert bank["details"]["transfers"]["ok"] > 0 and bank["details"]["audits_ok"] > 0, bank
        assert bank["details"]["final"]["checked"], bank
        statuses = {c["name"]: c["status"] for c in checks}
        assert statuses["linearizability"] == statuses["durability"] == "n/a", statuses


BROKEN = """
name: broken-{mode}
duration: 30s
workload: {{name: register, users: 8, keys: 5, distribution: uniform}}
steady_state: {{availability: 0.5, fault_availability: 0.1, p99_ms: 10000}}
method:
  timeline:
    - {{at: 10s, duration: 10s, fault: power_off_node, target: sn-b1}}
checks: [linearizability, durability, convergence, availability]
"""


@pytest.mark.chaos
@pytest.mark.chaos_smoke
@pytest.mark.slow
@pytest.mark.timeout(900)  # a game day on a busy machine
@pytest.mark.parametrize("mode", ["stale-reads", "ack-before-commit"])
def test_checkers_catch_a_broken_cluster(mode: str, tmp_path: Path) -> None:
    """A cluster that serves stale "consistent" reads, or acknowledges writes before a quorum
    holds them, must fail linearizability (and durability when acked writes are lost)."""
    scenario = tmp_path / f"broken-{mode}.yaml"
    scenario.write_text(BROKEN.format(mode=mode))
    cluster = LocalCluster.create(tmp_path / "cluster", "3x2x1", 4, unsafe=(mode,))  # type: ignore[arg-type]
    try:
        code, run_dir = run_scenario(scenario, tmp_path / "runs", data_dir=cluster.data_dir)
    finally:
        cluster.down()
    verdicts = checks_of(run_dir)
    assert code == EXIT_FAIL, verdicts
    assert verdicts["linearizability"] is False, verdicts


BANK_SMOKE = """
name: bank-smoke
description: A short bank game day for make test (the full one is scenarios/bank-transfers.yaml).
cluster: {{topology: 3x2x1, partitions: 4}}
workload: {{name: bank, users: 16, keys: 30, distribution: uniform, rate: 6}}
duration: 30s
steady_state: {{availability: {availability}, fault_availability: {fault}, p99_ms: 5000,
               recovery_seconds: 15}}
method:
  timeline:
    - {{at: 10s, duration: 10s, fault: power_off_node, target: sn-b1}}
checks: [linearizability, durability, convergence, availability]
"""


@pytest.mark.chaos
@pytest.mark.chaos_smoke
@pytest.mark.slow
@pytest.mark.timeout(900)  # a game day on a busy machine
def test_a_short_bank_game_day_keeps_the_books(tmp_path: Path) -> None:
    """Transfers and audits through a storage node's power-off: no money appears or vanishes,
    no audit sees a transfer half done, and the bank check judged real transfers, audits and
    the final balances; replicas converge. Availability is the full scenario's business
    (scenarios/bank-transfers.yaml, nightly): at load ~20 on a 2-core machine this short run
    kept 97% through the fault but not 95% in steady state, so it is reported, not asserted."""
    scenario = tmp_path / "bank-smoke.yaml"
    scenario.write_text(BANK_SMOKE.format(availability=0.95, fault=0.85))
    code, run_dir = run_scenario(scenario, tmp_path / "runs")
    body = json.loads((run_dir / "checks.json").read_text())
    checks = {c["name"]: c for c in body["checks"]}
    assert code in (EXIT_PASS, EXIT_FAIL) and not body.get("aborted"), body.get("aborted")
    bank = checks["bank"]
    assert bank["valid"] is True, bank
    assert bank["details"]["transfers"]["ok"] > 0 and bank["details"]["audits_ok"] > 0, bank
    assert bank["details"]["final"]["checked"], bank
    assert checks["convergence"]["valid"] is True, checks["convergence"]


BLACKOUT = """
name: blackout-{name}
duration: 50s
workload: {{name: register, users: 16, keys: 10, distribution: uniform}}
steady_state: {{availability: 0.5, fault_availability: 0.0, p99_ms: 10000, recovery_seconds: 30}}
blast_radius: {{max_azs: 3, max_nodes: 6, max_racks: 6}}
method:
  # Every storage node loses power at once: only what was fsynced remains anywhere. Late in the
  # run, so that writes were acknowledged before it even where Locust is slow to start, and
  # until its end, so that no write after power-on hides what was lost from the final reads.
  timeline:
    - {{at: 42s, duration: 8s, fault: power_loss_az, target: az-a}}
    - {{at: 42s, duration: 8s, fault: power_loss_az, target: az-b}}
    - {{at: 42s, duration: 8s, fault: power_loss_az, target: az-c, torn: true}}
checks: [linearizability, durability, convergence, availability]
"""


def run_blackout(tmp_path: Path, unsafe: tuple[str, ...]) -> tuple[int, dict[str, object]]:
    name = unsafe[0] if unsafe else "correct"
    scenario = tmp_path / f"blackout-{name}.yaml"
    scenario.write_text(BLACKOUT.format(name=name))
    cluster = LocalCluster.create(
        tmp_path / "cluster",
        "3x2x1",
        4,
        unsafe=unsafe,  # type: ignore[arg-type]
        power_layer=True,
    )
    try:
        code, run_dir = run_scenario(scenario, tmp_path / "runs", data_dir=cluster.data_dir)
    finally:
        cluster.down()
    return code, checks_of(run_dir)


@pytest.mark.chaos
@pytest.mark.chaos_smoke
@pytest.mark.slow
@pytest.mark.timeout(900)  # a game day on a busy machine
def test_durability_catches_a_cluster_that_never_fsyncs(tmp_path: Path) -> None:
    """A power loss on every node takes what was not fsynced: a cluster that acknowledges
    writes it never synced (test-only "no-fsync") must fail the durability check."""
    code, verdicts = run_blackout(tmp_path, ("no-fsync",))
    assert code == EXIT_FAIL, verdicts
    assert verdicts["durability"] is False, verdicts


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(900)  # a game day on a busy machine
def test_the_real_cluster_survives_a_blackout(tmp_path: Path) -> None:
    """The same blackout on the real cluster: every acknowledged write was fsynced on a quorum,
    so nothing is lost, keys stay linearizable and replicas converge (availability is the
    scenario's business: the whole cluster is dark for 5 s)."""
    code, verdicts = run_blackout(tmp_path, ())
    for check in ("linearizability", "durability", "convergence"):
        assert verdicts[check] is True, verdicts
    assert code in (EXIT_PASS, EXIT_FAIL), verdicts
