"""What a local Kubernetes could leave on this host, to compare before ``up`` and after ``down``.

``down`` removes what it knows it made; this looks from the outside, at everything of that kind,
so a trace ``down`` does not know about shows too: processes naming the state dir, the cgroup
subtree and its processes, mounts (pods' network namespaces are mounted under the run dir),
node bridges, CNI-named network namespaces, iptables/nft chains, the sysctls the kubelet
changes, fixed directories, containerd shim sockets, CNI result caches and container log links.
The test suite's session teardown and bench/k8s.py use it.

    before = host_state(kube.state_dir)
    kube.up(); ...; kube.down()
    assert not left_behind(before, host_state(kube.state_dir))
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from chaos.k8s import host
from chaos.k8s.node_runtime import KUBELET_ROOT, RUN_DIR
from chaos.k8s.nodes import CGROUP_PARENT

SHIM_SOCKETS = Path("/run/containerd/s")
CNI_RESULTS = Path("/var/lib/cni/results")
CONTAINER_LOGS = Path("/var/log/containers")


def _lines(argv: list[str]) -> list[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []


def _processes(marks: tuple[str, ...]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in marks):
            found.append(f"{entry.name} {cmd[:100]}")
    return found


def _log_links(state_dir: Path) -> list[str]:
    links = []
    for path in CONTAINER_LOGS.glob("*.log"):
        with contextlib.suppress(OSError):
            if os.readlink(path).startswith(str(state_dir)):
                links.append(path.name)
    return sorted(links)


def host_state(state_dir: Path) -> dict[str, list[str]]:
    """Everything of the local Kubernetes' kind on this host now (each kind a sorted list)."""
    marks = (str(state_dir), str(RUN_DIR), str(KUBELET_ROOT))
    links = [ln.split(": ")[1].split("@")[0] for ln in _lines(["ip", "-o", "link"]) if ": " in ln]
    # A pod's veth lives as long as its network namespace: a left one shows as a mount or netns.
    state = {
        "processes": _processes(marks),
        "cgroup processes": [str(p) for p in sorted(host.cgroup_pids(CGROUP_PARENT))],
        "cgroups": [str(d) for d in host.cgroup_dirs(CGROUP_PARENT) if d.exists()],
        "mounts": host.mounts_under(RUN_DIR, KUBELET_ROOT, state_dir),
        "links": [name for name in links if name.startswith("gdk-")],
        "netns": [ns for ns in _lines(["ip", "netns", "list"]) if ns.startswith("cni-")],
        "iptables": [
            line
            for tool in ("iptables-save", "ip6tables-save")
            for line in _lines([tool])
            if "KUBE-" in line or host.OUR_CHAIN in line
        ],
        "nft": host.nft_tables(),
        "sysctls": [f"{k}={v}" for k, v in host.read_sysctls().items()],
        "dirs": [str(p) for p in (RUN_DIR, KUBELET_ROOT) if p.exists()],
        "shim sockets": os.listdir(SHIM_SOCKETS) if SHIM_SOCKETS.is_dir() else [],
        "cni results": [p.name for p in CNI_RESULTS.glob("gdk-*")],
        "container logs": _log_links(state_dir),
    }
    return {kind: sorted(items) for kind, items in state.items()}


def left_behind(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, list[str]]:
    """What ``after`` has that ``before`` had not, per kind (a sysctl whose value differs shows
    with its new value). Empty when nothing was left."""
    left: dict[str, list[str]] = {}
    for kind, now in after.items():
        extra = sorted(set(now) - set(before.get(kind, [])))
        if extra:
            left[kind] = extra
    return left
