"""The cluster config file holds the secret keys: owner-only on disk, kept out of reprs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cluster.config import ClusterConfig, ProcessInfo, new_secret

SECRET = "not-for-your-eyes-" + "x" * 10


def _config() -> ClusterConfig:
    router = ProcessInfo(id="rt-a", role="router", az="az-a", listen="127.0.0.1:1", admin="a:1")
    return ClusterConfig(processes={"rt-a": router}, credentials={"gameday": SECRET})


def test_saved_config_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_text("{}")
    path.chmod(0o644)  # an older, world-readable file is replaced, not reused
    old = os.umask(0)
    try:
        _config().save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ClusterConfig.load(path).credentials == {"gameday": SECRET}
    assert not path.with_suffix(".tmp").exists()


def test_the_secret_stays_out_of_repr_and_str() -> None:
    config = _config()
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_every_secret_is_fresh() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50 and all(len(s) >= 32 for s in secrets)
