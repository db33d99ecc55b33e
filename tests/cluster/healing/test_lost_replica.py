"""A replica that lost its data, on a whole local cluster (issue #14): it is noticed and refilled
automatically, never left as an empty voting member; and a scrub round in which a member sends
no report is "incomplete", never "ok"."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from chaos.backends.local import LocalCluster
from cluster.storage.client import ask

from .conftest import events, leaders, wait_for
from .test_scrub_cluster import follower_of, make_table, scrub, table_groups

pytestmark = pytest.mark.slow


def replica_on(cluster: LocalCluster, node: str, group: str) -> dict[str, Any] | None:
    status = cluster.storage_status(node)
    for r in (status or {"replicas": []})["replicas"]:
        if r["group"] == group:
            return dict(r)
    return None


def caught_up(cluster: LocalCluster, node: str, group: str) -> bool:
    """``node`` hosts a full, voting copy of ``group`` holding everything its leader committed."""
    lead = leaders(cluster).get(group)
    mine = replica_on(cluster, node, group)
    if lead is None or mine is None or node not in lead["members"]:
        return False
    return mine["applied"] >= lead["commit"] > 0 and not mine["rejoining"]


def whole(cluster: LocalCluster, group: str) -> bool:
    """Three full members, each holding everything committed: the lost copy was refilled, or
    (when its node stayed down past the grace period) healing replaced it."""
    lead = leaders(cluster).get(group)
    if lead is None or len(lead["members"]) != 3 or lead["log_only"]:
        return False
    return all(caught_up(cluster, m, group) for m in lead["members"])


def drop_group(cluster: LocalCluster, node: str, group: str) -> None:
    """The issue's reproduction: drop_group (with the cluster's key) on a follower's port."""
    address = cluster.config.process(node).listen
    reply = asyncio.run(ask(address, {"op": "drop_group", "group": group}, 5.0))
    assert reply.get("dropped") is True, reply


def test_dropped_and_wiped_replicas_are_refilled_and_scrub_agrees(
    healing_cluster: LocalCluster,
) -> None:
    cluster = healing_cluster
    make_table(cluster)
    first, second = table_groups(cluster)

    # 1. drop_group on a follower: the group's leader sees it lost what it acknowledged and
    # refills it; it holds every committed entry again and scrubs clean.
    victim = follower_of(cluster, first)
    drop_group(cluster, victim, first)
    wait_for("dropped replica refilled", lambda: caught_up(cluster, victim, first))

    def recorded() -> list[dict[str, Any]]:  # the leader's admin looks every half second
        kinds = {"replica_lost_data", "replica_refilled"}
        found = [e for e in events(cluster) if e["kind"] in kinds and e["group"] == first]
        return found if len({e["kind"] for e in found}) == 2 else []

    timeline = wait_for("loss and refill recorded", recorded)
    assert {e["node"] for e in timeline} == {victim}, timeline
    outcome = scrub(cluster, first)
    assert outcome["verdict"] == "ok", outcome
    assert outcome["replicas"][victim]["digest"] == outcome["agreed"], outcome

    # 2. The replica's files wiped while its node was down: it comes back empty, rejoins
    # without voting and is refilled (or, if the restart took longer than the grace period,
    # it was replaced meanwhile).
    victim = follower_of(cluster, second)
    cluster.kill(victim)
    shutil.rmtree(cluster.replica_dir(victim, second))
    cluster.start(victim)
    cluster.wait_healthy()
    wait_for("group whole again", lambda: whole(cluster, second))
    outcome = scrub(cluster, second)
    assert outcome["verdict"] == "ok", outcome
    assert len(outcome["replicas"]) == 3, outcome
    assert all(r["digest"] == outcome["agreed"] for r in outcome["replicas"].values()), outcome


def test_scrub_with_a_silent_replica_is_incomplete_not_ok(healing_cluster: LocalCluster) -> None:
    cluster = healing_cluster
    make_table(cluster)
    group = table_groups(cluster)[0]
    silent = follower_of(cluster, group)
    cluster.pause(silent)  # SIGSTOP: its node neither answers nor reports
    try:
        outcome = scrub(cluster, group)
    finally:
        cluster.resume(silent)
    assert outcome["verdict"] == "incomplete", outcome
    row = outcome["replicas"][silent]
    assert row["verdict"] == "no report" and "did not answer" in row["why"], outcome
    assert all(r["verdict"] == "ok" for n, r in outcome["replicas"].items() if n != silent)
    assert any(e["kind"] == "scrub_incomplete" and e["node"] == silent for e in events(cluster))
