"""The `gameday` command line, driven in-process through typer's CliRunner."""

from __future__ import annotations

import re
from importlib.metadata import version

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
