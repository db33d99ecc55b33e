"""Every way a game day can be cut short, done for real to `gameday run`, local and Docker.

SIGKILL, SIGSTOP/SIGCONT past the lease, SIGTERM, SIGINT and a stop condition, each during a
partition, a power-off or a pause: afterwards the cluster is healed (or torn down, when the run
started it), nothing the run started is still running (no process, container, network or
volume), and an aborted run never exits 0. Waits are for progress (an event in events.jsonl, a
state on disk), bounded generously so a busy machine is slow, not failing.

Every interruption runs on the local backend for every fault; on Docker, a game day costs
minutes, so five cases cover each interruption once and each fault at least once. Those are
marked ``docker`` and ``chaos``: `make test-docker` (and the nightly `make chaos`) runs them,
`make test` does not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.backends import open_cluster
from chaos.backends.base import Backend
from chaos.backends.docker import DockerCluster
from chaos.backends.docker_plan import LABEL, cluster_name
from chaos.backends.local import LocalCluster
from chaos.backends.subnets import claims, listening_octets
from chaos.clean import processes
from chaos.deadman import lapse_marker, read_lease, registered_guards, tear_down
from chaos.nemesis import recorded_faults
from checks.report import EXIT_ABORTED, EXIT_FAIL

# Each case is a game day: the 300 s default per test is no bound for one on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PROGRESS_TIMEOUT = 600.0  # an upper bound for a hung run, not a deadline for a slow one


def scenario(tmp_path: Path, fault: str, *, extra: str = "", more_faults: str = "") -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(
        "name: interrupted\n"
        "duration: 120s\n"
        "cluster: {topology: 3x2x1, partitions: 2}\n"
        "workload: {name: register, users: 2, keys: 5}\n"
        "method:\n"
        "  timeline:\n"
        f"    - {{at: 2s, duration: 100s, {fault}}}\n"
        f"{more_faults}"
        f"{extra}"
    )
    return path


FAULTS = {
    "partition": 'fault: split, sides: "az-c|az-a,az-b"',
    "power-off": "fault: power_off_az, target: az-c",
    "pause": "fault: pause_node, target: sn-b1",
}


def on_docker(*values: object) -> Any:
    """A case run on the Docker backend: only by `make test-docker` and `make chaos`."""
    marks = [pytest.mark.docker, pytest.mark.chaos, pytest.mark.timeout(1500)]
    return pytest.param("docker", *values, marks=marks, id="-".join(["docker", *map(str, values)]))


def on_local(*values: object) -> Any:
    return pytest.param("local", *values, id="-".join(["local", *map(str, values)]))


@pytest.fixture
def docker_engine(request: pytest.FixtureRequest) -> Any:
    """The engine and the images, for a Docker case (tests/chaos/conftest.py). An image made
    stale by a source change since the session's build is rebuilt here, not by `gameday run`
    inside the case, whose wait for the first fault is no bound for an image build."""
    from chaos.images import build_images, image_is_current

    request.getfixturevalue("images")
    client = request.getfixturevalue("engine")
    if not image_is_current(client):
        build_images()
    return client


class Run:
    """`gameday run` as a child process, and what it left in its run directory."""

    def __init__(
        self, tmp_path: Path, scenario_path: Path, *args: str, backend: str = "local"
    ) -> None:
        self.out = tmp_path / "runs"
        self.backend = backend
        self.log = (tmp_path / "gameday.out").open("wb")
        argv = [sys.executable, "-m", "chaos.cli_entry", "run", str(scenario_path)]
        self.proc = subprocess.Popen(
            [*argv, "--out", str(self.out), "--backend", backend, *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def run_dir(self) -> Path | None:
        found = sorted(self.out.glob("*-interrupted"))
        return found[0] if found else None

    def events(self) -> list[dict[str, Any]]:
        run_dir = self.run_dir
        if run_dir is None or not (run_dir / "events.jsonl").exists():
            return []
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def names(self) -> list[str]:
        return [e["event"] for e in self.events()]

    def wait_until(self, what: str, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + PROGRESS_TIMEOUT
        while not predicate():
            assert self.proc.poll() is None or what == "exit", (
                f"gameday exited ({self.proc.returncode}) before {what}: {self.output()}"
            )
            assert time.monotonic() < deadline, f"no {what} after {PROGRESS_TIMEOUT:.0f}s"
            time.sleep(0.2)

    def wait_confirmed(self) -> None:
        self.wait_until("a confirmed fault", lambda: "fault_confirmed" in self.names())

    def wait_exit(self) -> int:
        return self.proc.wait(PROGRESS_TIMEOUT)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def verdict(self) -> dict[str, Any]:
        assert self.run_dir is not None
        data: dict[str, Any] = json.loads((self.run_dir / "checks.json").read_text())
        return data

    def cluster(self) -> Backend:
        assert self.run_dir is not None
        return open_cluster(self.run_dir / "cluster")

    def leftovers(self) -> list[str]:
        """What this run started that is still there: processes (cluster, Toxiproxy, Locust,
        the watchdog) and, on Docker, containers, networks and volumes."""
        if self.run_dir is None:
            return []
        marker = str(self.run_dir.resolve())
        found = [
            f"{p.pid} {' '.join(p.argv)[:100]}"
            for p in processes()
            if any(marker in arg for arg in p.argv)
        ]
        if self.backend == "docker":
            return found + docker_objects(cluster_name(self.run_dir / "cluster"))
        config = self.run_dir / "cluster" / "cluster.json"
        if config.exists():  # Toxiproxy's argv does not name the run: look for its listener
            octet = LocalCluster.open(self.run_dir / "cluster").config.process("sn-a1").listen
            x = int(octet.split(".")[1])
            # Once the run gave its subnet back, another cluster on the machine may take it.
            owner = claims().get(x, {}).get("owner")
            ours = owner in (None, f"dir:{(self.run_dir / 'cluster').resolve()}")
            if ours and x in listening_octets():
                found.append(f"something still listens on {octet.rsplit('.', 2)[0]}.*")
        return found

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


def docker_objects(name: str) -> list[str]:
    from chaos.images import engine

    client, flt = engine(), {"label": f"{LABEL}.cluster={name}"}
    return [
        *(
            f"container {c.name}"
            for c in client.containers.list(all=True, filters=flt, ignore_removed=True)
        ),
        *(f"network {n.name}" for n in client.networks.list(filters=flt)),
        *(f"volume {v.name}" for v in client.volumes.list(filters=flt)),
    ]


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    started: list[Run] = []

    def start(scenario_path: Path, *args: str, backend: str = "local") -> Run:
        run = Run(tmp_path, scenario_path, *args, backend=backend)
        started.append(run)
        return run

    yield start
    for run in started:  # whatever the test did, nothing of the run outlives it
        run.close()
        if run.run_dir is not None and (run.run_dir / "cluster" / "cluster.json").exists():
            wait_gone(run)
            tear_down(run.cluster(), run.run_dir / "cluster")


def wait_gone(run: Run) -> None:
    """Leftovers die within the watchdog's bounded teardown; wait for that, not a fixed time."""
    deadline = time.monotonic() + 180
    while run.leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)


def assert_nothing_left(run: Run) -> None:
    wait_gone(run)
    assert run.leftovers() == []


def assert_healed(cluster: Backend) -> None:
    mesh = cluster.mesh()
    assert mesh is not None
    assert all(not mesh.toxics(name) for name in mesh.proxies()), "toxics left behind"
    assert all(p.enabled for p in mesh.proxies().values())
    assert recorded_faults(cluster.state_dir) == {}
    for process_id in cluster.process_ids():
        assert cluster.alive(process_id), f"{process_id} is not running"
        assert not paused(cluster, process_id), f"{process_id} is still paused"


def paused(cluster: Backend, process_id: str) -> bool:
    if isinstance(cluster, DockerCluster):
        return cluster.container_status(process_id) == "paused"
    assert isinstance(cluster, LocalCluster)
    state = Path(f"/proc/{cluster.procs.pid(process_id)}/stat").read_text()
    return state.rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize(
    ("backend", "fault"),
    [
        on_local("partition"),
        on_local("power-off"),
        on_local("pause"),
        on_docker("power-off"),
    ],
)
def test_sigkill_mid_fault_tears_down_everything_the_run_started(
    backend: str, fault: str, tmp_path: Path, runs: Callable[..., Run], request: Any
) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_engine")
    run = runs(scenario(tmp_path, FAULTS[fault]), backend=backend)
    run.wait_confirmed()
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(30)
    assert_nothing_left(run)  # cluster, Toxiproxy, Locust, canaries: the watchdog stopped all
    assert run.run_dir is not None
    guard = read_lease(run.run_dir / "guard.json") or {}
    assert not guard.get("done")  # the run never finished: the watchdog did the work


def test_sigkill_with_keep_heals_the_kept_cluster_and_stops_the_load(
    tmp_path: Path, runs: Callable[..., Run]
) -> None:
    run = runs(scenario(tmp_path, FAULTS["power-off"]), "--keep")
    run.wait_confirmed()
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(30)
    assert run.run_dir is not None
    cluster = LocalCluster.open(run.run_dir / "cluster")
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while recorded_faults(cluster.state_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    cluster.wait_healthy(PROGRESS_TIMEOUT)
    assert_healed(cluster)
    run_dir = str(run.run_dir.resolve())

    def run_locust() -> list[object]:
        return [
            p
            for p in processes()
            if "locustfile" in " ".join(p.argv) and run_dir in " ".join(p.argv)
        ]

    # The watchdog heals first, then stops the load: wait for that progress, not a fixed time.
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while run_locust() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not run_locust()


@pytest.mark.parametrize(
    ("backend", "fault", "sig"),
    [
        on_local("partition", signal.SIGTERM),
        on_local("power-off", signal.SIGINT),
        on_local("pause", signal.SIGTERM),
        on_docker("partition", signal.SIGTERM),
        on_docker("pause", signal.SIGINT),
    ],
)
def test_a_signal_stops_in_order_heals_reports_and_exits_128_plus_signal(
    backend: str,
    fault: str,
    sig: signal.Signals,
    tmp_path: Path,
    runs: Callable[..., Run],
    request: Any,
) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_engine")
    run = runs(scenario(tmp_path, FAULTS[fault]), backend=backend)
    run.wait_confirmed()
    run.proc.send_signal(sig)
    code = run.wait_exit()
    assert code == 128 + sig, run.output()
    assert "Traceback" not in run.output()
    names = run.names()
    assert names.index("interrupted") < names.index("heal") < names.index("run_end")
    ends = [e for e in run.events() if e["event"] == "fault_end"]
    assert ends and all("drift" not in e for e in ends), ends  # healed early: not drift
    assert all(f"interrupted by {sig.name}" in e["cut_short_by"] for e in ends), ends
    verdict = run.verdict()
    assert verdict["verdict"] in ("aborted", "fail")
    assert f"interrupted by {sig.name}" in verdict["aborted"]
    assert run.run_dir is not None and (run.run_dir / "report.html").exists()
    assert "plan-executed" in (run.run_dir / "junit.xml").read_text()
    assert_nothing_left(run)


@pytest.mark.parametrize(("backend", "fault"), [on_local("pause"), on_docker("partition")])
def test_sigstop_past_the_lease_heals_then_the_woken_run_ends_aborted(
    backend: str, fault: str, tmp_path: Path, runs: Callable[..., Run], request: Any
) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_engine")
    run = runs(scenario(tmp_path, FAULTS[fault]), backend=backend)
    run.wait_confirmed()
    assert run.run_dir is not None
    cluster = run.cluster()
    lease = cluster.state_dir / "deadman.lease"
    os.kill(run.proc.pid, signal.SIGSTOP)
    try:
        run.wait_until("the lease lapsing", lapse_marker(lease).exists)
        # The watchdog heals while the orchestrator is stopped: the paused node runs again,
        # the cut links carry traffic again.
        run.wait_until("the heal", lambda: not recorded_faults(cluster.state_dir))
        assert_healed(cluster)
    finally:
        os.kill(run.proc.pid, signal.SIGCONT)
    code = run.wait_exit()
    assert "lease_lapsed" in run.names()
    verdict = run.verdict()
    assert verdict["verdict"] in ("aborted", "fail") and "lease lapsed" in verdict["aborted"]
    # Never a pass; a check that failed on the partial history outranks the abort (exit 1).
    expected = EXIT_ABORTED if verdict["verdict"] == "aborted" else EXIT_FAIL
    assert code == expected, run.output()
    assert_nothing_left(run)


@pytest.mark.parametrize("backend", [on_local(), on_docker()])
def test_a_stop_condition_aborts_the_run_and_the_faults_it_skipped_are_named(
    backend: str, tmp_path: Path, runs: Callable[..., Run], request: Any
) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_engine")
    # Canaries probe every router, so powering off az-c fails some probes at once: with a
    # threshold of 100% the stop condition must fire, and the second fault must never run.
    path = scenario(
        tmp_path,
        FAULTS["power-off"].replace("az-c", "az-b"),
        more_faults="    - {at: 110s, duration: 5s, fault: power_off_node, target: sn-a1}\n",
        extra="stop_conditions:\n  - {availability_below: 1.0, for_seconds: 2s}\n",
    )
    run = runs(path, backend=backend)
    code = run.wait_exit()
    assert code == EXIT_ABORTED, run.output()
    assert "stop_condition" in run.names()
    assert "f2" not in {e.get("fault_id") for e in run.events() if e["event"] == "fault_start"}
    verdict = run.verdict()
    assert verdict["verdict"] in ("aborted", "fail")
    assert "stop condition" in verdict["aborted"]
    assert_nothing_left(run)


def test_a_run_killed_with_its_watchdog_takes_its_processes_along_and_clean_does_the_rest(
    tmp_path: Path, runs: Callable[..., Run]
) -> None:
    from typer.testing import CliRunner

    from chaos.cli import app

    run = runs(scenario(tmp_path, FAULTS["partition"]))
    run.wait_confirmed()
    assert run.run_dir is not None
    guard_file = (run.run_dir / "guard.json").resolve()
    guard = read_lease(guard_file) or {}
    os.kill(int(guard["watchdog"]), signal.SIGKILL)  # the worst case: both die at once
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(30)
    # No watchdog acts, yet the cluster, Toxiproxy and Locust die with the run (PDEATHSIG).
    assert_nothing_left(run)
    # What is left is for `gameday clean`: the run's registration, data and subnet claim.
    assert guard_file in registered_guards()
    owner = f"dir:{(run.run_dir / 'cluster').resolve()}"
    assert any(c["owner"] == owner for c in claims().values())
    listed = CliRunner().invoke(app, ["clean", "--dry-run"])
    assert listed.exit_code == 0 and "killed run" in listed.output, listed.output
    assert guard_file in registered_guards()  # a dry run removes nothing
    cleaned = CliRunner().invoke(app, ["clean"])
    assert cleaned.exit_code == 0, cleaned.output
    assert guard_file not in registered_guards()
    assert not any(c["owner"] == owner for c in claims().values())
    assert not (run.run_dir / "cluster" / "nodes").exists()
    assert_nothing_left(run)
