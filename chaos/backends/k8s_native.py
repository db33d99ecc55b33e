"""Kubernetes-native faults on a release of the k8s backend, and where its processes run.

What Kubernetes itself does to pods, beside the catalog's faults (which K8sCluster maps onto
power cuts and Toxiproxy): delete them (as pod-kill chaos tools do; their controllers recreate
them), cordon nodes, drain them (cordon + the Eviction API, as ``kubectl drain``). Targets are
AZs (``az-b``) or racks (``az-b/r1``), resolved through node labels; pods through
``spec.nodeName``.

    delete_pods(cluster, "az-b")     # -> the processes hit
    drain(cluster, "az-c/r1")        # cordon + evict; the pods stay Pending
    uncordon(cluster, "az-c/r1")     # they schedule again
    describe(cluster)                # process -> pod, node, IP, powered off (cluster status)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

from chaos.backends.k8s import K8sCluster
from chaos.backends.k8s_plan import LOCAL_RACK_LABEL, ZONE_LABEL, K8sError


def nodes_of(cluster: K8sCluster, target: str) -> list[str]:
    """The Kubernetes nodes of an AZ (``az-b``) or a rack (``az-b/r1``), by their labels."""
    if "/" in target:
        az, rack = target.split("/", 1)
        selector = f"{ZONE_LABEL}={az},{LOCAL_RACK_LABEL}={az}-{rack}"
    else:
        selector = f"{ZONE_LABEL}={target}"
    nodes = cluster.core().list_node(label_selector=selector).items
    if not nodes:
        raise K8sError(f"no Kubernetes node carries {selector}")
    return sorted(n.metadata.name for n in nodes)


def processes_on(cluster: K8sCluster, nodes: Iterable[str]) -> list[str]:
    """The release's processes whose pods are on ``nodes`` (through spec.nodeName)."""
    wanted = set(nodes)
    return sorted(p for p, pod in cluster.pods(fresh=True).items() if pod.spec.node_name in wanted)


def delete_pods(cluster: K8sCluster, target: str, grace_seconds: int | None = None) -> list[str]:
    """Delete the release's pods on the nodes of ``target`` (their controllers recreate them,
    on the same nodes: they are pinned there). Returns the processes hit."""
    hit = processes_on(cluster, nodes_of(cluster, target))
    pods = cluster.pods()
    for process_id in hit:
        with contextlib.suppress(Exception):  # already gone: nothing to delete
            cluster.core().delete_namespaced_pod(
                pods[process_id].metadata.name,
                cluster.state.namespace,
                grace_period_seconds=grace_seconds,
            )
    cluster.pods(fresh=True)
    return hit


def cordon(cluster: K8sCluster, target: str) -> list[str]:
    """Mark the nodes of ``target`` unschedulable (running pods stay); returns the nodes."""
    nodes = nodes_of(cluster, target)
    cluster.set_unschedulable(nodes, True)
    return nodes


def uncordon(cluster: K8sCluster, target: str) -> list[str]:
    nodes = nodes_of(cluster, target)
    cluster.set_unschedulable(nodes, False)
    return nodes


def drain(cluster: K8sCluster, target: str, timeout: float = 60.0) -> list[str]:
    """Cordon the nodes of ``target`` and evict the release's pods from them (the Eviction API,
    as ``kubectl drain``). The pods stay Pending (pinned to those nodes) until ``uncordon``.
    Returns the processes evicted."""
    from kubernetes import client

    nodes = cordon(cluster, target)
    hit = processes_on(cluster, nodes)
    pods = cluster.pods()
    namespace = cluster.state.namespace
    for process_id in hit:
        name = pods[process_id].metadata.name
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        cluster.core().create_namespaced_pod_eviction(name, namespace, body)
    deadline = time.monotonic() + timeout
    while any(cluster.alive(p) for p in hit):
        if time.monotonic() > deadline:
            raise K8sError(f"pods on {', '.join(nodes)} still running after {timeout:g}s")
        time.sleep(0.5)
    return hit


def describe(cluster: K8sCluster) -> dict[str, Any]:
    """Where each process runs: pod, node, IP, and whether it is up (for ``cluster status``)."""
    pods = cluster.pods(fresh=True)
    power = cluster.power_state()
    rows = {}
    for process_id in cluster.process_ids():
        pod = pods.get(process_id)
        rows[process_id] = {
            "pod": None if pod is None else pod.metadata.name,
            "node": None if pod is None else pod.spec.node_name,
            "ip": None if pod is None else pod.status.pod_ip,
            "powered_off": pod is not None and pod.spec.node_name in power.nodes_off,
        }
    return {"release": cluster.state.release, "namespace": cluster.state.namespace, **rows}
