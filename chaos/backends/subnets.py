"""Loopback subnets for local clusters that cannot collide: a machine-wide registry of claims.

Every local cluster lives on its own 127.X.0.0/16. The second octet X is claimed here, under
an exclusive lock, in a registry shared by every gameday on the machine (whatever its data dir,
worktree or venv): one file per claimed octet naming its owner. A claim is taken over only when
it is provably stale — its owner's data dir now holds another subnet, or holds no cluster and
the process that claimed it died (a plan never started) or it is old, or its owner process
died — and an octet with anything listening on it is never handed out (so clusters started by
older code, which derived X from a hash, are avoided too).

    x = claim_subnet(f"dir:{data_dir.resolve()}")   # 127.x.0.0/16 is ours until released
    release_subnet(x)                               # 'cluster down --wipe'
    x = claim_subnet(f"pid:{os.getpid()}")          # test fixtures: free when the process ends
    release_under(Path("/tmp/pytest-of-root/pytest-7"))  # a test session's clusters, at its end
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .processes import pid_alive, start_time

REGISTRY_ENV = "GAMEDAY_SUBNET_REGISTRY"
DEFAULT_REGISTRY = Path("/tmp/gameday-subnets")
FIRST, LAST = 20, 250  # 127.20.0.0 .. 127.250.0.0; 127.0-19 stay for everything else
FRESH_CLAIM_S = 600.0  # a data dir claimed without a cluster.json yet is live this long


class NoFreeSubnet(RuntimeError):
    """Every loopback /16 in the range is claimed or in use."""


def registry() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    root = registry()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def claim_subnet(owner: str) -> int:
    """Claim a free second octet for ``owner`` ("dir:<path>" or "pid:<n>"); idempotent."""
    with _locked() as root:
        listening = listening_octets()
        free: int | None = None
        for x in range(FIRST, LAST + 1):
            claim = _read(root / str(x))
            if claim is not None and claim.get("owner") == owner:
                return x  # this owner already holds one
            if free is None and x not in listening and (claim is None or _stale(x, claim)):
                free = x
        if free is None:
            raise NoFreeSubnet(
                f"no free loopback subnet in 127.{FIRST}-{LAST}.0.0/16: every one is claimed in "
                f"{root} or in use; 'gameday clean' removes what killed runs left behind"
            )
        entry = _entry(owner)
        tmp = root / f".{free}.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.replace(root / str(free))
        return free


def hold_subnet(x: int, owner: str) -> None:
    """Make sure ``owner`` holds ``x`` (a cluster started again on its old addresses)."""
    with _locked() as root:
        claim = _read(root / str(x))
        if claim is not None and claim.get("owner") == owner:
            return
        if claim is not None and not _stale(x, claim):
            raise NoFreeSubnet(
                f"127.{x}.0.0/16 is now used by {claim.get('owner')}; this cluster's config "
                "predates it: remove it ('gameday cluster down --wipe') and start afresh"
            )
        entry = _entry(owner)
        tmp = root / f".{x}.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.replace(root / str(x))


def _entry(owner: str) -> dict[str, object]:
    pid = os.getpid()
    return {"owner": owner, "claimed": time.time(), "pid": pid, "pid_start": start_time(pid)}


def release_subnet(x: int, owner: str | None = None) -> None:
    """Give ``x`` back (only if ``owner`` still holds it, when given)."""
    with _locked() as root:
        claim = _read(root / str(x))
        if claim is not None and (owner is None or claim.get("owner") == owner):
            (root / str(x)).unlink(missing_ok=True)


def claims() -> dict[int, dict[str, object]]:
    """Every current claim with whether it is stale (for `gameday clean`)."""
    out: dict[int, dict[str, object]] = {}
    with _locked() as root:
        for path in root.iterdir():
            if path.name.isdigit():
                claim = _read(path)
                if claim is not None:
                    out[int(path.name)] = {**claim, "stale": _stale(int(path.name), claim)}
    return out


def release_stale() -> list[int]:
    """Drop every provably stale claim; returns the octets freed."""
    freed = []
    with _locked() as root:
        for path in sorted(root.iterdir()):
            if path.name.isdigit():
                claim = _read(path)
                if claim is None or _stale(int(path.name), claim):
                    path.unlink(missing_ok=True)
                    freed.append(int(path.name))
    return freed


def release_under(root: Path) -> list[int]:
    """Drop every claim of a data dir below ``root`` (a test session's temporary directory, at
    its end: its clusters are down, and their configs are only kept as a record)."""
    below = f"dir:{root.resolve()}/"
    freed = []
    with _locked() as registry_root:
        for path in sorted(registry_root.iterdir()):
            claim = _read(path) if path.name.isdigit() else None
            if claim is not None and str(claim.get("owner", "")).startswith(below):
                path.unlink(missing_ok=True)
                freed.append(int(path.name))
    return freed


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"owner": "unreadable", "claimed": 0.0}
    return data if isinstance(data, dict) else {"owner": "unreadable", "claimed": 0.0}


def _stale(x: int, claim: dict[str, object]) -> bool:
    owner = str(claim.get("owner", ""))
    kind, _, value = owner.partition(":")
    if kind == "pid":
        return not value.isdigit() or not pid_alive(int(value))
    if kind == "dir":
        config = Path(value) / "cluster.json"
        if config.exists():
            return subnet_of_config(config) != x
        # Not started yet (or wiped without a release). A claimer that died without writing
        # the config never will (a plan that was never started); else live for a while.
        if _claimer_died(claim):
            return True
        claimed = claim.get("claimed", 0.0)
        age = time.time() - (claimed if isinstance(claimed, int | float) else 0.0)
        return age > FRESH_CLAIM_S
    return True


def subnet_of_config(config: Path) -> int | None:
    """The second octet a local cluster.json uses (its storage nodes' addresses)."""
    try:
        data = json.loads(config.read_text())
        for process in data.get("processes", {}).values():
            host = str(process.get("listen", "")).split(":")[0]
            parts = host.split(".")
            if len(parts) == 4 and parts[0] == "127":
                return int(parts[1])
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _claimer_died(claim: dict[str, object]) -> bool:
    pid, start = claim.get("pid"), claim.get("pid_start")
    if not isinstance(pid, int) or start is None:  # a claim from before pids were recorded
        return False
    return start_time(pid) != start


def listening_octets() -> set[int]:
    """Second octets of 127.X.*.* addresses that any TCP socket on this machine listens on."""
    found: set[int] = set()
    for table in ("/proc/net/tcp",):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address = fields[1].split(":")[0]
            octets = bytes.fromhex(address)[::-1]  # little-endian in /proc
            if octets[0] == 127:
                found.add(octets[1])
    return found
