"""`gameday doctor` and `gameday setup`: real lookups, real builds, real exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from chaos import setup_cli
from chaos.cli import app
from chaos.doctor import Finding, exit_code, run_checks
from chaos.setup_cli import SetupError, install_toxiproxy, run_with_progress

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def _text(output: str) -> str:
    return " ".join(output.split())


def test_doctor_passes_here_and_names_every_check() -> None:
    """The dev venv has toxiproxy-server in .venv/bin (make test builds it)."""
    result = runner.invoke(app, ["doctor"], env=WIDE)

    assert result.exit_code == 0, result.output
    for name in ("Python", "toxiproxy-server", "Go", "loopback subnets", "ports", "disk"):
        assert name in result.output
    assert "Docker engine" in result.output
    assert "k8s toolchain" in result.output


def test_doctor_fails_without_toxiproxy_and_prints_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Python whose directory holds no toxiproxy-server, and a PATH without one either.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    result = runner.invoke(app, ["doctor"], env=WIDE)

    assert result.exit_code == 1, result.output
    text = _text(result.output)
    assert "MISSING" in text
    assert "gameday setup toxiproxy" in text


def test_optional_findings_never_fail_the_doctor() -> None:
    ok = Finding("Python", True, "3.11")
    assert exit_code([ok, Finding("Docker engine", False, "none", "x", required=False)]) == 0
    assert exit_code([ok, Finding("toxiproxy-server", False, "none", "x")]) == 1


def test_every_finding_of_a_failing_check_has_a_fix() -> None:
    for finding in run_checks():
        assert finding.ok or finding.fix, finding


def test_a_failing_installer_reports_its_exit_code_and_last_lines() -> None:
    argv = ["bash", "-c", "echo step one; echo step two failed; exit 3"]

    with pytest.raises(SetupError, match=r"bash exited with 3:\n  step one\n  step two failed"):
        run_with_progress(argv, "t", Console(file=io.StringIO()))


def test_setup_toxiproxy_without_go_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(setup_cli, "GO_FALLBACKS", (str(tmp_path / "no-go"),))

    result = runner.invoke(app, ["setup", "toxiproxy", "--dest", str(tmp_path)], env=WIDE)

    assert result.exit_code == 1
    assert "https://go.dev/dl/" in _text(result.output)
    assert not (tmp_path / "toxiproxy-server").exists()


@pytest.mark.slow
def test_setup_toxiproxy_builds_a_server_that_runs(tmp_path: Path) -> None:
    if setup_cli.find_go() is None:
        pytest.skip("no Go on this machine (make test needs it for toxiproxy anyway)")
    target = install_toxiproxy(tmp_path / "bin", Console(file=io.StringIO()))

    assert target == tmp_path / "bin" / "toxiproxy-server"
    out = subprocess.run([str(target), "-version"], capture_output=True, text=True, timeout=10)
    assert "toxiproxy" in (out.stdout + out.stderr).lower()
    again = runner.invoke(app, ["setup", "toxiproxy", "--dest", str(tmp_path / "bin")])
    assert "is installed" in again.output  # idempotent: nothing rebuilt
