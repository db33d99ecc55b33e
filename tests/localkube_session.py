"""One local Kubernetes for the whole test session, shared by every test that asks for it.

``make test`` runs the k8s tests (tests/k8s/test_localkube.py, the game day of
tests/chaos/test_k8s_backend.py) on one cluster: 3 AZs x 2 racks plus the infra node, the cluster
image imported once. tests/conftest.py moves those tests to the end of the session, so the
cluster runs only while they do, and tears it down when they are done; the teardown then fails
the session if ``down`` could not remove something or if anything of the cluster's kind is left
on the host (chaos/k8s/traces.py, compared with before ``up``). Ctrl-C and, while the cluster
runs, SIGTERM interrupt the test in order and run the teardown; a SIGKILLed pytest is covered by
the guard process ``up`` starts (it runs ``down`` when pytest dies).

Without root, the toolchain (``make k8s-toolchain``) or a Docker engine for the cluster image,
the tests skip with the reason; on CI (``CI`` set, .ci/run prepares all of it) that is a failure
instead, never a silent skip. A local Kubernetes that already runs here (``gameday k8s up``) is
used as it is and left running. The times of ``up`` and ``down`` and the game day's figures are
printed at the end of the session (``REPORT``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

import pytest

from chaos.k8s.localkube import LocalKube, unavailable_reason
from chaos.k8s.nodes import parse_shape
from chaos.k8s.traces import host_state, left_behind

ROOT = Path(__file__).resolve().parents[1]
SHAPE = "3x2"  # one node per rack of the shipped scenarios' 3x2x1 topology, plus infra
# Beside `gameday k8s up`'s .gameday/k8s: the node image archives (.gameday/k8s-images) are shared.
STATE_DIR = ROOT / ".gameday" / "k8s-test"
REPORT: list[str] = []  # lines for the session summary (tests/conftest.py prints them)


def _cannot(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the k8s tests (.ci/run prepares them), but {reason}")
    pytest.skip(reason)


def _ensure_cluster_image() -> None:
    """The docker backend's image, current with this source (the nodes import it)."""
    from chaos.images import EngineUnavailable, build_images, ensure_engine, image_is_current

    try:
        client = ensure_engine(start=True)
    except EngineUnavailable as exc:
        _cannot(f"the local Kubernetes' nodes need the cluster image from a Docker engine: {exc}")
    if not image_is_current(client):
        started = time.monotonic()
        build_images()
        REPORT.append(f"cluster image (re)built: {time.monotonic() - started:.1f}s")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def session_kube() -> Iterator[LocalKube]:
    """The body of the ``local_kube`` session fixture (see the module docstring)."""
    reason = unavailable_reason()
    if reason is not None:
        _cannot(f"the local Kubernetes cannot run here: {reason}")
    running = LocalKube()
    if running.is_up():
        have = {n.name for n in running.nodes()}
        missing = [n.name for n in parse_shape(SHAPE, infra=True) if n.name not in have]
        if missing:
            _cannot(f"the running local Kubernetes lacks nodes {missing}: start it as {SHAPE}")
        REPORT.append(f"used the local Kubernetes already running ({running.state_dir}), left up")
        yield running
        return
    busy = running.busy_reason()
    if busy is not None:
        _cannot(f"the local Kubernetes is busy: {busy}")
    _ensure_cluster_image()
    kube = LocalKube(STATE_DIR)
    before = host_state(kube.state_dir)
    started = time.monotonic()
    # SIGTERM as Ctrl-C: the running test stops its game day in order, then `down` below runs.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        kube.up(shape=SHAPE, owner_pid=os.getpid())
        took = time.monotonic() - started
        REPORT.append(f"k8s up ({SHAPE} + infra, 7 nodes Ready, images imported): {took:.1f}s")
        yield kube
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut `down` short
        try:
            started = time.monotonic()
            left = kube.down()
            took = time.monotonic() - started
            traces = left_behind(before, host_state(kube.state_dir))
            REPORT.append(f"k8s down: {took:.1f}s; left on the host: {left or traces or 'nothing'}")
        finally:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)
    assert not left, f"k8s down could not remove: {left}"
    assert not traces, f"left on the host after k8s down: {traces}"
