"""Convergence: replicas of each group agree on (applied index, digest) after heal."""

from __future__ import annotations

from pathlib import Path

from checks.convergence import check, check_digests
from checks.result import UNKNOWN
from checks.rundir import RunDir


def replica(applied: int, digest: str | None) -> dict[str, object]:
    return {"applied": applied, "digest": digest}


def test_all_groups_converged() -> None:
    digests = {
        "g1": {"sn-a1": replica(9, "ab"), "sn-b1": replica(9, "ab"), "sn-c1": replica(9, "ab")},
        "g2": {"sn-a2": replica(4, "cd"), "sn-b2": replica(4, "cd"), "sn-c2": replica(4, "cd")},
    }
    result = check_digests(digests)
    assert result.valid is True
    assert result.summary == "all 2 groups converged"


def test_divergent_replica_is_named() -> None:
    digests = {
        "g1": {"sn-a1": replica(9, "ab"), "sn-b1": replica(9, "XX"), "sn-c1": replica(9, "ab")},
        "g2": {"sn-a2": replica(4, "cd"), "sn-b2": replica(4, "cd")},
    }
    result = check_digests(digests)
    assert result.valid is False
    [bad] = result.details["divergent_groups"]
    assert bad["group"] == "g1" and bad["diverged"] == ["sn-b1"]
    assert "g1" in result.summary and "sn-b1" in result.summary


def test_lagging_replica_is_not_converged() -> None:
    digests = {"g1": {"a": replica(9, "ab"), "b": replica(7, "ef"), "c": replica(9, "ab")}}
    result = check_digests(digests)
    assert result.valid is False
    assert result.details["divergent_groups"][0]["lagging"] == ["b"]


def test_replicas_without_digest_are_left_out() -> None:
    digests = {"g1": {"a": replica(9, "ab"), "log": replica(9, None), "c": replica(9, "ab")}}
    result = check_digests(digests)
    assert result.valid is True
    assert check_digests({"g1": {"a": replica(9, "ab"), "log": replica(9, None)}}).valid == UNKNOWN


def test_missing_or_empty_file_is_unknown(tmp_path: Path) -> None:
    assert check(RunDir(tmp_path)).valid == UNKNOWN
    (tmp_path / "digests.json").write_text("{}")
    assert check(RunDir(tmp_path)).valid == UNKNOWN
