"""The local Kubernetes, for real: nodes Ready with their labels, pod-to-pod traffic across node
bridges, a Service reached by its DNS name, a node's power cut and return with its volume.

It runs on the session's local Kubernetes (tests/localkube_session.py: 3x2 + infra, shared with
the k8s game day), whose teardown checks that `down` leaves nothing on the host. Skipped (with
the reason) without root, the toolchain (`make k8s-toolchain`) or a Docker engine; a failure
instead on CI.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.k8s import host
from chaos.k8s.localkube import LocalKube
from chaos.k8s.manifests import STORAGE_CLASS
from chaos.k8s.node_images import BUSYBOX_IMAGE
from chaos.k8s.nodes import INFRA_NODE, POOL_LABEL, RACK_LABEL, ZONE_LABEL

# The session's `k8s up` is paid by the first k8s test, its `down` by the last: both fit.
pytestmark = [pytest.mark.slow, pytest.mark.k8s, pytest.mark.timeout(900)]

NAMESPACE = "gd-test-localkube"


def pod_veths() -> list[str]:
    """veth links enslaved to a node bridge (gdk-*): the host side of each pod's network."""
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True
    ).stdout
    return sorted(
        line.split(": ")[1].split("@")[0] for line in out.splitlines() if " master gdk-" in line
    )


@pytest.fixture
def kube(local_kube: LocalKube) -> Iterator[LocalKube]:
    """The session's local Kubernetes with a namespace of this test's own, deleted afterwards
    (with its claim: the local volume it used is emptied and Available again) and every node
    powered."""
    local_kube.kubectl("create", "namespace", NAMESPACE)
    try:
        yield local_kube
    finally:  # a node the test left dark would keep the namespace's pods Terminating
        for node in local_kube.nodes():
            if not local_kube.powered(node.name):
                local_kube.power_on(node.name)
        local_kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
        wait_for(
            f"namespace {NAMESPACE} gone",
            lambda: NAMESPACE not in local_kube.kubectl("get", "namespaces", "-o", "name"),
        )
        local_kube.recycle_volumes()


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
    return kube.kubectl("-n", NAMESPACE, "exec", pod, "--", "sh", "-c", script)


def apply(kube: LocalKube, *objects: dict[str, Any]) -> None:
    kube.kubectl(
        "-n",
        NAMESPACE,
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
    items = json.loads(kube.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json"))["items"]
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


def test_nodes_pods_services_and_a_power_cycle(kube: LocalKube) -> None:
    status = kube.status()
    racks = [f"az-{az}-r{r}" for az in "abc" for r in (1, 2)]
    assert status.nodes == {n: "Ready" for n in (*racks, "infra")}
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
            page = http_get(kube, pod, f"web.{NAMESPACE}.svc.cluster.local", 80)
            seen.add(page.strip())
        assert seen <= set(names), seen
        assert len(seen) >= 2, f"the Service answered only from {seen}"
    with urllib.request.urlopen(f"http://{next(iter(ips))}:8080/", timeout=5) as reply:
        assert reply.read().decode().strip() in names  # the host reaches pods too

    # Power cut of az-c-r1: its kubelet, containerd, shims and pod processes die; the Node
    # goes NotReady; power-on brings the same pod back with its volume's content.
    kube.kubectl("-n", NAMESPACE, "exec", "web-c", "--", "sh", "-c", "echo kept > /data/proof")
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
    proof = kube.kubectl("-n", NAMESPACE, "exec", "web-c", "--", "cat", "/data/proof")
    assert proof.strip() == "kept"


def _same_process(pid: int) -> bool:
    """A pid that still exists and is not a zombie (pids may be reused, but not this fast)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False
