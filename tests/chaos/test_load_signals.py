"""`gameday load` never leaves Locust behind: not on SIGTERM, not on SIGKILL of the command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos.backends.local import LocalCluster
from chaos.clean import processes
from chaos.deadman import pid_alive
from tests.local_nodes import free_port

pytestmark = pytest.mark.slow


def locust_children(parent: int) -> list[int]:
    """``parent``'s Locust children (python -m locust), not any child whose arguments merely
    mention "locust": the watchdog's guard file lies under this test's tmp_path, whose name
    does, and a SIGTERM sent on seeing the watchdog came before Locust even started."""
    return [p.pid for p in processes() if p.ppid == parent and p.argv[1:3] == ("-m", "locust")]


def watchdogs_of(cluster: LocalCluster) -> list[int]:
    """Watchdogs (python -m chaos.deadman) guarding a command on ``cluster``."""
    under = str(cluster.data_dir.resolve()) + "/"
    return [
        p.pid
        for p in processes()
        if p.argv[1:3] == ("-m", "chaos.deadman") and any(a.startswith(under) for a in p.argv)
    ]


def wait(predicate, what: str, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout  # a bound for a hang, not a deadline for slowness
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_load_web_stops_locust_when_it_is_stopped(
    sig: signal.Signals, fresh_cluster: LocalCluster, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "chaos.cli_entry", "load", "--web", "--data-dir"]
    load = subprocess.Popen(
        [*argv, str(fresh_cluster.data_dir), "--web-port", str(free_port("127.0.0.1"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        wait(lambda: bool(locust_children(load.pid)) or load.poll() is not None, "Locust")
        children = locust_children(load.pid)
        assert children, f"gameday load exited {load.returncode} before starting Locust"
        load.send_signal(sig)
        code = load.wait(120)
        if sig == signal.SIGTERM:
            assert code == 128 + sig
        wait(lambda: not any(pid_alive(c) for c in children), "Locust exit", 120)
    finally:
        load.kill()
        # Its watchdog heals the cluster when it finds the command gone (restarting what is
        # down): let it finish before the fixture stops the cluster, or it restarts processes
        # after the teardown (beside CPU hogs two routers outlived the test that way).
        wait(lambda: not watchdogs_of(fresh_cluster), "the watchdog's exit", 300)
        for child in children:
            if pid_alive(child):
                subprocess.run(["kill", "-9", str(child)], check=False)
