"""The Kubernetes objects around a release of the k8s backend: its namespace, its storage
nodes' volume claims, its pods' logs. Functions of a CoreV1Api client (kubernetes package).

    created = ensure_namespace(core, "gameday-1a2b3c4d")   # True when this call made it
    delete_claims(core, "gameday-1a2b3c4d", "app.kubernetes.io/instance=gameday")
    delete_namespace(core, "gameday-1a2b3c4d")
    save_pod_logs(core, "gameday-1a2b3c4d", pods_by_process, Path("logs"))
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chaos.backends.k8s_plan import K8sError

MANAGED_BY = {"app.kubernetes.io/managed-by": "gameday"}  # what chaos/clean.py sweeps


def ensure_namespace(core: Any, namespace: str) -> bool:
    """Create ``namespace`` (labelled as gameday's) unless it exists; True if it was created."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespace(namespace)
        return False
    except ApiException as exc:
        if exc.status != 404:
            raise
    meta = client.V1ObjectMeta(name=namespace, labels=MANAGED_BY)
    core.create_namespace(client.V1Namespace(metadata=meta))
    return True


def delete_namespace(core: Any, namespace: str, timeout: float = 120.0) -> None:
    """Delete ``namespace`` and wait until it is gone; K8sError after ``timeout``."""
    from kubernetes.client.exceptions import ApiException

    with contextlib.suppress(ApiException):
        core.delete_namespace(namespace)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    raise K8sError(f"namespace {namespace} still there after {timeout:g}s")


def delete_claims(core: Any, namespace: str, selector: str, timeout: float = 60.0) -> None:
    """Delete the PersistentVolumeClaims ``selector`` picks (the data) and wait until gone."""
    core.delete_collection_namespaced_persistent_volume_claim(namespace, label_selector=selector)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claims = core.list_namespaced_persistent_volume_claim(
            namespace, label_selector=selector
        ).items
        if not claims:
            return
        time.sleep(0.5)
    raise K8sError(f"PersistentVolumeClaims {selector} still there after {timeout:g}s")


def save_pod_logs(core: Any, namespace: str, pods: dict[str, Any], logs: Path) -> None:
    """Each pod's output into ``logs/<process>.log`` (a pod on a dark node has none to give),
    and a restarted container's output before its restart (a power cycle) into
    ``logs/<process>.previous.log``: without it a powered-off node's story ends at power-on."""
    logs.mkdir(parents=True, exist_ok=True)

    def save(item: tuple[str, Any]) -> None:
        process_id, pod = item
        with contextlib.suppress(Exception):
            text = core.read_namespaced_pod_log(pod.metadata.name, namespace, _request_timeout=5)
            (logs / f"{process_id}.log").write_text(text)
        if any(c.restart_count for c in (pod.status.container_statuses or [])):
            with contextlib.suppress(Exception):
                text = core.read_namespaced_pod_log(
                    pod.metadata.name, namespace, previous=True, _request_timeout=5
                )
                (logs / f"{process_id}.previous.log").write_text(text)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(save, pods.items()))
