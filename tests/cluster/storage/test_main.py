"""The storage node's command line (python -m cluster.storage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.storage.__main__ import parse_args

BASE = ["--node-id", "n1", "--listen", "127.0.0.1:1", "--admin", "127.0.0.1:2"]


def test_compact_every_defaults_and_takes_a_count(tmp_path: Path) -> None:
    base = [*BASE, "--data-dir", str(tmp_path)]
    assert parse_args(base).node.compact_every == 2000
    assert parse_args([*base, "--compact-every", "50"]).node.compact_every == 50


@pytest.mark.parametrize(
    ("value", "says"), [("0", "must be at least 1"), ("x", "not a whole number")]
)
def test_a_compact_every_below_one_is_refused_at_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, says: str
) -> None:
    """Compaction divides the interval among the replicas (compaction_due): 0 would crash
    the replica's loop at its first compaction instead of the command line saying why."""
    with pytest.raises(SystemExit):
        parse_args([*BASE, "--data-dir", str(tmp_path), "--compact-every", value])
    assert f"argument --compact-every: {says}" in capsys.readouterr().err


def test_a_stop_that_failed_exits_with_one_line_and_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every part closed, a failure logged: the process says the first one, no traceback."""
    from cluster.storage import __main__ as main_module
    from cluster.storage.node import StopFailed

    async def serve(launch: object) -> None:
        raise StopFailed("n1", [("p0", OSError(5, "EIO"))]) from OSError(5, "EIO")

    monkeypatch.setattr(main_module, "serve", serve)
    with pytest.raises(SystemExit) as exited:
        main_module.main([*BASE, "--data-dir", str(tmp_path)])
    assert exited.value.code == "node n1: closing p0 failed: OSError: [Errno 5] EIO"
    assert exited.value.__suppress_context__
