"""The dead-man's switch on its own: the lease's states, and a guard that outlives its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos.deadman import GUARDS_ENV, LAPSED, Lease, expire_if_due, pid_alive, read_lease


@pytest.fixture(autouse=True)
def guard_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(GUARDS_ENV, str(tmp_path / "guards"))
    return tmp_path / "guards"


def test_a_renewed_lease_stays_held(tmp_path: Path) -> None:
    # A ttl well above a busy machine's scheduling delays (a renewal thread starved past the
    # ttl would rightly lapse); wait for two renewals by the thread, not for a fixed time.
    lease = Lease(tmp_path / "l", ttl=5.0)
    try:
        first = read_lease(lease.path)["renewed"]  # type: ignore[index]
        renewals: set[float] = set()
        deadline = time.monotonic() + 60
        while len(renewals) < 2 and time.monotonic() < deadline:
            renewals.add(read_lease(lease.path)["renewed"])  # type: ignore[index]
            renewals.discard(first)
            time.sleep(0.1)
        assert len(renewals) >= 2, "the renew thread never renewed the lease"
        assert lease.held() and expire_if_due(lease.path)["state"] == "held"  # type: ignore[index]
    finally:
        lease.release()
    assert read_lease(lease.path)["state"] == "released"  # type: ignore[index]


def test_a_late_renewal_cannot_undo_a_lapse(tmp_path: Path) -> None:
    lease = Lease(tmp_path / "l", ttl=0.5)
    lease.stop_renewing()  # as if SIGSTOPped
    data = expire_if_due(lease.path, now=time.time() + 1.0)  # the watchdog looks, later
    assert data is not None and data["state"] == LAPSED and "not renewed" in data["reason"]
    assert not lease.held()  # the woken orchestrator finds out, and renews nothing
    assert lease.lapsed is not None and "stalled" in lease.lapsed
    assert expire_if_due(lease.path)["state"] == LAPSED  # type: ignore[index]


def test_the_orchestrator_notices_its_own_stall(tmp_path: Path) -> None:
    lease = Lease(tmp_path / "l", ttl=0.3)
    lease.stop_renewing()
    time.sleep(0.5)
    assert not lease.held()


OWNER = """
import sys, subprocess, time
from pathlib import Path
from chaos.deadman import Guard
guard = Guard.spawn(Path(sys.argv[1]), Path(sys.argv[2]))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True)
guard.add_group(child.pid)
print(child.pid, guard.proc.pid, flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_owner_stops_the_groups_it_registered(
    tmp_path: Path, guard_registry: Path
) -> None:
    guard_file = tmp_path / "guard.json"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(guard_file), str(tmp_path / "guard.log")],
        stdout=subprocess.PIPE,
        env={**os.environ, GUARDS_ENV: str(guard_registry)},
    )
    assert owner.stdout is not None
    child, watchdog = (int(x) for x in owner.stdout.readline().split())
    try:
        assert pid_alive(child) and list(guard_registry.glob("*.json"))
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        for _ in range(600):
            if not pid_alive(child) and not pid_alive(watchdog):
                break
            time.sleep(0.1)
        assert not pid_alive(child), "the owner's Locust-like child outlived it"
        assert not pid_alive(watchdog), "the watchdog should exit once its work is done"
        assert not list(guard_registry.glob("*.json"))  # nothing for `gameday clean` to do
        assert not json.loads(guard_file.read_text()).get("done")
    finally:
        for pid in (child, watchdog):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_torn_down_cluster_keeps_no_record_of_active_faults(tmp_path: Path) -> None:
    """A SIGKILLed run's watchdog tears down without healing first: the faults it had recorded
    went with the cluster, and neither `gameday fault list` nor a campaign may list them."""
    from chaos.deadman import tear_down
    from chaos.nemesis import recorded_faults

    class Stopped:
        state_dir = tmp_path
        downs = 0

        def down(self) -> None:
            self.downs += 1

    (tmp_path / "faults.json").write_text('{"f1": {"kind": "power_off_az"}}')
    (tmp_path / "nodes" / "sn-a1").mkdir(parents=True)
    cluster = Stopped()
    tear_down(cluster, tmp_path)
    assert cluster.downs == 1
    assert recorded_faults(tmp_path) == {}
    assert not (tmp_path / "nodes").exists()
