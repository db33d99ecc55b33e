"""Backends: where the cluster runs (local processes, Docker containers, Kubernetes).

``base.Backend`` is the interface and everything derived from the cluster config; ``local`` and
``docker`` supply process control, their lifecycle and where replica data lives.

    cluster = create_cluster("local", Path(".gameday/cluster"), "3x2x1")
    cluster = open_cluster(Path(".gameday/cluster"))     # whichever backend created it
"""

from __future__ import annotations

from pathlib import Path

from chaos.backends.base import Backend

BACKENDS = ("local", "docker", "k8s")


def open_cluster(data_dir: Path) -> Backend:
    """The cluster kept in ``data_dir``, whichever backend created it."""
    from chaos.backends.docker import DockerCluster
    from chaos.backends.docker_plan import is_docker_cluster
    from chaos.backends.k8s import K8sCluster, is_k8s_cluster
    from chaos.backends.local import LocalCluster

    if is_docker_cluster(data_dir):
        return DockerCluster.open(data_dir)
    if is_k8s_cluster(data_dir):
        return K8sCluster.open(data_dir)
    return LocalCluster.open(data_dir)


def create_cluster(
    backend: str,
    data_dir: Path,
    topology: str = "3x2x1",
    partitions: int = 4,
    *,
    kubeconfig: Path | None = None,
    namespace: str | None = None,
    power_layer: bool = False,
) -> Backend:
    """Open or plan the cluster in ``data_dir`` on ``backend`` (``local``, ``docker``, ``k8s``).

    ``kubeconfig`` and ``namespace`` are for ``k8s`` only (default: the local Kubernetes of
    ``gameday k8s up``, and a namespace of the data dir's own). ``power_layer`` puts the storage
    nodes on the power-loss layer that ``power_loss_*`` faults need (local and docker).
    """
    if power_layer and backend not in ("local", "docker"):
        raise ValueError(
            f"power_loss faults need the power-loss layer under the storage nodes, which the "
            f"local and docker backends have (not {backend}): a pod's volume has no such layer; "
            "run this scenario with --backend local or docker"
        )
    if backend != "k8s" and (kubeconfig is not None or namespace is not None):
        raise ValueError("--kubeconfig and --namespace are options of the k8s backend")
    if backend == "k8s":
        from chaos.backends.k8s import K8sCluster

        return K8sCluster.create(
            data_dir, topology, partitions, kubeconfig=kubeconfig, namespace=namespace
        )
    if backend == "docker":
        from chaos.backends.docker import DockerCluster

        return DockerCluster.create(data_dir, topology, partitions, power_layer=power_layer)
    if backend == "local":
        from chaos.backends.local import LocalCluster

        return LocalCluster.create(data_dir, topology, partitions, power_layer=power_layer)
    raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
