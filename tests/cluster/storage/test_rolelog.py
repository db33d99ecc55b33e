"""RoleWatch: one INFO line per Raft role, term or leader change of a replica (rolelog.py)."""

from __future__ import annotations

import logging

import pytest

from cluster.storage.rolelog import RoleWatch

from ..consensus.network import Network


def test_a_leader_that_loses_its_quorum_is_logged_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = Network.bootstrap(["n1", "n2", "n3"])
    watch = RoleWatch("g")
    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.WARNING)  # as the processes run
    try:
        assert watch.note(net.raft("n1")) is None  # the first look: follower, logged
        net.run_until(lambda: net.leader() == "n1")
        assert watch.note(net.raft("n1")) == "won"
        assert watch.note(net.raft("n1")) is None  # no change: no line
        net.isolate("n1")
        net.run_until(lambda: net.raft("n1").leader is None)
        assert watch.note(net.raft("n1")) == "lost"
    finally:
        root.setLevel(level)
    lines = [r.getMessage() for r in caplog.records if r.name == "cluster.storage.rolelog"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("g: follower term 0 leader None (was -) voters n1,n2,n3")
    assert lines[1].startswith("g: leader term 1 leader n1 (was follower term 0 leader None)")
    assert lines[2].startswith("g: follower term 1 leader None (was leader term 1 leader n1)")
    assert lines[2].endswith("(stepped down: check-quorum or transfer)")
