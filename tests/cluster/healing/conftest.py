"""A whole local cluster with the healing admin on, and helpers to watch its groups heal."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.backends.local import LocalCluster
from cluster import auth


@pytest.fixture
def healing_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    """3x2x1 with healing on (grace 3 s); every node reads its settings from the environment."""
    monkeypatch.setenv("GAMEDAY_HEALING", "on")
    monkeypatch.setenv("GAMEDAY_SCRUB_SECONDS", "0")  # scrubs run when a test asks
    cluster = LocalCluster.create(tmp_path / "cluster", "3x2x1", partitions=2)
    cluster.die_with_this_process()  # even a SIGKILLed pytest leaves none of it behind
    try:  # a cluster that fails to come up is stopped too
        cluster.up(timeout=120)
        yield cluster
    finally:
        cluster.down()
        cluster.release_subnet()


def get_json(cluster: LocalCluster, node: str, path: str, timeout: float = 5.0) -> Any:
    admin = cluster.config.process(node).admin
    url = f"http://{admin}{path}"
    signed = urllib.request.Request(url, headers=auth.url_headers("GET", url))
    with urllib.request.urlopen(signed, timeout=timeout) as resp:
        return json.loads(resp.read())


def post_json(cluster: LocalCluster, node: str, path: str, timeout: float = 60.0) -> Any:
    admin = cluster.config.process(node).admin
    headers = auth.http_headers("POST", path.partition("?")[0])  # the cluster's internal key
    request = urllib.request.Request(
        f"http://{admin}{path}", method="POST", data=b"", headers=headers
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def leaders(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    """Per group, the status its leader reports (the leader with the highest term)."""
    found: dict[str, dict[str, Any]] = {}
    for node in cluster.process_ids("storage"):
        status = cluster.storage_status(node)
        if status is None:
            continue
        for r in status["replicas"]:
            if r["role"] == "leader" and r["term"] >= found.get(r["group"], {}).get("term", -1):
                found[r["group"]] = r | {"node": node}
    return found


def modes(cluster: LocalCluster) -> dict[tuple[str, str], str]:
    """(group, node) -> replica mode, over every live node."""
    out: dict[tuple[str, str], str] = {}
    for node in cluster.process_ids("storage"):
        status = cluster.storage_status(node)
        for r in (status or {"replicas": []})["replicas"]:
            out[(r["group"], node)] = r["mode"]
    return out


def events(cluster: LocalCluster) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for node in cluster.process_ids("storage"):
        if not cluster.alive(node):
            continue
        try:
            found += get_json(cluster, node, "/admin/events")["events"]
        except OSError:
            continue
    return sorted(found, key=lambda e: e["time"])


# A bound for a heal that is stuck, not a deadline for a slow one: on a busy machine elections,
# snapshots and catch-up take many times what they take on an idle one.
HEAL_BOUND = 240.0


def wait_for(what: str, check: Any, timeout: float = HEAL_BOUND, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(every)
