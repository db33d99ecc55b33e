"""Backends give every cluster its own random secret and write its config owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from chaos.backends import subnets
from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.docker_plan import build_docker_config
from chaos.backends.local import LocalCluster


@pytest.fixture(autouse=True)
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "registry"
    monkeypatch.setenv(subnets.REGISTRY_ENV, str(root))
    return root


def test_local_clusters_get_their_own_secret_in_an_owner_only_file(tmp_path: Path) -> None:
    first = LocalCluster.create(tmp_path / "one", mesh=False)
    second = LocalCluster.create(tmp_path / "two", mesh=False)
    try:
        secrets = [c.config.credentials[DEFAULT_ACCESS_KEY] for c in (first, second)]
        assert secrets[0] != secrets[1]
        for cluster in (first, second):
            assert stat.S_IMODE(cluster.config_path.stat().st_mode) == 0o600
        # Reopened, the cluster keeps its secret.
        again = LocalCluster.create(tmp_path / "one", mesh=False)
        assert again.config.credentials == first.config.credentials
    finally:
        first.down(wipe=True)
        second.down(wipe=True)


def test_docker_clusters_get_their_own_secret() -> None:
    one, two = (build_docker_config("3x2x1", "172.30.0.0/24") for _ in range(2))
    assert one.credentials[DEFAULT_ACCESS_KEY] != two.credentials[DEFAULT_ACCESS_KEY]
