"""Every way a game day can be cut short, done for real to `gameday run`, local and Docker.

SIGKILL, SIGSTOP/SIGCONT past the lease, SIGTERM, SIGINT and a stop condition, each during a
partition, a power-off and a pause. Every case asserts the same three promises:

- **healed**: every fault the run started was healed (a ``fault_end`` for each ``fault_start``,
  no fault left in ``faults.json``), or the cluster the run started is gone with its faults; a
  cluster that is kept (``--keep``) is checked live: no toxic, every proxy enabled, every
  process running and none stopped;
- **nothing left**: no process the run started (its process tree, sessions and process groups
  as seen just before the interruption, and anything naming the run directory), nothing
  listening on its loopback subnet, no subnet claim, no mount under it (the power-loss layer's
  FUSE mounts included), and on Docker no container, network, volume or network namespace;
- **never a pass**: an interrupted or aborted run exits with neither 0 nor a kinder code than
  what happened (128 + signal, 3 aborted, 1 when a check failed on the partial history).

Each case records ``exit_code``, ``verdict``, ``healed`` and ``leftovers`` as junit properties
(``--junitxml``), for the matrix's table. Waits are for progress (files of the run growing,
leftovers going away; tests/waiting.py), bounded generously, so a busy machine is slow, not
failing.

Every interruption runs on the local backend for every fault (and a SIGKILL also on the
power-loss layer); `make test` runs each interruption during one or more faults (ten game days),
the cases that complete the matrix are marked ``chaos`` and run nightly (`make chaos`). On
Docker a game day costs minutes, so five cases cover each interruption once and each fault at
least once; they are marked ``docker`` and ``chaos``: `make test-docker` (and `make chaos`)
runs them, `make test` does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaos.backends import open_cluster
from chaos.backends.base import Backend
from chaos.backends.docker import DockerCluster
from chaos.backends.docker_plan import LABEL, cluster_name
from chaos.backends.local import LocalCluster
from chaos.backends.subnets import claims, listening_octets
from chaos.deadman import lapse_marker, read_lease, registered_guards, tear_down
from chaos.nemesis import recorded_faults
from checks.report import EXIT_ABORTED, EXIT_FAIL
from tests.waiting import wait_for

# Each case is a game day: the 300 s default per test is no bound for one on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STALL = 180.0  # seconds in which nothing of the run moved: it is stuck, not slow
BOUND = 600.0  # an upper bound for a hung run, not a deadline for a slow one


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
    # A power-off on the power-loss layer: every storage node's data dir is a FUSE mount.
    "power-loss": "fault: power_loss_az, target: az-c",
}
# Faults that fail canary probes at once, for the stop condition (a paused follower fails
# none: the router's process is paused instead).
STOPPING_FAULTS = {
    "partition": FAULTS["partition"],
    "power-off": FAULTS["power-off"].replace("az-c", "az-b"),
    "pause": "fault: pause_node, target: rt-b",
}


def case_id(backend: str, values: tuple[object, ...]) -> str:
    return "-".join([backend, *(getattr(v, "name", str(v)) for v in values)])


def on_docker(*values: object) -> Any:
    """A case run on the Docker backend: only by `make test-docker` and `make chaos`."""
    marks = [pytest.mark.docker, pytest.mark.chaos, pytest.mark.timeout(1500)]
    return pytest.param("docker", *values, marks=marks, id=case_id("docker", values))


def on_local(*values: object, nightly: bool = False) -> Any:
    """A case on local processes; ``nightly`` ones complete the matrix in `make chaos` (each
    interruption's other cases run in `make test`, whose time budget is not the matrix's)."""
    marks = [pytest.mark.chaos] if nightly else []
    return pytest.param("local", *values, marks=marks, id=case_id("local", values))


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


@dataclass(frozen=True)
class Task:
    """A process as /proc shows it: enough to tell it from a later one reusing its pid."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    start: str
    argv: str


def tasks() -> dict[int, Task]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if fields[0] == "Z":  # dead, not yet reaped: gone
            continue
        pid = int(entry.name)
        found[pid] = Task(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[19], argv)
    return found


def descendants(root: int) -> list[Task]:
    """``root``'s process tree now, and every process in a session or group one of them leads
    (children started in a new session, then reparented, are still found by their session)."""
    everything = tasks()
    children: dict[int, list[Task]] = {}
    for task in everything.values():
        children.setdefault(task.ppid, []).append(task)
    tree, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            tree.append(child)
            todo.append(child.pid)
    leaders = {t.pid for t in tree}
    tree += [
        t for t in everything.values() if t not in tree and (t.sid in leaders or t.pgid in leaders)
    ]
    return tree


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (any file system: the FUSE layer, binds, tmpfs)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


class Run:
    """`gameday run` as a child process, and what it left in its run directory."""

    def __init__(
        self, tmp_path: Path, scenario_path: Path, *args: str, backend: str = "local"
    ) -> None:
        self.tmp_path = tmp_path
        self.out = tmp_path / "runs"
        self.backend = backend
        self.keep = "--keep" in args
        self.tree: list[Task] = []  # what the run had started, as seen before it was cut short
        self.netns_before = docker_netns() if backend == "docker" else set()
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

    @property
    def data_dir(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "cluster"

    def events(self) -> list[dict[str, Any]]:
        run_dir = self.run_dir
        if run_dir is None or not (run_dir / "events.jsonl").exists():
            return []
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def names(self) -> list[str]:
        return [e["event"] for e in self.events()]

    def progress(self) -> tuple[int, ...]:
        """How far the run got: the sizes of its output and of the files it and its cluster
        write (events, canaries, Locust, the watchdog's log, the nodes' logs)."""
        files = [Path(self.log.name)]
        if self.run_dir is not None:
            files += [*self.run_dir.glob("*"), *self.run_dir.glob("cluster/logs/*")]
        sizes = []
        for path in files:
            try:
                sizes.append(path.stat().st_size)
            except OSError:
                sizes.append(-1)
        return (len(sizes), *sizes)

    def wait_until(self, what: str, predicate: Callable[[], bool], *, exited: bool = False) -> None:
        """Until ``predicate()``; fails if the run stops moving, or exits first (unless
        ``exited`` allows that)."""

        def check() -> bool:
            if predicate():
                return True
            assert exited or self.proc.poll() is None, (
                f"gameday exited ({self.proc.returncode}) before {what}: {self.output()}"
            )
            return False

        wait_for(what, check, progress=self.progress, stall=STALL, bound=BOUND, every=0.5)

    def wait_confirmed(self) -> None:
        self.wait_until("a confirmed fault", lambda: "fault_confirmed" in self.names())

    def interrupt(self, sig: int) -> None:
        """``sig`` to the run, having first noted every process it started."""
        self.tree = descendants(self.proc.pid)
        self.proc.send_signal(sig)

    def wait_exit(self) -> int:
        self.wait_until("the run's exit", lambda: self.proc.poll() is not None, exited=True)
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def verdict(self) -> dict[str, Any]:
        assert self.run_dir is not None
        data: dict[str, Any] = json.loads((self.run_dir / "checks.json").read_text())
        return data

    def cluster(self) -> Backend:
        return open_cluster(self.data_dir)

    def leftovers(self, *, kept: bool = False) -> list[str]:
        """What this run started that is still there: processes (cluster, Toxiproxy, Locust,
        the watchdog, the FUSE daemons), listeners on its subnet, its subnet claim, mounts, and
        on Docker containers, networks and volumes. ``kept``: a cluster kept with ``--keep``
        and what serves it (its processes, Toxiproxy, their log pipes) are not left over."""
        if self.run_dir is None:
            return []
        marker = str(self.run_dir.resolve())
        now = tasks()
        allowed = self.kept_pids() if kept else set()
        found = [
            f"process {t.pid} {t.argv[:100]}"
            for t in now.values()
            if t.pid not in allowed
            and t.pid != os.getpid()
            and (
                marker in t.argv
                or any(t.pid == s.pid and t.start == s.start for s in self.tree)
                or any(t.sid == s.pid or t.pgid == s.pid for s in self.tree if s.pid not in allowed)
            )
        ]
        if kept:
            return found
        found += [f"mount {m}" for m in mounts_under(self.run_dir)]
        if self.backend == "docker":
            found += [f"network namespace {n}" for n in sorted(docker_netns() - self.netns_before)]
            return found + docker_objects(cluster_name(self.data_dir))
        if (self.data_dir / "cluster.json").exists():  # Toxiproxy's argv does not name the run
            octet = LocalCluster.open(self.data_dir).config.process("sn-a1").listen
            x = int(octet.split(".")[1])
            owner = claims().get(x, {}).get("owner")
            mine = f"dir:{self.data_dir.resolve()}"
            if owner == mine:
                found.append(f"subnet claim 127.{x}.0.0/16")
            # Once the run gave its subnet back, another cluster on the machine may take it.
            if owner in (None, mine) and x in listening_octets():
                found.append(f"something still listens on 127.{x}.*")
        return found

    def kept_pids(self) -> set[int]:
        """The kept cluster's processes and the log pipes feeding their logs."""
        cluster = self.cluster()
        assert isinstance(cluster, LocalCluster)
        ids = [*cluster.process_ids(), "toxiproxy"]
        ids += [p.stem for p in cluster.procs.run_dir.glob("lazyfs-*.pid")]
        pids = {pid for i in ids if (pid := cluster.procs.pid(i)) is not None}
        logs = str(cluster.procs.log_dir.resolve())
        return pids | {
            t.pid for t in tasks().values() if "chaos.backends.logpipe" in t.argv and logs in t.argv
        }

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


def docker_netns() -> set[str]:
    """The engine's network namespaces (one per container sandbox), bar its own ``default``:
    a namespace that outlives its container is left behind. Docker runs are serialized (the
    heavy-run queue), so new ones during a case are the case's."""
    root = Path("/var/run/docker/netns")
    return {p.name for p in root.iterdir()} - {"default"} if root.is_dir() else set()


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
def runs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Run]]:
    started: list[Run] = []

    def start(scenario_path: Path, *args: str, backend: str = "local") -> Run:
        if backend == "docker":  # started if possible, else the case skips with the reason
            request.getfixturevalue("docker_engine")
        run = Run(tmp_path, scenario_path, *args, backend=backend)
        started.append(run)
        return run

    yield start
    for run in started:  # whatever the test did, nothing of the run outlives it
        run.close()
        if run.run_dir is not None and (run.data_dir / "cluster.json").exists():
            if not run.keep:  # the watchdog's bounded teardown first, then ours
                with contextlib.suppress(AssertionError):
                    wait_gone(run)
            tear_down(run.cluster(), run.data_dir)


def wait_gone(run: Run) -> None:
    """Leftovers die within the watchdog's bounded teardown: wait while they go away."""
    wait_for(
        "nothing left",
        lambda: not run.leftovers(),
        progress=run.leftovers,
        stall=90,
        bound=300,
        every=1.0,
    )


def record(request: pytest.FixtureRequest, **figures: object) -> None:
    """A case's figures, printed (`pytest -rP` shows them) and kept as the test item's
    user_properties (a plugin can gather them; --junitxml writes them with junit_family=xunit1)."""
    request.node.user_properties.extend(figures.items())
    print("matrix:", " ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
def matrix(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Asserts a case's three promises and records them for the matrix's table."""

    def finish(run: Run, code: int, *, verdict: str | None, healed: str) -> None:
        with contextlib.suppress(AssertionError):  # the assertion below says what is left
            wait_gone(run)
        left = run.leftovers()
        record(request, exit_code=code, verdict=verdict or "-", healed=healed, leftovers=len(left))
        assert left == [], left
        assert code != 0, "an interrupted run exited 0"

    return finish


def assert_healed(cluster: Backend) -> None:
    mesh = cluster.mesh()
    assert mesh is not None
    assert all(not mesh.toxics(name) for name in mesh.proxies()), "toxics left behind"
    assert all(p.enabled for p in mesh.proxies().values())
    assert recorded_faults(cluster.state_dir) == {}
    for process_id in cluster.process_ids():
        assert cluster.alive(process_id), f"{process_id} is not running"
        assert not paused(cluster, process_id), f"{process_id} is still paused"


def healed_by_the_run(run: Run) -> str:
    """Every fault the run started has its end (the run healed it), and none is recorded as
    active; the run then tore its cluster down. Returns "<ended>/<started>"."""
    events = run.events()
    started = {e["fault_id"] for e in events if e["event"] == "fault_start"}
    ended = {e["fault_id"] for e in events if e["event"] == "fault_end"}
    assert started, "no fault started: nothing was interrupted mid-fault"
    assert started <= ended, f"never healed: {sorted(started - ended)}"
    assert "heal" in run.names()
    assert recorded_faults(run.data_dir) == {}
    assert not (run.data_dir / "nodes").exists(), "the run did not tear its cluster down"
    return f"{len(started & ended)}/{len(started)}"


def paused(cluster: Backend, process_id: str) -> bool:
    if isinstance(cluster, DockerCluster):
        return cluster.container_status(process_id) == "paused"
    assert isinstance(cluster, LocalCluster)
    state = Path(f"/proc/{cluster.procs.pid(process_id)}/stat").read_text()
    return state.rsplit(")", 1)[1].split()[0] == "T"


def expected_exit(verdict: dict[str, Any]) -> int:
    """An aborted run's code; a check that failed on the partial history outranks the abort."""
    assert verdict["verdict"] in ("aborted", "fail"), verdict["verdict"]
    return EXIT_ABORTED if verdict["verdict"] == "aborted" else EXIT_FAIL


@pytest.mark.parametrize(
    ("backend", "fault"),
    [
        on_local("partition"),
        on_local("power-off"),
        on_local("pause"),
        on_local("power-loss", nightly=True),
        on_docker("power-off"),
    ],
)
def test_sigkill_mid_fault_tears_down_everything_the_run_started(
    backend: str,
    fault: str,
    tmp_path: Path,
    runs: Callable[..., Run],
    matrix: Callable[..., None],
) -> None:
    run = runs(scenario(tmp_path, FAULTS[fault]), backend=backend)
    run.wait_confirmed()
    if fault == "power-loss":
        assert mounts_under(run.data_dir), "the power-loss layer is not mounted"
    run.interrupt(signal.SIGKILL)
    code = run.wait_exit()
    assert run.run_dir is not None
    guard = read_lease(run.run_dir / "guard.json") or {}
    assert not guard.get("done")  # the run never finished: the watchdog did the work
    # Cluster, Toxiproxy, Locust, canaries, FUSE mounts: the watchdog stopped and removed all.
    wait_gone(run)
    assert "tearing down the cluster" in (run.run_dir / "guardian.log").read_text()
    assert recorded_faults(run.data_dir) == {}  # its faults went with the cluster
    assert not (run.data_dir / "nodes").exists()
    matrix(run, code, verdict=None, healed="torn down")


@pytest.mark.parametrize(
    ("backend", "fault"),
    [on_local("partition", nightly=True), on_local("power-off"), on_local("pause", nightly=True)],
)
def test_sigkill_with_keep_heals_the_kept_cluster_and_stops_the_load(
    backend: str,
    fault: str,
    tmp_path: Path,
    runs: Callable[..., Run],
    request: pytest.FixtureRequest,
) -> None:
    run = runs(scenario(tmp_path, FAULTS[fault]), "--keep")
    run.wait_confirmed()
    run.interrupt(signal.SIGKILL)
    code = run.wait_exit()
    cluster = LocalCluster.open(run.data_dir)
    # The watchdog heals first, then stops the load: wait for that progress, not a fixed time.
    wait_for(
        "the heal",
        lambda: not recorded_faults(cluster.state_dir),
        progress=run.progress,
        stall=STALL,
        bound=BOUND,
        every=0.5,
    )
    cluster.wait_healthy(STALL)
    assert_healed(cluster)
    # Nothing but the kept cluster: Locust, its workers and the watchdog are gone.
    wait_for(
        "nothing but the kept cluster",
        lambda: not run.leftovers(kept=True),
        progress=lambda: run.leftovers(kept=True),
        stall=90,
        bound=300,
        every=1.0,
    )
    record(request, exit_code=code, verdict="-", healed="kept, healed live", leftovers=0)
    assert code != 0


@pytest.mark.parametrize(
    ("backend", "fault", "sig"),
    [
        on_local("partition", signal.SIGTERM),
        on_local("power-off", signal.SIGTERM, nightly=True),
        on_local("pause", signal.SIGTERM),
        on_local("partition", signal.SIGINT, nightly=True),
        on_local("power-off", signal.SIGINT),
        on_local("pause", signal.SIGINT, nightly=True),
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
    matrix: Callable[..., None],
) -> None:
    run = runs(scenario(tmp_path, FAULTS[fault]), backend=backend)
    run.wait_confirmed()
    run.interrupt(sig)
    code = run.wait_exit()
    assert code == 128 + sig, run.output()
    assert "Traceback" not in run.output()
    names = run.names()
    assert names.index("interrupted") < names.index("heal") < names.index("run_end")
    ends = [e for e in run.events() if e["event"] == "fault_end"]
    assert ends and all("drift" not in e for e in ends), ends  # healed early: not drift
    assert all(f"interrupted by {sig.name}" in e["cut_short_by"] for e in ends), ends
    verdict = run.verdict()
    expected_exit(verdict)  # never a pass
    assert f"interrupted by {sig.name}" in verdict["aborted"]
    assert run.run_dir is not None and (run.run_dir / "report.html").exists()
    assert "plan-executed" in (run.run_dir / "junit.xml").read_text()
    matrix(run, code, verdict=verdict["verdict"], healed=healed_by_the_run(run))


@pytest.mark.parametrize(
    ("backend", "fault"),
    [
        on_local("partition", nightly=True),
        on_local("power-off", nightly=True),
        on_local("pause"),
        on_docker("partition"),
    ],
)
def test_sigstop_past_the_lease_heals_then_the_woken_run_ends_aborted(
    backend: str,
    fault: str,
    tmp_path: Path,
    runs: Callable[..., Run],
    matrix: Callable[..., None],
) -> None:
    run = runs(scenario(tmp_path, FAULTS[fault]), backend=backend)
    run.wait_confirmed()
    cluster = run.cluster()
    lease = cluster.state_dir / "deadman.lease"
    run.interrupt(signal.SIGSTOP)
    try:
        run.wait_until("the lease lapsing", lapse_marker(lease).exists)
        # The watchdog heals while the orchestrator is stopped: the paused node runs again,
        # the powered-off AZ is back, the cut links carry traffic again.
        run.wait_until("the heal", lambda: not recorded_faults(cluster.state_dir))
        cluster.wait_healthy(STALL)
        assert_healed(cluster)
    finally:
        os.kill(run.proc.pid, signal.SIGCONT)
    code = run.wait_exit()
    assert "lease_lapsed" in run.names()
    verdict = run.verdict()
    assert "lease lapsed" in verdict["aborted"]
    assert code == expected_exit(verdict), run.output()
    matrix(run, code, verdict=verdict["verdict"], healed=healed_by_the_run(run))


@pytest.mark.parametrize(
    ("backend", "fault"),
    [
        on_local("partition", nightly=True),
        on_local("power-off"),
        on_local("pause", nightly=True),
        on_docker("power-off"),
    ],
)
def test_a_stop_condition_aborts_the_run_and_the_faults_it_skipped_are_named(
    backend: str,
    fault: str,
    tmp_path: Path,
    runs: Callable[..., Run],
    matrix: Callable[..., None],
) -> None:
    # Canaries probe every router, so each of these faults fails some probes at once: with a
    # threshold of 100% the stop condition must fire, and the second fault must never run.
    # (Not 90%: a probe through a paused router or a cut link waits its 2 s timeout, so only
    # a few of a 2 s window's ~90 probes fail.)
    path = scenario(
        tmp_path,
        STOPPING_FAULTS[fault],
        more_faults="    - {at: 110s, duration: 5s, fault: power_off_node, target: sn-a1}\n",
        extra="stop_conditions:\n  - {availability_below: 1.0, for_seconds: 2s}\n",
    )
    run = runs(path, backend=backend)
    run.wait_until(
        "a fault", lambda: "fault_start" in run.names() or run.proc.poll() is not None, exited=True
    )
    if run.proc.poll() is None:
        run.tree = descendants(run.proc.pid)
    code = run.wait_exit()
    assert "stop_condition" in run.names(), run.output()
    assert "f2" not in {e.get("fault_id") for e in run.events() if e["event"] == "fault_start"}
    verdict = run.verdict()
    assert "stop condition" in verdict["aborted"]
    assert code == expected_exit(verdict), run.output()
    matrix(run, code, verdict=verdict["verdict"], healed=healed_by_the_run(run))


def test_a_run_killed_with_its_watchdog_takes_its_processes_along_and_clean_does_the_rest(
    tmp_path: Path, runs: Callable[..., Run], matrix: Callable[..., None]
) -> None:
    from typer.testing import CliRunner

    from chaos.cli import app

    # On the power-loss layer: the FUSE daemons die with the run, their mounts stay for clean.
    run = runs(scenario(tmp_path, FAULTS["power-loss"]))
    run.wait_confirmed()
    assert run.run_dir is not None
    assert mounts_under(run.data_dir), "the power-loss layer is not mounted"
    guard_file = (run.run_dir / "guard.json").resolve()
    guard = read_lease(guard_file) or {}
    run.tree = descendants(run.proc.pid)
    os.kill(int(guard["watchdog"]), signal.SIGKILL)  # the worst case: both die at once
    run.proc.send_signal(signal.SIGKILL)
    code = run.wait_exit()

    # No watchdog acts, yet the cluster, Toxiproxy, Locust and the FUSE daemons die with the
    # run (PDEATHSIG).
    def processes_left() -> list[str]:
        return [x for x in run.leftovers() if x.startswith("process ")]

    wait_for(
        "the run's processes gone",
        lambda: not processes_left(),
        progress=processes_left,
        every=1.0,
    )
    # What is left is for `gameday clean`: the run's registration, data, subnet claim, mounts.
    assert guard_file in registered_guards()
    owner = f"dir:{run.data_dir.resolve()}"
    assert any(c["owner"] == owner for c in claims().values())
    listed = CliRunner().invoke(app, ["clean", "--dry-run"])
    assert listed.exit_code == 0 and "killed run" in listed.output, listed.output
    assert guard_file in registered_guards()  # a dry run removes nothing
    cleaned = CliRunner().invoke(app, ["clean"])
    assert cleaned.exit_code == 0, cleaned.output
    assert guard_file not in registered_guards()
    assert not any(c["owner"] == owner for c in claims().values())
    assert not (run.data_dir / "nodes").exists()
    assert recorded_faults(run.data_dir) == {}
    matrix(run, code, verdict=None, healed="torn down by clean")
