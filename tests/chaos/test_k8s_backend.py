"""The k8s backend: its plan (no cluster needed) and, on the local Kubernetes, a real game day.

The plan tests need helm only (skipped with the reason without it). The game day (marked
``k8s``) runs on the session's local Kubernetes (tests/localkube_session.py): skipped with the
reason when it cannot run here (no root, toolchain, packages or Docker engine), a failure on CI.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chaos.backends.k8s import K8sCluster
from chaos.backends.k8s_plan import (
    INFRA_POOL,
    POOL_LABEL,
    K8sState,
    chart_values,
    default_namespace,
    placeholder_config,
    plan_power,
)
from chaos.backends.lifeline import tied_popen
from chaos.helm import CHART, Helm, HelmError
from chaos.k8s.localkube import LocalKube
from cluster.config import ClusterConfig
from tests import localkube_session

ROOT = Path(__file__).resolve().parents[2]
GAMEDAY = [sys.executable, "-m", "chaos.cli_entry"]


@pytest.fixture(scope="module")
def helm() -> Helm:
    try:
        return Helm.find()
    except HelmError as exc:
        pytest.skip(str(exc))


# --- the plan ----------------------------------------------------------------------------------


def test_a_node_goes_dark_only_when_every_pod_on_it_is_killed() -> None:
    on_node = {
        "az-a-r1": {"sn-a1", "rt-a", "gac"},
        "az-a-r2": {"sn-a2", "md-a"},
        "infra": {"toxiproxy"},
    }
    az_a = {"sn-a1", "sn-a2", "rt-a", "md-a", "gac"}
    assert plan_power(az_a, on_node, set(), True) == (["az-a-r1", "az-a-r2"], [])
    # A rack power-off takes sn-a2 only: md-a shares its node, so the pod is killed instead.
    assert plan_power({"sn-a2"}, on_node, set(), True) == ([], ["sn-a2"])
    # On a cluster whose power is not ours (EKS, ...), every kill is a pod kill.
    assert plan_power(az_a, on_node, set(), False) == ([], sorted(az_a))
    # Processes on a node that is dark already are down already.
    assert plan_power({"sn-a2", "sn-a1"}, on_node, {"az-a-r2"}, True) == ([], ["sn-a1"])
    # Toxiproxy is never part of a fault: the infra node never goes dark.
    assert plan_power(az_a | {"sn-b1"}, on_node, set(), True)[0] == ["az-a-r1", "az-a-r2"]


def test_state_fullname_is_the_charts(helm: Helm, tmp_path: Path) -> None:
    for release in ("gameday", "gd", "my-gameday-1"):
        state = K8sState(release=release, topology="3x2x1")
        docs = helm.template(CHART, release, chart_values(state))
        names = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
        assert names == {f"{state.fullname}-credentials"}


def test_local_values_render_valid_manifests_placed_for_the_local_kubernetes(helm: Helm) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    state = K8sState(topology="3x2x1", partitions=6)
    docs = helm.template(CHART, "gameday", chart_values(state), namespace="gd-test")
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    specs = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("StatefulSet", "Deployment")
    }
    toxiproxy = specs["gameday-toxiproxy"]
    assert toxiproxy["nodeSelector"] == {POOL_LABEL: INFRA_POOL}
    assert toxiproxy["tolerations"][0]["key"] == POOL_LABEL
    # Its dials to a powered-off node's pod give up within 3 s (k8s_plan.MESH_SYSCTLS); the
    # pod keeps the chart's security settings beside them.
    security = toxiproxy["securityContext"]
    assert security["sysctls"] == [{"name": "net.ipv4.tcp_syn_retries", "value": "1"}]
    assert security["runAsNonRoot"] is True
    assert "sysctls" not in specs["gameday-sn-c2"].get("securityContext", {})
    sn = specs["gameday-sn-c2"]
    assert sn["containers"][0]["imagePullPolicy"] == "Never"
    exprs = sn["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert {e["key"]: e["values"] for e in exprs} == {
        "topology.kubernetes.io/zone": ["az-c"],
        "gameday.dev/rack": ["az-c-r2"],
    }
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    config = ClusterConfig.model_validate_json(base64.b64decode(secret["data"]["cluster.json"]))
    assert config.default_partitions == 6
    assert set(config.processes) == set(placeholder_config(state).processes)


def test_create_plans_without_touching_a_cluster_and_open_finds_it(tmp_path: Path) -> None:
    data = tmp_path / "a"
    cluster = K8sCluster.create(data, "3x2x1", namespace=None)
    assert cluster.state.namespace == default_namespace(data) != default_namespace(tmp_path / "b")
    assert cluster.state.local and cluster.name == "k8s"
    again = K8sCluster.open(data)
    assert again.state == cluster.state
    assert again.process_ids("router") == ["rt-a", "rt-b", "rt-c"]
    with pytest.raises(ValueError, match="holds a 3x2x1 cluster"):
        K8sCluster.create(data, "3x3x1")
    other = tmp_path / "local"
    other.mkdir()
    placeholder_config(cluster.state).save(other / "cluster.json")
    with pytest.raises(ValueError, match="another backend"):
        K8sCluster.create(other)


# --- on the local Kubernetes -------------------------------------------------------------------


def _namespaces(kube: LocalKube) -> set[str]:
    out = kube.kubectl("get", "namespaces", "-o", "json")
    return {item["metadata"]["name"] for item in json.loads(out)["items"]}


def _run_game_day(kube: LocalKube, out: Path, log: Path, timeout: float) -> tuple[int, float]:
    """``gameday run scenarios/az-outages.yaml --backend k8s``, tied to this process: if pytest
    dies the run gets SIGTERM and stops in order (heals, tears its release down); past
    ``timeout`` it gets SIGTERM too and ``gameday run`` reports the run as interrupted."""
    argv = [*GAMEDAY, "run", "scenarios/az-outages.yaml", "--backend", "k8s", "--out", str(out)]
    env = {**os.environ, "GAMEDAY_K8S_DIR": str(kube.state_dir)}
    started = time.monotonic()
    with log.open("wb") as sink:
        proc = tied_popen(argv, signal.SIGTERM, cwd=ROOT, env=env, stdout=sink, stderr=sink)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = _stop(proc)
        except BaseException:  # Ctrl-C, pytest-timeout: the run stops in order first
            _stop(proc)
            raise
    return code, time.monotonic() - started


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the run heals, reports and tears down), SIGKILL if that takes over 3 minutes
    (its watchdog then tears down what it started)."""
    proc.terminate()
    try:
        return proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _summary(checks: dict[str, Any], code: int, elapsed: float) -> list[str]:
    """The run's verdict, every check and the availability of every window, for the session's
    summary (printed whether the test passes or not)."""
    lines = [f"az-outages game day on k8s: verdict {checks.get('verdict')} (exit {code}) "
             f"in {elapsed:.0f}s"]  # fmt: skip
    for check in checks.get("checks", []):
        lines.append(f"  check {check['name']}: {check['valid']}  {check.get('summary', '')}"[:160])
        if check["name"] == "availability":
            for w in check.get("details", {}).get("windows", []):
                ratio = "-" if w.get("ratio") is None else f"{w['ratio']:.2%}"
                p99 = "-" if w.get("p99_ms") is None else f"{w['p99_ms']:.0f} ms"
                lines.append(f"    window {w['label']}: available {ratio}, p99 {p99}")
    return lines


def _cluster_complaints(root: Path, limit: int = 8000) -> str:
    """The WARNING/ERROR/CRITICAL lines of the run's pod logs (saved at teardown), newest last,
    so that a failed run's message says what the cluster saw, not only what the run saw."""
    lines = []
    for path in sorted(root.rglob("logs/*.log")):
        said = path.read_text(errors="replace").splitlines()
        bad = [ln for ln in said if any(w in ln for w in (" WARNING ", " ERROR ", " CRITICAL "))]
        lines += [f"{path.name}: {ln}"[:300] for ln in bad[-15:]]
    text = "\n".join(lines)
    return text[-limit:] if text else "(no pod log complained)"


@pytest.mark.slow
@pytest.mark.k8s
@pytest.mark.timeout(1800)  # the session's `k8s up` (and any image build) is paid here first
def test_az_outages_game_day_on_kubernetes_passes_and_leaves_nothing(
    local_kube: LocalKube, tmp_path: Path
) -> None:
    """A real AZ power-off (az-c's nodes lose power) and an AZ partition (Toxiproxy in the
    cluster), with Locust load and every check; then the release, its volumes' claims and its
    namespace are gone, and every node has power again."""
    kube = local_kube
    before = _namespaces(kube)
    log = tmp_path / "gameday-run.log"
    code, elapsed = _run_game_day(kube, tmp_path / "runs", log, timeout=900)
    output = log.read_text(errors="replace")
    runs = sorted((tmp_path / "runs").glob("*/checks.json"))
    assert runs, (
        f"the run left no checks.json (exit {code}):\n{output[-6000:]}\n"
        f"the cluster's complaints:\n{_cluster_complaints(tmp_path)}"
    )
    checks = json.loads(runs[-1].read_text())
    localkube_session.REPORT.extend(_summary(checks, code, elapsed))
    assert code == 0, output[-6000:]
    verdicts = {c["name"]: c["valid"] for c in checks["checks"]}
    assert checks["verdict"] == "pass" and verdicts, verdicts
    assert all(v is True for n, v in verdicts.items() if n != "bank"), verdicts
    assert verdicts["bank"] is None, verdicts  # no bank traffic: not applicable
    events = [
        json.loads(line) for line in (runs[-1].parent / "events.jsonl").read_text().splitlines()
    ]
    confirmed = {e["fault"] for e in events if e["event"] == "fault_confirmed"}
    assert confirmed == {"power_off_az", "split"}, confirmed  # both outages really happened
    # Nothing left behind: no namespace of the run, every node powered and Ready.
    assert _namespaces(kube) == before
    assert all(kube.powered(n.name) for n in kube.nodes())
    assert set(kube.status().nodes.values()) == {"Ready"}
