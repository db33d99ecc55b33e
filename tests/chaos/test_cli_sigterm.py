"""Commands that let SIGTERM stop them as Ctrl-C does (`gameday load`, `gameday k8s up`,
`gameday fault ... --duration`) put the process's previous SIGTERM handler back on every way
out: success, failure, Ctrl-C and SIGTERM itself. Run in-process (a test suite), they used to
leave theirs installed, and pytest then ignored a CI's SIGTERM (session 9).

The commands run here with everything around them faked: only their signal handling is real.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer

from chaos import fault_cli, load_cli
from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.cli_common import sigterm_interrupts
from chaos.k8s import cli as k8s_cli
from chaos.k8s.nodes import LocalKubeError


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (main) thread, now
    raise AssertionError("SIGTERM did not interrupt")  # (reached only if it did not)


@pytest.fixture
def previous() -> Iterator[Callable[[int, object], None]]:
    """A SIGTERM handler of the test's own; the process's real one is back after the test."""

    def ours(signum: int, frame: object) -> None:
        raise AssertionError("the test's own SIGTERM handler ran")

    before = signal.signal(signal.SIGTERM, ours)
    try:
        yield ours
    finally:
        signal.signal(signal.SIGTERM, before)


# Ways a command's body ends: normally, with an error, with Ctrl-C, with SIGTERM.
def _ok() -> int:
    return 0


def _error() -> int:
    raise RuntimeError("boom")


def _ctrl_c() -> int:
    raise KeyboardInterrupt


def _sigterm() -> int:
    _sigterm_self()
    return 0


ENDINGS = {"ok": _ok, "error": _error, "ctrl-c": _ctrl_c, "sigterm": _sigterm}


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_helper_puts_the_previous_handler_back(previous: Any, ending: str) -> None:
    noted: list[int] = []
    with (
        pytest.raises((RuntimeError, KeyboardInterrupt))
        if ending != "ok"
        else contextlib.nullcontext(),
        sigterm_interrupts(noted.append),
    ):
        assert signal.getsignal(signal.SIGTERM) is not previous
        ENDINGS[ending]()
    assert signal.getsignal(signal.SIGTERM) is previous
    assert noted == ([signal.SIGTERM] if ending == "sigterm" else [])


def test_the_helper_puts_the_default_back(previous: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with sigterm_interrupts():
        pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# --- gameday k8s up ----------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ENDINGS)
def test_k8s_up_puts_the_previous_handler_back(
    previous: Any, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    def up(*_: object, **__: object) -> SimpleNamespace:
        if ending == "error":
            raise LocalKubeError("no kubelet")
        ENDINGS[ending]()
        return SimpleNamespace(nodes=["az-a-r1"], kubeconfig="/tmp/kubeconfig")

    monkeypatch.setattr(k8s_cli, "LocalKube", lambda: SimpleNamespace(up=up))
    expected = {"ok": contextlib.nullcontext(), "error": pytest.raises(typer.Exit)}
    with expected.get(ending, pytest.raises(KeyboardInterrupt)):
        k8s_cli.up(shape="3x1", cluster_image=False, timeout=1.0, infra_node=False)
    assert signal.getsignal(signal.SIGTERM) is previous


# --- gameday fault ... --duration --------------------------------------------------------------


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_held_fault_puts_the_previous_handler_back(
    previous: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ending: str
) -> None:
    healed: list[str] = []

    def heal(fault_id: str) -> None:
        healed.append(fault_id)
        if ending == "error":
            raise RuntimeError("heal failed")

    cluster = SimpleNamespace(
        process_ids=lambda role: ["sn-a1"],
        storage_status=lambda node: {},
        config=None,
        state_dir=tmp_path,
    )
    nemesis = SimpleNamespace(inject=lambda *a: "landed", heal=heal)
    monkeypatch.setattr(fault_cli, "_open", lambda data_dir: cluster)
    monkeypatch.setattr(fault_cli, "groups_from_status", lambda statuses: {})
    monkeypatch.setattr(fault_cli, "ClusterView", SimpleNamespace(from_config=lambda *a: None))
    plan = SimpleNamespace(describe=lambda: "a fake fault")
    monkeypatch.setattr(fault_cli, "plan_fault", lambda fault, view: plan)
    monkeypatch.setattr(fault_cli, "Nemesis", lambda cluster: nemesis)
    monkeypatch.setattr(fault_cli, "Lease", lambda path: SimpleNamespace(release=lambda: None))
    watchdog = SimpleNamespace(wait=lambda timeout: 0)
    monkeypatch.setattr(fault_cli, "spawn_watchdog", lambda cluster, lease: watchdog)
    sleep = {"ok": lambda s: None, "error": lambda s: None, "ctrl-c": lambda s: _ctrl_c()}
    sleep["sigterm"] = lambda s: _sigterm_self()
    monkeypatch.setattr(fault_cli, "time", SimpleNamespace(sleep=sleep[ending]))
    fault = SimpleNamespace(kind="fake")
    with pytest.raises(RuntimeError) if ending == "error" else contextlib.nullcontext():
        fault_cli.inject(tmp_path, fault, "5s")  # type: ignore[arg-type]
    assert len(healed) == 1  # healed on every way out, SIGTERM included
    assert signal.getsignal(signal.SIGTERM) is previous


# --- gameday load ------------------------------------------------------------------------------


class _Proc:
    pid = 4242

    def __init__(self, ending: str) -> None:
        self.ending = ending

    def wait(self, timeout: float | None = None) -> int:
        if self.ending == "error":
            return 3  # Locust saw failed requests
        return ENDINGS[self.ending]()


@pytest.mark.parametrize(
    ("ending", "code"), [("ok", None), ("error", 3), ("ctrl-c", 130), ("sigterm", 143)]
)
def test_load_puts_the_previous_handler_back(
    previous: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ending: str, code: int | None
) -> None:
    cluster = SimpleNamespace(
        endpoints=lambda: {"rt-a": "http://127.0.0.1:9"},
        config=SimpleNamespace(credentials={DEFAULT_ACCESS_KEY: "secret"}),
        data_dir=tmp_path,
        name="local",
    )
    guard = SimpleNamespace(add_group=lambda pid: None, finish=lambda: None)
    monkeypatch.setattr(load_cli, "open_cluster", lambda data_dir: cluster)
    monkeypatch.setattr(load_cli, "_ensure", lambda *a: None)
    monkeypatch.setattr(load_cli, "Guard", SimpleNamespace(spawn=lambda *a, **k: guard))
    monkeypatch.setattr(load_cli, "stop_locust", lambda proc: 1)
    started = {"ending": ending}
    monkeypatch.setattr(load_cli, "start_locust", lambda *a, **k: _Proc(started["ending"]))

    def run() -> int | None:
        try:
            load_cli.load(data_dir=tmp_path, run_time="1s")
        except typer.Exit as exc:
            return exc.exit_code
        return None

    assert run() == code
    assert signal.getsignal(signal.SIGTERM) is previous
    started["ending"] = "ok"  # the next run in this process is not taken for interrupted
    assert run() is None
    assert signal.getsignal(signal.SIGTERM) is previous
