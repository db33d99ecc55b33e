"""The docker backend: plan (no engine needed), images built offline, the cluster in containers.

Tests marked ``docker`` need an engine: the ``engine`` fixture uses the running one or starts
``dockerd`` (installed by ``make docker-engine``); only when neither works are they skipped,
with the reason, and on CI (``CI`` set) that is a failure instead, never a silent skip. On CI
the images are built from scratch (debootstrap base, no layer cache).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from chaos.assets import asset
from chaos.backends import create_cluster, open_cluster
from chaos.backends.base import DEFAULT_ACCESS_KEY, FIRST_PROXY_PORT
from chaos.backends.docker import DockerCluster
from chaos.backends.docker_plan import (
    DATA_IN_CONTAINER,
    LABEL,
    DockerState,
    build_docker_config,
    cluster_name,
    command_for,
    labels_for,
    toxiproxy_ip,
)
from chaos.backends.local import LocalCluster
from chaos.backends.powerlayer import leftover_mounts
from chaos.images import (
    BASE_IMAGE,
    CLUSTER_IMAGE,
    BuildResult,
    EngineUnavailable,
    build_images,
    ensure_engine,
)
from chaos.mesh import plan_links, with_mesh
from tests.waiting import bytes_under, wait_exit

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = asset("docker")
GAMEDAY = [sys.executable, "-m", "chaos.cli_entry"]
SUBNET = "172.30.0.0/16"

# --- the plan, without an engine -------------------------------------------------------------


def test_config_puts_every_process_on_the_subnet_with_standard_ports() -> None:
    config = build_docker_config("3x2x1", SUBNET, partitions=4)
    ips = [p.listen.rsplit(":", 1)[0] for p in config.processes.values()]
    assert len(ips) == len(set(ips)) == 13
    assert all(ip.startswith("172.30.0.") and int(ip.rsplit(".", 1)[1]) >= 10 for ip in ips)
    assert config.process("sn-a1").listen.endswith(":7100")
    assert config.process("sn-a1").admin.endswith(":7180")
    assert config.process("rt-b").listen == config.process("rt-b").admin
    assert config.process("sn-b2").rack == "az-b/r2" and config.process("sn-b2").az == "az-b"
    assert toxiproxy_ip(SUBNET) == "172.30.0.2"


def test_every_link_dials_the_toxiproxy_container() -> None:
    config = build_docker_config("3x2x1", SUBNET)
    links = plan_links(config, toxiproxy_ip(SUBNET), FIRST_PROXY_PORT)
    config = with_mesh(config, links)
    assert config.dial_address("sn-a1", "sn-b1").startswith("172.30.0.2:")
    assert config.dial_address("rt-a", "md-a").startswith("172.30.0.2:")
    assert links["sn-a1", "sn-b1"].upstream == config.process("sn-b1").listen


def test_labels_and_commands_say_role_az_rack() -> None:
    config = build_docker_config("3x2x1", SUBNET)
    state = DockerState(name="gameday-x", subnet=SUBNET, toxiproxy_ip="172.30.0.2", router_ports={})
    labels = labels_for(state, config.process("sn-c2"))
    assert labels == {
        f"{LABEL}.cluster": "gameday-x",
        f"{LABEL}.process": "sn-c2",
        f"{LABEL}.role": "storage",
        f"{LABEL}.az": "az-c",
        f"{LABEL}.rack": "az-c/r2",
    }
    assert f"{LABEL}.rack" not in labels_for(state, config.process("rt-a"))
    assert labels_for(state, None)[f"{LABEL}.role"] == "toxiproxy"
    storage = command_for(config.process("sn-a1"))
    assert storage[:3] == ["python", "-m", "cluster.storage"]
    assert storage[5:7] == ["--data-dir", DATA_IN_CONTAINER]
    assert command_for(config.process("gac"))[:3] == ["python", "-m", "cluster.admission"]
    assert command_for(config.process("md-b"))[2:5] == ["cluster.memds", "--id", "md-b"]
    assert state.container("sn-a1") == state.volume("sn-a1") == "gameday-x-sn-a1"
    assert state.network == "gameday-x-net"


def test_cluster_name_is_stable_per_data_dir(tmp_path: Path) -> None:
    assert cluster_name(tmp_path / "a") == cluster_name(tmp_path / "a")
    assert cluster_name(tmp_path / "a") != cluster_name(tmp_path / "b")


def test_open_cluster_finds_the_backend_that_made_the_data_dir(tmp_path: Path) -> None:
    config = build_docker_config("3x2x1", SUBNET)
    state = DockerState(name="gameday-x", subnet=SUBNET, toxiproxy_ip="172.30.0.2", router_ports={})
    docker_dir = tmp_path / "docker"
    DockerCluster(docker_dir, config, state)._save()
    assert isinstance(open_cluster(docker_dir), DockerCluster)
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    config.save(local_dir / "cluster.json")
    assert isinstance(open_cluster(local_dir), LocalCluster)
    with pytest.raises(ValueError, match="another backend than docker"):
        DockerCluster.create(local_dir)


def test_power_loss_layer_is_offered_on_local_and_docker_and_refused_on_k8s(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"local and docker backends have \(not k8s\)"):
        create_cluster("k8s", tmp_path / "cluster", power_layer=True)
    assert not (tmp_path / "cluster").exists()  # refused before anything was made


def test_dockerfile_is_non_root_with_a_healthcheck_from_the_local_base() -> None:
    text = (DOCKER_DIR / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if not line.startswith("#")]
    assert "FROM ${BASE}" in lines
    assert f"ARG BASE={BASE_IMAGE}" in lines
    assert "USER gameday" in lines
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert "--no-index" in text  # installed from the staged wheels only


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_healthcheck_script(status: int, code: int, tmp_path: Path) -> None:
    handler = type("H", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        config = {"processes": {"sn-a1": {"admin": f"127.0.0.1:{port}"}}}
        (tmp_path / "cluster.json").write_text(json.dumps(config))
        env = {
            "PATH": os.environ["PATH"],
            "GAMEDAY_CONFIG": str(tmp_path / "cluster.json"),
            "GAMEDAY_PROCESS_ID": "sn-a1",
        }
        script = str(DOCKER_DIR / "healthcheck.py")
        done = subprocess.run([sys.executable, "-I", "-S", script], env=env, timeout=10)
        assert done.returncode == code
    finally:
        server.shutdown()
        server.server_close()


def test_no_engine_is_reported_with_the_way_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(EngineUnavailable, match="make docker-engine"):
        ensure_engine(start=False)


# --- with an engine --------------------------------------------------------------------------


# ``engine`` and ``images`` (once per session): tests/chaos/conftest.py


def _leftovers(client: Any, name: str) -> list[str]:
    flt = {"label": f"{LABEL}.cluster={name}"}
    return [
        *(
            f"container {c.name}"
            for c in client.containers.list(all=True, filters=flt, ignore_removed=True)
        ),
        *(f"network {n.name}" for n in client.networks.list(names=[f"{name}-net"])),
        *(f"volume {v.name}" for v in client.volumes.list(filters=flt)),
    ]


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one builds the images (from scratch on CI)
def test_images_are_built_offline_and_rebuilt_from_cache(engine: Any, images: BuildResult) -> None:
    image = engine.images.get(CLUSTER_IMAGE)
    config = image.attrs["Config"]
    assert config["User"] == "gameday"
    assert "healthcheck.py" in " ".join(config["Healthcheck"]["Test"])
    assert engine.images.get(BASE_IMAGE).labels.get("io.gameday.image") == "base"
    out = engine.containers.run(
        CLUSTER_IMAGE,
        ["sh", "-c", "id -u; python --version; toxiproxy-server -version"],
        network_mode="none",
        remove=True,
    ).decode()
    uid, python, toxiproxy = out.split("\n")[:3]
    assert uid == "10001" and python.startswith("Python 3.11")
    assert toxiproxy.startswith("toxiproxy-server version")
    again = build_images()  # a rebuild: the base stays, every layer up to the project's is reused
    assert not again.base_built
    assert again.cached_steps >= 6, again


def _client(endpoint: str, secret: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=DEFAULT_ACCESS_KEY,
        aws_secret_access_key=secret,
    )


@pytest.fixture
def docker_cluster(engine: Any, images: BuildResult, tmp_path: Path) -> Iterator[DockerCluster]:
    cluster = DockerCluster.create(tmp_path / "cluster", "3x2x1", partitions=2)
    try:
        started = time.monotonic()
        cluster.up(timeout=120)
        print(f"docker cluster healthy {time.monotonic() - started:.1f}s after up")
        yield cluster
    finally:
        cluster.down(wipe=True)
        assert _leftovers(engine, cluster.state.name) == []


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one builds the images (from scratch on CI)
def test_cluster_in_containers_power_pause_partition_heal(
    engine: Any, docker_cluster: DockerCluster
) -> None:
    from chaos.deadman import Lease, open_backend, spawn_watchdog
    from chaos.faults import ClusterView, groups_from_status, make_fault, plan
    from chaos.nemesis import Nemesis

    cluster = docker_cluster
    name = cluster.state.name
    # one container per process plus Toxiproxy, labelled; routers published on loopback only
    containers = engine.containers.list(filters={"label": f"{LABEL}.cluster={name}"})
    assert len(containers) == 14
    sn = engine.containers.get(cluster.state.container("sn-b2"))
    assert sn.labels[f"{LABEL}.az"] == "az-b" and sn.labels[f"{LABEL}.rack"] == "az-b/r2"
    assert sn.attrs["Mounts"][0]["Name"] == cluster.state.volume("sn-b2")
    rt = engine.containers.get(cluster.state.container("rt-a"))
    bindings = rt.attrs["HostConfig"]["PortBindings"]["8000/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    assert cluster.endpoints()["rt-a"].startswith("http://127.0.0.1:")

    secret = cluster.config.credentials[DEFAULT_ACCESS_KEY]
    db = _client(cluster.endpoints()["rt-b"], secret)
    db.create_table(
        TableName="items",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    db.get_waiter("table_exists").wait(TableName="items", WaiterConfig={"Delay": 1})
    for i in range(20):
        db.put_item(TableName="items", Item={"k": {"S": f"k{i}"}, "v": {"N": str(i)}})

    # power off a node: SIGKILL; power on: the same container and volume
    cluster.kill("sn-a1")
    assert not cluster.alive("sn-a1")
    assert engine.containers.get(cluster.state.container("sn-a1")).attrs["State"]["ExitCode"] == 137
    cluster.start("sn-a1")
    cluster.wait_healthy(60)

    # pause: docker pause (frozen, no answers), resume
    cluster.pause("md-c")
    assert cluster.alive("md-c") and cluster.health("md-c") is None
    cluster.resume("md-c")
    cluster.wait_healthy(30)

    # faults through the nemesis: an AZ power-off and an AZ partition, confirmed and healed
    nemesis = Nemesis(cluster)

    def inject(fault_id: str, kind: str, **params: Any) -> dict[str, Any]:
        statuses = {n: cluster.storage_status(n) for n in cluster.process_ids("storage")}
        view = ClusterView.from_config(cluster.config, groups_from_status(statuses))
        return nemesis.inject(fault_id, plan(make_fault(kind, params), view))

    evidence = inject("f1", "power_off_az", target="az-c")
    assert sorted(evidence["down"]) == ["md-c", "rt-c", "sn-c1", "sn-c2"]
    nemesis.heal("f1")
    cluster.wait_healthy(60)
    evidence = inject("f2", "split", sides="az-a|az-b,az-c")
    assert evidence["probes"] and not any(p["reachable"] for p in evidence["probes"])
    nemesis.heal("f2")

    # the dead-man's switch: the orchestrator "dies" holding a power-off; the watchdog heals it
    # A ttl above scheduling delays: a starved renewer must not lapse before the test stops it.
    lease = Lease(cluster.state_dir / "test.lease", ttl=5.0)
    watchdog = spawn_watchdog(cluster, lease)
    inject("f3", "power_off_node", target="sn-c1")
    assert not cluster.alive("sn-c1")
    lease.stop_renewing()  # without releasing: as if stalled or SIGKILLed
    for _ in range(3000):  # the watchdog heals once the lease lapses (and stays armed)
        if cluster.alive("sn-c1"):
            break
        time.sleep(0.1)
    assert cluster.alive("sn-c1")
    lease.release()
    # It exits once its heal is over, which waits for sn-c1 to be healthy: bounded, not timed.
    assert watchdog.wait(timeout=300) == 0
    assert isinstance(open_backend("docker", cluster.data_dir), DockerCluster)

    # every write survived, read back through another AZ's router
    db = _client(cluster.endpoints()["rt-c"], secret)
    for i in range(20):
        item = db.get_item(TableName="items", Key={"k": {"S": f"k{i}"}}, ConsistentRead=True)
        assert item["Item"]["v"]["N"] == str(i)

    # the CLI sees the docker cluster from its data dir alone
    done = subprocess.run(
        [*GAMEDAY, "cluster", "status", "--json", "--data-dir", str(cluster.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["healthy"] and len(status["processes"]) == 13


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one builds the images (from scratch on CI)
def test_game_day_on_docker_passes_and_leaves_nothing(
    engine: Any, images: BuildResult, tmp_path: Path
) -> None:
    """`gameday run scenarios/az-outages.yaml --backend docker`: an AZ power-off and an AZ
    partition, every check passing, and no container, network or volume left afterwards."""
    out = tmp_path / "runs"
    scenario = ROOT / "scenarios" / "az-outages.yaml"
    argv = [*GAMEDAY, "run", str(scenario), "--backend", "docker", "--out", str(out)]
    with (tmp_path / "stdout").open("w") as stdout, (tmp_path / "stderr").open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, text=True)
        try:  # minutes on a busy machine: wait while the run writes, bounded for a hang
            code = wait_exit(
                proc, "the game day", progress=lambda: bytes_under(tmp_path), bound=1200
            )
        finally:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(
        argv, code, (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    )
    run_dir = next(out.iterdir())
    name = cluster_name(run_dir / "cluster")
    assert _leftovers(engine, name) == []
    checks = json.loads((run_dir / "checks.json").read_text())
    verdicts = {c["name"]: c["valid"] for c in checks["checks"]}
    statuses = {c["name"]: c["status"] for c in checks["checks"]}
    detail = f"{statuses}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # Safety must hold on every backend. Availability is measured and reported, but its SLOs are
    # not gated here yet: in open loop, a split of az-b on Docker on a 2-core runner once cost
    # ~20% of its window's intended ops (80.9%; 99.75% in CI since round 2's router changes;
    # local processes 99.6%). Until that holds across runs, a run that fails only on
    # availability exits 1, anything else must be a pass.
    safety = {
        name: valid for name, valid in verdicts.items() if name not in ("availability", "bank")
    }
    assert set(safety) == {"linearizability", "durability", "convergence"}, detail
    assert all(v is True for v in safety.values()), detail
    # bank judges the bank workload's transfers; this scenario has none: not applicable, which
    # checks.json says with valid null and status "n/a" (never a pass)
    assert verdicts["bank"] is None and statuses["bank"] == "n/a", detail
    assert verdicts.get("availability") in (True, False), detail  # measured, not unknown
    assert done.returncode == (0 if verdicts["availability"] else 1), detail
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    confirmed = {e["fault"] for e in events if e["event"] == "fault_confirmed"}
    assert confirmed == {"power_off_az", "split"}
    logs = run_dir / "cluster" / "logs"
    assert (logs / "sn-a1.log").exists() and (logs / "toxiproxy.log").exists()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one builds the images (from scratch on CI)
def test_power_loss_on_docker_keeps_only_what_the_container_fsynced(
    engine: Any, images: BuildResult, tmp_path: Path
) -> None:
    """A storage container on the power-loss layer: its unprivileged user writes through the
    bind mount, a power loss (``docker kill``, then the layer) keeps what it fsynced plus a torn
    prefix of the last write, power-on binds the fresh mount, and ``down`` leaves nothing."""
    cluster = DockerCluster.create(tmp_path / "cluster", "3x2x1", partitions=2, power_layer=True)
    node = "sn-a1"
    try:
        assert cluster.supports_power_loss
        assert cluster.node_data_dir(node) == cluster.layer.mountpoint(node)
        cluster._ensure_network()
        cluster.start(node)
        assert cluster.alive(node)
        container = engine.containers.get(cluster.state.container(node))
        mount = container.attrs["Mounts"][0]
        assert mount["Type"] == "bind" and mount["Destination"] == DATA_IN_CONTAINER
        assert mount["Source"] == str(cluster.layer.mountpoint(node).resolve())
        code = "import os; f = os.open('/data/w', os.O_RDWR | os.O_CREAT); "
        code += (
            "os.write(f, b's' * 5000); os.fsync(f); os.write(f, b'u' * 3000); print(os.getuid())"
        )
        done = container.exec_run(["python", "-c", code])
        assert (done.exit_code, done.output.strip()) == (0, b"10001"), done.output
        backing = cluster.layer.backing_dir(node) / "w"
        assert (backing.stat().st_uid, backing.stat().st_size) == (10001, 8000)

        lost = cluster.lose_unsynced(node, torn=True, seed=5)
        assert not cluster.alive(node)
        assert lost["files"] == 1 and lost["bytes"] == 3000
        kept = lost["torn"]["kept"]
        assert 0 < kept < 3000 and kept % 512 == 0
        cluster.start(node)
        assert cluster.alive(node)
        container = engine.containers.get(cluster.state.container(node))
        done = container.exec_run(
            ["python", "-c", "print(open('/data/w', 'rb').read().count(b'u'))"]
        )
        assert done.exit_code == 0 and int(done.output) == kept
        assert cluster.layer.status(node)["generation"] == 2
    finally:
        cluster.down(wipe=True)
    assert _leftovers(engine, cluster.state.name) == []
    assert leftover_mounts(tmp_path) == []
