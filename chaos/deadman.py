"""The dead-man's switch: a watchdog process that heals, and tears down, whatever its owner left.

Two promises are kept by one separate process (in its own session, so Ctrl-C, a killed process
group or a stalled owner do not touch it), driven by a small JSON *guard file* its owner keeps
up to date:

- **The lease.** The orchestrator holds a lease file it renews every ttl/6 seconds. If the lease
  is not renewed for ``ttl`` seconds (SIGSTOP, a hang, SIGKILL) the watchdog marks it *lapsed*
  (a marker file created with O_EXCL, never a lock a stopped owner could hold), heals
  everything (toxics removed, paused processes resumed, dead ones started) and stays armed:
  while the lease stays lapsed it heals again whenever a fault shows up in ``faults.json`` (an
  orchestrator that woke up mid-injection). An orchestrator that wakes up finds its lease
  lapsed, injects nothing more, and ends the run as aborted (chaos/orchestrator.py). The marker
  is authoritative, so a late renewal cannot undo a lapse.
- **Nothing left behind.** When the owner process dies without saying it is done (SIGKILL), the
  watchdog heals, stops the process groups the owner registered (Locust and its workers), and
  tears down the cluster the owner started (unless it was asked to keep it), then exits.

    guard = Guard.spawn(run_dir / "guard.json", run_dir / "guardian.log")
    guard.update(backend="local", data_dir=str(data_dir), teardown=True)
    guard.add_group(locust.pid)                        # its whole process group dies with us
    lease = Lease(state_dir / "deadman.lease"); guard.update(lease=str(lease.path))
    ...
    lease.release(); guard.finish()                    # normal end: the watchdog exits

``spawn_watchdog(backend, lease)`` is the lease-only form (``gameday fault --duration``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaos.backends.base import Backend
from chaos.backends.processes import pid_alive, start_time

log = logging.getLogger(__name__)
HELD, LAPSED, RELEASED = "held", "lapsed", "released"
DEFAULT_TTL = 6.0  # generous: on a busy 2-core machine a renewal thread can be late by seconds
MAX_LIFETIME = 24 * 3600.0  # even a forgotten watchdog ends
LOCK_TIMEOUT = 5.0  # then heal without the nemesis lock: its holder is stalled or dead


# --- the lease -----------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_lease(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def lapse_marker(path: Path) -> Path:
    return path.with_name(path.name + ".lapsed")


def mark_lapsed(path: Path, reason: str) -> str:
    """Create the lapse marker (first writer wins); returns the reason that stands."""
    try:
        fd = os.open(lapse_marker(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return str((read_lease(lapse_marker(path)) or {}).get("reason", reason))
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({"reason": reason, "lapsed_at": time.time()}))
    return reason


def expire_if_due(path: Path, now: float | None = None) -> dict[str, Any] | None:
    """The lease as it is now; a held lease past its ttl is marked lapsed first.

    No lock is taken (a stopped owner could hold it forever): the lapse is a marker file created
    with O_EXCL, and once it exists the lease is lapsed whatever the owner writes later.
    """
    data = read_lease(path)
    if data is None:
        return None
    marker = read_lease(lapse_marker(path))
    if marker is not None and data.get("state") != RELEASED:
        return {**data, "state": LAPSED, "reason": marker.get("reason", "lapsed")}
    now = time.time() if now is None else now
    if data.get("state") == HELD:
        late = now - float(data.get("renewed", 0.0))
        ttl = float(data.get("ttl", DEFAULT_TTL))
        if late > ttl:
            reason = mark_lapsed(
                path,
                f"the lease was not renewed for {late:.1f}s (ttl {ttl:g}s): "
                "the orchestrator stalled",
            )
            return {**data, "state": LAPSED, "reason": reason}
    return data


class Lease:
    """The orchestrator's side: renewed from a thread; ``held()`` tests it before each action."""

    def __init__(self, path: Path, ttl: float = DEFAULT_TTL) -> None:
        self.path = path
        self.ttl = ttl
        self.lapsed: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        lapse_marker(path).unlink(missing_ok=True)
        self._renewed = time.time()
        _write_json(path, {"state": HELD, "renewed": self._renewed, "ttl": ttl})
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()

    def held(self) -> bool:
        """Renew now; False (and ``lapsed`` says why) if the lease lapsed since the last time."""
        with self._lock:
            if self.lapsed is not None:
                return False
            marker = read_lease(lapse_marker(self.path))
            now = time.time()
            if marker is not None:
                self.lapsed = str(marker.get("reason", "lapsed"))
            elif now - self._renewed > self.ttl:  # we stalled ourselves: say so, stop acting
                self.lapsed = mark_lapsed(
                    self.path,
                    f"the lease was not renewed for {now - self._renewed:.1f}s "
                    f"(ttl {self.ttl:g}s): the orchestrator stalled",
                )
            if self.lapsed is not None:
                self._stop.set()
                return False
            self._renewed = now
            _write_json(self.path, {"state": HELD, "renewed": now, "ttl": self.ttl})
            return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 6):
            self.held()

    def stop_renewing(self) -> None:
        """Stop the renewals without releasing, as a stalled orchestrator would (for tests)."""
        self._stop.set()

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ttl)
        with self._lock:
            data = {"state": RELEASED, "ttl": self.ttl}
            if self.lapsed is not None:
                data["reason"] = self.lapsed
            _write_json(self.path, data)


# --- the owner's guard file ----------------------------------------------------------------


class Guard:
    """The owner's side of the watchdog: what to heal and tear down if the owner dies."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.path = path
        self.proc = proc

    @classmethod
    def spawn(cls, path: Path, log_path: Path, **fields: Any) -> Guard:
        path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, {"owner": os.getpid(), "owner_start": start_time(os.getpid())})
        guard = cls(path)
        guard.update(**fields)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "chaos.deadman", "--guard", str(path)]
        with log_path.open("ab") as out:
            guard.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C or a killed group leaves it running
            )
        guard.update(watchdog=guard.proc.pid, watchdog_start=start_time(guard.proc.pid))
        register_guard(path)
        return guard

    def read(self) -> dict[str, Any]:
        return read_lease(self.path) or {}

    def update(self, **fields: Any) -> None:
        with _locked(self.path):
            _write_json(self.path, {**self.read(), **fields})

    def add_group(self, pid: int) -> None:
        """Stop ``pid``'s process group (it leads one) if the owner dies."""
        with _locked(self.path):
            data = self.read()
            data["groups"] = [*data.get("groups", []), [pid, start_time(pid)]]
            _write_json(self.path, data)

    def finish(self, timeout: float = 10.0) -> None:
        """The owner cleaned up after itself: the watchdog exits."""
        self.update(done=True)
        unregister_guard(self.path)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


GUARDS_ENV = "GAMEDAY_GUARD_REGISTRY"


def guard_registry() -> Path:
    """Where every live guard file on the machine is listed, for `gameday clean`."""
    return Path(os.environ.get(GUARDS_ENV) or "/tmp/gameday-guards")


def _entry(path: Path) -> Path:
    import hashlib

    return guard_registry() / (hashlib.sha256(str(path).encode()).hexdigest()[:16] + ".json")


def register_guard(path: Path) -> None:
    guard_registry().mkdir(parents=True, exist_ok=True)
    _write_json(_entry(path), {"guard": str(path)})


def unregister_guard(path: Path) -> None:
    _entry(path).unlink(missing_ok=True)


def registered_guards() -> list[Path]:
    root = guard_registry()
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.glob("*.json")):
        data = read_lease(entry) or {}
        if "guard" in data:
            found.append(Path(data["guard"]))
        else:
            entry.unlink(missing_ok=True)
    return found


def spawn_watchdog(backend: Backend, lease: Lease) -> subprocess.Popen[bytes]:
    """A watchdog for ``lease`` alone: it heals ``backend`` when the lease lapses."""
    guard = Guard.spawn(
        lease.path.with_name(lease.path.name + ".guard"),
        backend.state_dir / "logs" / "deadman.log",
        backend=backend.name,
        data_dir=str(backend.state_dir),
        lease=str(lease.path),
        lease_only=True,
    )
    assert guard.proc is not None
    return guard.proc


# --- the watchdog ----------------------------------------------------------------------------


def open_backend(kind: str, data_dir: Path) -> Backend:
    if kind == "local":
        from chaos.backends.local import LocalCluster

        return LocalCluster.open(data_dir)
    if kind == "docker":
        from chaos.backends.docker import DockerCluster

        return DockerCluster.open(data_dir)
    if kind == "k8s":
        from chaos.backends.k8s import K8sCluster

        return K8sCluster.open(data_dir)
    raise ValueError(f"unknown backend {kind!r}")


def tear_down(cluster: Any, data_dir: Path) -> None:
    """Stop a cluster a run started and drop its data, keeping logs and config for the report.

    On Docker that removes every container, the network and the volumes; locally it also gives
    the loopback subnet back.
    """
    from chaos.nemesis import forget_faults

    cluster.down()
    forget_faults(cluster.state_dir)  # a SIGKILLed run's faults went with the cluster
    shutil.rmtree(data_dir / "nodes", ignore_errors=True)
    shutil.rmtree(data_dir / "backing", ignore_errors=True)  # under the power-loss layer
    if hasattr(cluster, "remove_volumes"):
        cluster.remove_volumes()
    if hasattr(cluster, "release_subnet"):
        cluster.release_subnet()


def stop_group(pid: int, start: str | None, grace: float = 5.0) -> None:
    """SIGTERM then SIGKILL the process group ``pid`` leads, if it is still that process."""
    if start is None or start_time(pid) != start:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Watchdog:
    def __init__(self, guard_path: Path) -> None:
        self.guard_path = guard_path
        self.healed_lapse = False

    def plan(self) -> dict[str, Any]:
        return read_lease(self.guard_path) or {}

    def backend(self, plan: dict[str, Any]) -> Backend | None:
        if not plan.get("data_dir"):
            return None
        try:
            return open_backend(str(plan.get("backend", "local")), Path(plan["data_dir"]))
        except (OSError, ValueError) as exc:
            log.warning("cannot open the cluster: %s", exc)
            return None

    def heal(self, plan: dict[str, Any], why: str) -> None:
        backend = self.backend(plan)
        if backend is None:
            return
        from chaos.nemesis import Nemesis

        log.warning("healing the cluster: %s", why)
        try:
            Nemesis(backend, lock_timeout=LOCK_TIMEOUT).heal_all()
            log.warning("healed")
        except Exception:  # keep guarding: the next poll tries again
            log.exception("heal failed")

    def step(self) -> bool:
        """One look at the owner and its lease; False once there is nothing left to guard."""
        plan = self.plan()
        owner = int(plan.get("owner", 0))
        owner_alive = owner > 0 and start_time(owner) == plan.get("owner_start")
        lease_path = Path(plan["lease"]) if plan.get("lease") else None
        lease = expire_if_due(lease_path) if lease_path is not None else None
        state = (lease or {}).get("state")
        if plan.get("done") or (plan.get("lease_only") and state in (RELEASED, None)):
            return False
        if state == LAPSED:
            from chaos.nemesis import recorded_faults

            backend_dir = Path(plan["data_dir"]) if plan.get("data_dir") else None
            active = backend_dir is not None and bool(recorded_faults(backend_dir))
            if not self.healed_lapse or active:  # armed still: heal what a late owner did
                self.heal(plan, str((lease or {}).get("reason", "the lease lapsed")))
                self.healed_lapse = True
        if owner_alive:
            return True
        # The owner died without finishing: undo what it was doing, then what it started.
        if lease_path is not None and state == HELD:
            mark_lapsed(lease_path, "the orchestrator died")
        teardown = bool(plan.get("teardown") and plan.get("data_dir"))
        if state == HELD and not teardown:  # a torn-down cluster needs no healing first
            self.heal(plan, "the owner died holding its lease")
        for pid, start in plan.get("groups", []):
            log.warning("stopping process group %s", pid)
            stop_group(int(pid), start)
        cluster = self.backend(plan) if teardown else None
        if cluster is not None:
            log.warning("tearing down the cluster in %s", plan["data_dir"])
            tear_down(cluster, Path(plan["data_dir"]))
        return False

    def run(self, poll: float = 0.2) -> None:
        started = time.monotonic()
        try:
            while time.monotonic() - started < MAX_LIFETIME:
                if not self.step():
                    return
                time.sleep(poll)
        finally:
            unregister_guard(self.guard_path)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.deadman", description=__doc__)
    parser.add_argument("--guard", required=True, type=Path, help="the owner's guard file")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s deadman %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the owner's to handle
    Watchdog(args.guard).run()
    log.info("nothing left to guard: exiting")


if __name__ == "__main__":
    main()
