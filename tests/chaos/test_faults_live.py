"""Faults on the real local cluster with the real Toxiproxy: inject, observe, heal.

One cluster for the module; every test heals what it did, and checks the cluster is healthy
again, so the next one starts clean.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from chaos.backends.local import LocalCluster
from chaos.cli import app
from chaos.faults import ClusterView, groups_from_status, make_fault
from chaos.faults import plan as plan_fault
from chaos.nemesis import Nemesis, recorded_faults
from chaos.probe import probe
from tests import waiting
from tests.conftest import client_for
from tests.waiting import bytes_under, wait_exit

pytestmark = pytest.mark.slow
TABLE = "faults"
# Bounds, not deadlines: a probe through a working link, and writes that wait out an election,
# return as soon as they get through; beside CPU hogs that is later, not never.
REACH = 30.0
WRITES_BOUND = 180.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster.create(tmp_path_factory.mktemp("faults") / "cluster", "3x2x1", partitions=4)
    c.die_with_this_process()  # even a SIGKILLed pytest leaves none of it behind
    try:  # stopped even when it never came up
        c.up(timeout=120)
        client = client_for(c)
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 0.2})
        yield c
    finally:
        c.down()
        c.release_subnet()


def view(cluster: LocalCluster) -> ClusterView:
    statuses = {n: cluster.storage_status(n) for n in cluster.process_ids("storage")}
    return ClusterView.from_config(cluster.config, groups_from_status(statuses))


def inject(cluster: LocalCluster, kind: str, **params: object) -> tuple[Nemesis, str]:
    nemesis = Nemesis(cluster)
    fault_id = f"t{uuid.uuid4().hex[:6]}"
    plan = plan_fault(make_fault(kind, params), view(cluster))
    nemesis.inject(fault_id, plan)
    return nemesis, fault_id


def heal_and_check(cluster: LocalCluster, nemesis: Nemesis) -> None:
    nemesis.heal_all()
    mesh = cluster.mesh()
    assert mesh is not None
    assert all(not mesh.toxics(name) for name in mesh.proxies()), "toxics left behind"
    assert all(p.enabled for p in mesh.proxies().values())
    # heal_all waited until each answered once; a 1 s health call may time out under load.
    assert wait_for(lambda: all(cluster.health(p) for p in cluster.process_ids())), "unhealthy"
    assert recorded_faults(cluster.state_dir) == {}
    # Healing moved replicas during the fault (a lost member is replaced by a log replica in
    # another AZ, then moved back): until every group has three full members on three AZs
    # again, the next fault may take a group's quorum (a split of az-a while a group has two
    # members there, or four in the middle of a move), which no test here expects.
    assert wait_for(lambda: placement_problem(cluster) is None), (
        f"{placement_problem(cluster)}\n{placement(cluster)}"
    )


def placement_problem(cluster: LocalCluster) -> str | None:
    """What keeps the groups from their steady placement (None when there): a group without
    a leader, or whose leader's membership is not three full members on three AZs."""
    leads: dict[str, dict[str, Any]] = {}
    groups: set[str] = set()
    for node in cluster.process_ids("storage"):
        for r in (cluster.storage_status(node) or {}).get("replicas", []):
            groups.add(r["group"])
            if r["role"] == "leader" and r["term"] >= leads.get(r["group"], r)["term"]:
                leads[r["group"]] = r
    for group in sorted(groups):
        lead = leads.get(group)
        if lead is None:
            return f"{group}: no leader"
        azs = {cluster.config.process(m).az for m in lead["members"]}
        if len(lead["members"]) != 3 or len(azs) != 3 or lead["log_only"]:
            return f"{group}: members {lead['members']}, log replicas {lead['log_only']}"
    return None


def write_all_partitions(cluster: LocalCluster, router: str, keys: int = 40) -> int:
    """Write keys spread over every partition; returns how many succeeded. A key is retried
    (beyond boto3's retries) until it is written or WRITES_BOUND passed since the first: an
    election on a busy machine outlasts boto3's few retries, a partition left unwritable does
    not get through at all."""
    client = client_for(cluster, router)
    ok = 0
    errors: list[str] = []
    deadline = time.monotonic() + WRITES_BOUND
    for i in range(keys):
        while True:
            try:
                client.put_item(TableName=TABLE, Item={"id": {"S": f"k{i}"}, "v": {"N": str(i)}})
                ok += 1
                break
            except ClientError as exc:
                meta = exc.response.get("ResponseMetadata", {})
                errors.append(f"k{i}: {exc.response['Error']} after {meta.get('RetryAttempts')}")
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    if errors:
        print("write errors:", *errors, sep="\n  ")
    if ok < keys:
        print(placement(cluster))
    return ok


def placement(cluster: LocalCluster) -> str:
    """Every storage node's replicas (role, term, leader, members, mode, indexes): where the
    groups are and who leads them, for a failure's diagnosis."""
    lines = ["replicas by node:"]
    for node in cluster.process_ids("storage"):
        status = cluster.storage_status(node)
        if status is None:
            lines.append(f"  {node}: not answering")
            continue
        for r in sorted(status.get("replicas", []), key=lambda r: r["group"]):
            lines.append(
                f"  {node} {r['group']}: {r['role']} term {r['term']} leader {r['leader']} "
                f"members {','.join(r['members'])} log_only {','.join(r['log_only']) or '-'} "
                f"mode {r['mode']} commit {r['commit']} last {r['last_index']}"
                f"{' rejoining' if r.get('rejoining') else ''}"
            )
    return "\n".join(lines)


def leaders(cluster: LocalCluster) -> dict[str, str | None]:
    return {g: v.leader for g, v in view(cluster).groups.items()}


def wait_for(predicate, timeout: float = 120.0) -> bool:  # type: ignore[no-untyped-def]
    """Whether ``predicate`` came true; ``timeout`` bounds a hang (an election or a heal on a
    busy machine takes many seconds, so it is no deadline for them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_az_power_off_leaves_every_partition_writable(cluster: LocalCluster) -> None:
    nemesis, _ = inject(cluster, "power_off_az", target="az-b")
    try:
        assert not any(cluster.alive(p) for p in ("sn-b1", "sn-b2", "rt-b", "md-b"))
        assert write_all_partitions(cluster, "rt-a") == 40  # boto3 retries cover elections
    finally:
        heal_and_check(cluster, nemesis)


def test_partitioned_minority_leader_steps_down_and_majority_elects(cluster: LocalCluster) -> None:
    group = f"{TABLE}.p0"
    old = leaders(cluster)[group]
    assert old is not None
    nemesis, _ = inject(cluster, "leader_isolation", group=group)
    try:
        assert wait_for(lambda: leaders(cluster)[group] not in (None, old)), "no new leader"
        status = cluster.storage_status(old) or {"replicas": []}
        mine = next(r for r in status["replicas"] if r["group"] == group)
        assert wait_for(
            lambda: (
                next(
                    r
                    for r in (cluster.storage_status(old) or {"replicas": []})["replicas"]
                    if r["group"] == group
                )["role"]
                != "leader"
            )
        ), f"isolated leader {old} did not step down: {mine}"
        assert write_all_partitions(cluster, "rt-a", keys=10) == 10
    finally:
        heal_and_check(cluster, nemesis)


def test_az_split_cuts_exactly_the_crossing_links(cluster: LocalCluster) -> None:
    # A pair of nodes across the cut that are talking now (they share a group): healing may
    # have moved replicas in earlier tests, so the pair is chosen, not assumed.
    talking = waiting.wait_for(
        "storage nodes talking across az-a and the rest",
        lambda: [
            (dst, src)
            for dst in ("sn-b1", "sn-b2", "sn-c1", "sn-c2")
            for src in ("sn-a1", "sn-a2")
            if 0.0 < _heard_ago(cluster, dst, src) < 1.0
        ],
        stall=None,
        bound=120.0,
    )
    print("before the split:", placement(cluster), sep="\n")  # shown when the test fails
    nemesis, fault_id = inject(cluster, "split", sides="az-a|az-b,az-c")
    links = cluster.links()
    try:
        assert not probe(links[("sn-a1", "sn-b1")], timeout=1.0).reachable
        assert not probe(links[("rt-a", "sn-c1")], timeout=1.0).reachable
        assert probe(links[("sn-b1", "sn-c1")], timeout=REACH).reachable
        assert probe(links[("sn-a1", "sn-a2")], timeout=REACH).reachable
        # The majority side keeps serving writes.
        assert write_all_partitions(cluster, "rt-b", keys=10) == 10
        # The nodes' own metrics see the peer go silent.
        dst, src = talking[0]
        assert wait_for(lambda: _heard_ago(cluster, dst, src) > 1.0)
    finally:
        nemesis.heal(fault_id)
        assert probe(links[("sn-a1", "sn-b1")], timeout=REACH).reachable
        heal_and_check(cluster, nemesis)


def _heard_ago(cluster: LocalCluster, node: str, peer: str) -> float:
    status = cluster.storage_status(node) or {}
    return float(status.get("peers", {}).get(peer, {}).get("heard_seconds_ago") or 0.0)


def test_one_way_cut_stops_one_direction_only(cluster: LocalCluster) -> None:
    nemesis, _ = inject(cluster, "one_way", from_side="sn-a1", to_side="sn-b1")
    links = cluster.links()
    try:
        assert not probe(links[("sn-a1", "sn-b1")], timeout=1.0).reachable
        assert probe(links[("sn-b1", "sn-a1")], timeout=REACH).reachable
    finally:
        heal_and_check(cluster, nemesis)


def test_pause_is_a_gray_failure_and_resume_heals(cluster: LocalCluster) -> None:
    nemesis, _ = inject(cluster, "pause_node", target="sn-c2")
    try:
        assert cluster.alive("sn-c2")  # still there...
        assert cluster.health("sn-c2") is None  # ...but answering nothing
        assert write_all_partitions(cluster, "rt-a", keys=10) == 10
    finally:
        heal_and_check(cluster, nemesis)


def test_latency_between_azs_is_measurable(cluster: LocalCluster) -> None:
    nemesis, _ = inject(
        cluster, "latency", from_side="rt-a", to_side="md-a", ms=300, both_ways=True
    )
    links = cluster.links()
    try:
        result = probe(links[("rt-a", "md-a")], timeout=REACH)
        assert result.reachable and result.elapsed >= 0.5  # 300 ms each way
    finally:
        heal_and_check(cluster, nemesis)


def test_rack_power_off_and_rolling_restart(cluster: LocalCluster) -> None:
    nemesis, _ = inject(cluster, "power_off_rack", target="az-c/r1")
    try:
        assert not cluster.alive("sn-c1") and cluster.alive("sn-c2")
    finally:
        heal_and_check(cluster, nemesis)
    before = {p: cluster.procs.pid(p) for p in cluster.process_ids("router")}
    nemesis, _ = inject(cluster, "rolling_restart", role="router")
    after = {p: cluster.procs.pid(p) for p in cluster.process_ids("router")}
    assert all(before[p] != after[p] for p in before), "every router restarted"
    heal_and_check(cluster, nemesis)


def test_unknown_target_is_refused_clearly_and_leaves_nothing(cluster: LocalCluster) -> None:
    result = CliRunner().invoke(
        app, ["fault", "power-off", "az-q", "--data-dir", str(cluster.data_dir)]
    )
    assert result.exit_code == 2
    assert "az-q" in result.output and "az-a" in result.output  # names the known AZs
    assert recorded_faults(cluster.state_dir) == {}
    assert all(cluster.alive(p) for p in cluster.process_ids())


def test_cli_fault_then_heal(cluster: LocalCluster) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(cluster.data_dir)]
    result = runner.invoke(app, ["fault", "partition", "az-a|az-b,az-c", *data])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["fault", "list", *data])
    assert "split" in listed.output
    healed = runner.invoke(app, ["heal", *data])
    assert healed.exit_code == 0, healed.output
    heal_and_check(cluster, Nemesis(cluster))


def test_dead_mans_switch_heals_after_the_orchestrator_is_killed(cluster: LocalCluster) -> None:
    """SIGKILL the process holding an AZ partition: the watchdog heals."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaos.cli_entry",
            "fault",
            "partition",
            "az-b|az-a,az-c",
            "--duration",
            "120s",
            "--data-dir",
            str(cluster.data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    links = cluster.links()
    try:
        assert wait_for(lambda: bool(recorded_faults(cluster.state_dir))), "never injected"
        assert wait_for(lambda: not probe(links[("sn-b1", "sn-a1")], 1.0).reachable)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # The watchdog heals once the lease lapses (how soon is bench material, not a test's).
        assert wait_for(lambda: probe(links[("sn-b1", "sn-a1")], 1.0).reachable)
        assert wait_for(lambda: recorded_faults(cluster.state_dir) == {})
    finally:
        holder.kill()
        heal_and_check(cluster, Nemesis(cluster))


def test_malformed_scenario_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nduration: 60s\nmethod:\n  timeline:\n"
        "    - {at: 10s, fault: power_off_az, duration: forever, target: az-a}\n"
    )
    result = CliRunner().invoke(app, ["scenario", "validate", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "duration" in result.output


SIGTERM_SCENARIO = """
name: sigterm-mid-partition
duration: 60s
workload: {name: register, users: 2, keys: 5}
method:
  timeline:
    - {at: 3s, duration: 50s, fault: split, sides: "az-c|az-a,az-b"}
"""


def test_sigterm_to_a_game_day_heals_everything(cluster: LocalCluster, tmp_path: Path) -> None:
    """`gameday run` stopped by SIGTERM in the middle of an AZ partition leaves no fault."""
    scenario = tmp_path / "sigterm.yaml"
    scenario.write_text(SIGTERM_SCENARIO)
    out = tmp_path / "runs"
    log = (tmp_path / "gameday.out").open("wb")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaos.cli_entry",
            "run",
            str(scenario),
            "--out",
            str(out),
            "--data-dir",
            str(cluster.data_dir),
        ],
        stdout=log,  # a file: a pipe nobody reads could fill up and stall the run
        stderr=subprocess.STDOUT,
    )
    output = lambda: (tmp_path / "gameday.out").read_text(errors="replace")[-3000:]  # noqa: E731
    try:
        events = lambda: [  # noqa: E731
            json.loads(line)["event"]
            for path in out.glob("*/events.jsonl")
            for line in path.read_text().splitlines()
            if line.endswith("}")  # not a line being written
        ]
        # While the run goes on (a busy machine starts it slowly); 600 s bounds a hang.
        landed = lambda: "fault_confirmed" in events() or run.poll() is not None  # noqa: E731
        assert wait_for(landed, 600) and run.poll() is None, output()
        run.send_signal(signal.SIGTERM)
        # It heals, finishes the report, then exits (128 + SIGTERM): slow on a busy machine.
        wait_exit(run, "the run's exit", progress=lambda: bytes_under(tmp_path))
        assert "heal" in events() and "run_end" in events()
        assert run.returncode == 143, output()
    finally:
        run.kill()
        log.close()
    links = cluster.links()
    assert probe(links[("sn-c1", "sn-a1")], timeout=REACH).reachable
    heal_and_check(cluster, Nemesis(cluster))
