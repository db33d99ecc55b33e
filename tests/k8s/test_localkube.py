"""The local Kubernetes, for real: nodes Ready with their labels, pod-to-pod traffic across node
bridges, a Service reached by its DNS name, a node's power cut and return with its volume, and a
`down` that leaves nothing on the host.

Skipped (with the reason) without root, without the toolchain (`make k8s-toolchain`), or while
another local Kubernetes runs on this machine (only one fits).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.k8s import host
from chaos.k8s.localkube import (
    KUBELET_ROOT,
    OWNER_FILE,
    RUN_DIR,
    LocalKube,
    unavailable_reason,
)
from chaos.k8s.manifests import STORAGE_CLASS
from chaos.k8s.node_images import BUSYBOX_IMAGE
from chaos.k8s.nodes import CGROUP_PARENT, INFRA_NODE, POOL_LABEL, RACK_LABEL, ZONE_LABEL

pytestmark = [pytest.mark.slow, pytest.mark.k8s, pytest.mark.timeout(600)]


def _skip_reason() -> str | None:
    reason = unavailable_reason()
    if reason:
        return reason
    if OWNER_FILE.exists():
        return f"a local Kubernetes already runs on this machine ({OWNER_FILE.read_text()})"
    return None


def host_traces(state_dir: Path) -> dict[str, Any]:
    """What a local Kubernetes could leave on the host."""
    return {
        "links": host.links_with_prefix("gdk-"),
        "mounts": host.mounts_under(RUN_DIR, KUBELET_ROOT, state_dir) if state_dir.exists() else [],
        "kubelet_root": KUBELET_ROOT.exists(),
        "cgroups": [str(d) for d in host.cgroup_dirs(CGROUP_PARENT) if d.exists()],
        "iptables": [
            line
            for tool in ("iptables-save", "ip6tables-save")
            for line in subprocess.run([tool], capture_output=True, text=True).stdout.splitlines()
            if "KUBE-" in line or host.OUR_CHAIN in line
        ],
        "nft": host.nft_tables(),
        "sysctls": host.read_sysctls(),
        "shim_sockets": sorted(os.listdir("/run/containerd/s"))
        if os.path.isdir("/run/containerd/s")
        else [],
        "run_dir": RUN_DIR.exists(),
        "cni_cache": sorted(p.name for p in Path("/var/lib/cni/results").glob("gdk-*")),
        "container_logs": sorted(
            p.name
            for p in Path("/var/log/containers").glob("*.log")
            if os.readlink(p).startswith(str(state_dir))
        ),
    }


def pod_veths() -> list[str]:
    """veth links enslaved to a node bridge (gdk-*): the host side of each pod's network."""
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True
    ).stdout
    return sorted(
        line.split(": ")[1].split("@")[0] for line in out.splitlines() if " master gdk-" in line
    )


def node_processes(kube: LocalKube) -> list[int]:
    return sorted(host.cgroup_pids(CGROUP_PARENT))


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[LocalKube]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    kube = LocalKube(tmp_path / "k8s")
    try:
        yield kube
    finally:
        kube.down()


def web_pod(name: str, node: str, claim: str | None = None) -> dict[str, Any]:
    script = f"mkdir -p /www && echo {node} > /www/index.html && exec httpd -f -p 8080 -h /www"
    spec: dict[str, Any] = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "web",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }
        ],
    }
    if claim:
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": spec,
    }


def http_get(kube: LocalKube, pod: str, host: str, port: int) -> str:
    """GET / from inside ``pod`` with busybox nc (Debian's static busybox crashes in glibc's
    getaddrinfo, so wget is out); a name is resolved first with busybox nslookup (cluster DNS)."""
    resolve = "nslookup $h | awk '/^Address/ {a=$NF} END {print a}'"
    script = (
        f"h={host}; case $h in *[a-z]*) h=$({resolve});; esac; "
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $h {port} | tail -n 1"
    )
    return kube.kubectl("exec", pod, "--", "sh", "-c", script)


def apply(kube: LocalKube, *objects: dict[str, Any]) -> None:
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(objects)}),
    )


def wait_for(what: str, check: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.5)


def pods(kube: LocalKube) -> dict[str, dict[str, Any]]:
    items = json.loads(kube.kubectl("get", "pods", "-o", "json"))["items"]
    return {p["metadata"]["name"]: p for p in items}


def all_ready(kube: LocalKube, names: list[str]) -> bool:
    current = pods(kube)
    return all(
        any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in current.get(n, {}).get("status", {}).get("conditions", [])
        )
        for n in names
    )


def test_up_traffic_power_cycle_and_down(kube: LocalKube) -> None:
    before = host_traces(kube.state_dir)
    start = time.monotonic()
    status = kube.up("3x1", cluster_image=False, owner_pid=os.getpid())
    up_seconds = time.monotonic() - start
    print(f"k8s up (3 nodes) to all Ready: {up_seconds:.1f}s")
    assert status.nodes == {n: "Ready" for n in ("az-a-r1", "az-b-r1", "az-c-r1", "infra")}
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json"))["items"]
    labels = {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}
    assert labels["az-b-r1"][ZONE_LABEL] == "az-b"
    assert labels["az-b-r1"][RACK_LABEL] == "az-b-r1"
    infra = next(n for n in nodes if n["metadata"]["name"] == "infra")
    assert ZONE_LABEL not in infra["metadata"]["labels"]
    assert {"key": POOL_LABEL, "value": INFRA_NODE, "effect": "NoSchedule"} in infra["spec"][
        "taints"
    ]

    # One web pod per node (the one on az-c-r1 keeps its page on a local PersistentVolume),
    # a Service in front of them all, reached by name.
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {
            "storageClassName": STORAGE_CLASS,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "100Mi"}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    names = {"az-a-r1": "web-a", "az-b-r1": "web-b", "az-c-r1": "web-c"}
    apply(
        kube,
        claim,
        service,
        *(web_pod(pod, node, "data" if node == "az-c-r1" else None) for node, pod in names.items()),
    )
    wait_for("every web pod Ready", lambda: all_ready(kube, list(names.values())))
    ips = {pods(kube)[pod]["status"]["podIP"]: node for node, pod in names.items()}
    veths = pod_veths()
    assert len(veths) >= len(names), veths  # the host ends of the pods' links, on node bridges
    for ip, node in ips.items():
        subnet = f"10.244.{kube.node(node).index}."
        assert ip.startswith(subnet), f"{node}'s pod has {ip}, outside its subnet {subnet}0/24"

    # Pod to pod across every pair of node bridges (busybox wget inside the pod), then the
    # Service by its cluster DNS name from each pod.
    for pod in names.values():
        for ip, other in ips.items():
            page = http_get(kube, pod, ip, 8080)
            assert page.strip() == other, f"{pod} fetched {ip}: {page!r}"
        seen = set()
        for _ in range(12):
            page = http_get(kube, pod, "web.default.svc.cluster.local", 80)
            seen.add(page.strip())
        assert seen <= set(names), seen
        assert len(seen) >= 2, f"the Service answered only from {seen}"
    with urllib.request.urlopen(f"http://{next(iter(ips))}:8080/", timeout=5) as reply:
        assert reply.read().decode().strip() in names  # the host reaches pods too

    # Power cut of az-c-r1: its kubelet, containerd, shims and pod processes die; the Node
    # goes NotReady; power-on brings the same pod back with its volume's content.
    kube.kubectl("exec", "web-c", "--", "sh", "-c", "echo kept > /data/proof")
    old_pids = host.cgroup_pids(kube.node("az-c-r1").cgroup)
    assert len(old_pids) >= 4  # kubelet, containerd, a shim or two, pause, httpd
    killed = kube.power_off("az-c-r1")
    assert killed >= len(old_pids) - 1
    assert not host.cgroup_pids(kube.node("az-c-r1").cgroup)
    assert not any(Path(f"/proc/{pid}").exists() and _same_process(pid) for pid in old_pids)
    assert not kube.powered("az-c-r1")
    kube.wait_ready(["az-c-r1"], timeout=90, ready=False)
    kube.power_on("az-c-r1")
    kube.wait_ready(["az-c-r1"], timeout=90)
    wait_for("web-c Ready again", lambda: all_ready(kube, ["web-c"]))
    assert kube.kubectl("exec", "web-c", "--", "cat", "/data/proof").strip() == "kept"

    left = kube.down()
    assert left == []
    after = host_traces(kube.state_dir)
    assert after == before
    assert not node_processes(kube)
    assert not OWNER_FILE.exists()
    assert not [v for v in veths if host.link_exists(v)], "pod veths left behind"
    for tool in ("iptables-save", "ip6tables-save"):
        dump = subprocess.run([tool], capture_output=True, text=True).stdout
        assert not host.our_chains(dump), f"{tool}: chains left behind"


def _same_process(pid: int) -> bool:
    """A pid that still exists and is not a zombie (pids may be reused, but not this fast)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False
