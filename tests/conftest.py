"""Shared fixtures: a real local cluster (processes on 127.x.y.z) and boto3 clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster
from chaos.backends.subnets import release_under
from chaos.k8s.localkube import LocalKube
from tests import localkube_session
from tests.local_nodes import release_fixture_subnet


@pytest.fixture(scope="session", autouse=True)
def subnet_claims_die_with_the_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Every loopback subnet a test claimed for a cluster in its tmp_path (planned, started, or
    left by a failed test), and LocalNodes' subnet of this process, go back to the machine-wide
    registry when the session ends."""
    yield
    release_under(tmp_path_factory.getbasetemp())
    release_fixture_subnet()


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One full cluster (3x2x1) for the whole session; tests create their own tables."""
    cluster = LocalCluster.create(tmp_path_factory.mktemp("cluster"), "3x2x1", partitions=4)
    cluster.die_with_this_process()  # even a SIGKILLed pytest leaves none of it behind
    try:  # a cluster that fails to come up is stopped too
        cluster.up(timeout=120)
        yield cluster
    finally:
        cluster.down()
        cluster.release_subnet()


def client_for(  # type: ignore[no-untyped-def]
    cluster: LocalCluster, router: str = "rt-a", secret: str | None = None, config=None
):
    return boto3.client(
        "dynamodb",
        config=config,
        endpoint_url=cluster.endpoints()[router],
        region_name="us-east-1",
        aws_access_key_id=DEFAULT_ACCESS_KEY,
        aws_secret_access_key=secret or cluster.config.credentials[DEFAULT_ACCESS_KEY],
    )


@pytest.fixture
def dynamodb(local_cluster: LocalCluster):  # type: ignore[no-untyped-def]
    """A boto3 DynamoDB client for router rt-a of the session cluster."""
    return client_for(local_cluster)


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of its own, for tests that kill or pause processes."""
    cluster = LocalCluster.create(tmp_path / "cluster", "3x2x1", partitions=2)
    cluster.die_with_this_process()  # even a SIGKILLed pytest leaves none of it behind
    try:  # a cluster that fails to come up is stopped too
        cluster.up(timeout=120)
        yield cluster
    finally:
        cluster.down()
        cluster.release_subnet()


# --- the local Kubernetes (tests/localkube_session.py) -----------------------------------------


@pytest.fixture(scope="session")
def local_kube() -> Iterator[LocalKube]:
    """One local Kubernetes (3x2 + infra) for every k8s test; skipped with the reason when it
    cannot run here (a failure on CI); torn down after the last of them, leaving nothing."""
    yield from localkube_session.session_kube()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the local Kubernetes run last, one after the other: the session's cluster
    then runs only while they do, instead of idling beside the rest of the suite."""
    on_kube = [i for i in items if "local_kube" in getattr(i, "fixturenames", ())]
    if on_kube:
        moved = {id(i) for i in on_kube}
        items[:] = [i for i in items if id(i) not in moved] + on_kube


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if localkube_session.REPORT:
        terminalreporter.section("local Kubernetes")
        for line in localkube_session.REPORT:
            terminalreporter.write_line(line)
