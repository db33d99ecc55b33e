"""The loopback subnet registry: concurrent claims never share an octet; stale ones come back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.backends import subnets
from chaos.backends.subnets import (
    claim_subnet,
    hold_subnet,
    listening_octets,
    release_stale,
    release_subnet,
)


@pytest.fixture(autouse=True)
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "registry"
    monkeypatch.setenv(subnets.REGISTRY_ENV, str(root))
    return root


def test_concurrent_processes_get_distinct_subnets(tmp_path: Path, registry: Path) -> None:
    # Each claimer stays alive until every one has claimed (its plan is live while it runs).
    code = (
        "import sys; from chaos.backends.subnets import claim_subnet; "
        "print(claim_subnet('dir:' + sys.argv[1]), flush=True); sys.stdin.read()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"c{i}")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, subnets.REGISTRY_ENV: str(registry)},
        )
        for i in range(8)
    ]
    got = []
    for p in procs:
        assert p.stdout is not None
        got.append(int(p.stdout.readline()))
    for p in procs:
        p.communicate(timeout=60)
    assert len(set(got)) == 8


def test_same_owner_keeps_its_subnet_and_release_frees_it(tmp_path: Path) -> None:
    owner = f"dir:{tmp_path / 'a'}"
    (tmp_path / "a").mkdir()
    x = claim_subnet(owner)
    assert claim_subnet(owner) == x
    assert claim_subnet(f"dir:{tmp_path / 'b'}") != x
    release_subnet(x, owner)
    assert claim_subnet(f"dir:{tmp_path / 'c'}") == x


def test_old_unstarted_and_dead_pid_claims_are_stale(tmp_path: Path, registry: Path) -> None:
    gone = claim_subnet(f"dir:{tmp_path / 'never-created'}")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        by_child = claim_subnet(f"pid:{child.pid}")
        mine = claim_subnet(f"pid:{os.getpid()}")
        assert release_stale() == []
        claim = json.loads((registry / str(gone)).read_text())
        claim["claimed"] -= subnets.FRESH_CLAIM_S + 1  # planned long ago, never started
        (registry / str(gone)).write_text(json.dumps(claim))
    finally:  # the claimer dies here, or with a failed assertion above
        child.kill()
        child.wait()
    assert sorted(release_stale()) == sorted([gone, by_child])
    assert mine in subnets.claims()


def test_a_cluster_config_on_another_subnet_frees_the_claim(tmp_path: Path) -> None:
    x = claim_subnet(f"dir:{tmp_path}")
    config = {"processes": {"sn-a1": {"listen": f"127.{x + 1}.1.1:7100"}}}
    (tmp_path / "cluster.json").write_text(json.dumps(config))
    assert x in release_stale()


def test_hold_refuses_a_subnet_someone_else_holds(tmp_path: Path) -> None:
    x = claim_subnet(f"pid:{os.getpid()}")
    with pytest.raises(subnets.NoFreeSubnet, match="now used by"):
        hold_subnet(x, f"dir:{tmp_path}")


def test_an_octet_something_listens_on_is_never_handed_out() -> None:
    first = claim_subnet(f"pid:{os.getpid()}")
    with socket.socket() as s:
        s.bind((f"127.{first + 1}.0.9", 0))
        s.listen()
        assert first + 1 in listening_octets()
        second = claim_subnet("pid:1")
    assert second not in (first, first + 1)


def test_a_planned_cluster_whose_claimer_died_is_stale(tmp_path: Path, registry: Path) -> None:
    code = (
        "import sys; from chaos.backends.subnets import claim_subnet; "
        "print(claim_subnet('dir:' + sys.argv[1]))"
    )
    env = {**os.environ, subnets.REGISTRY_ENV: str(registry)}
    planned = tmp_path / "planned"  # a config planned (build_config) but never saved
    done = subprocess.run(
        [sys.executable, "-c", code, str(planned)], capture_output=True, env=env, check=True
    )
    x = int(done.stdout)
    assert subnets.claims()[x]["stale"]
    assert claim_subnet(f"dir:{tmp_path / 'mine'}") == x  # taken over at once
    assert release_stale() == []  # this process is alive: a fresh plan of its own stays


def test_release_under_frees_a_sessions_claims_only(tmp_path: Path) -> None:
    inside = [claim_subnet(f"dir:{tmp_path / 'session' / name}") for name in ("a", "b")]
    outside = claim_subnet(f"dir:{tmp_path / 'sessions-neighbour'}")
    assert sorted(subnets.release_under(tmp_path / "session")) == sorted(inside)
    assert set(subnets.claims()) == {outside}
