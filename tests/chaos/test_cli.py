"""The `gameday` command line, driven in-process through typer's CliRunner."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from typer.testing import CliRunner

from chaos.cli import app

runner = CliRunner()

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe(output: str) -> str:
    """The output as one line: no colour codes, whitespace collapsed, so wrapping can't matter."""
    return " ".join(_ANSI.sub("", output).split())


def test_help_exits_zero_and_explains_game_days() -> None:
    result = runner.invoke(app, ["--help"])

    assert result.exit_code == 0, result.output
    text = describe(result.output).lower()
    assert "game day" in text
    assert "demo" in text
    assert "cluster" in text


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])

    assert "game day" in describe(result.output).lower()


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["version"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"gameday {version('gameday')}"


def test_dash_dash_version_prints_the_version_and_exits() -> None:
    result = runner.invoke(app, ["--version", "demo"])  # eager: demo never runs

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"gameday {version('gameday')}"


def test_help_has_no_planned_steps_and_teaches_completion() -> None:
    text = describe(runner.invoke(app, ["--help"]).output)

    assert "planned" not in text.lower()
    assert "--install-completion" in text


def test_scenario_list_shows_every_shipped_scenario() -> None:
    from chaos.assets import shipped_scenarios

    result = runner.invoke(app, ["scenario", "list"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    for name in shipped_scenarios():
        assert name in result.output


def test_scenario_validate_without_files_checks_every_shipped_one() -> None:
    from chaos.assets import shipped_scenarios

    result = runner.invoke(app, ["scenario", "validate"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert describe(result.output).count("ok ") == len(shipped_scenarios())


def test_run_names_the_shipped_scenarios_when_the_file_is_missing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")], env={"COLUMNS": "200"})

    assert result.exit_code == 2
    assert "az-outages" in describe(result.output)
