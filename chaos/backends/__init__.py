"""Backends: where the cluster runs (local processes, Docker containers).

``base.Backend`` is the interface and everything derived from the cluster config; ``local`` and
``docker`` supply process control, their lifecycle and where replica data lives.

    cluster = create_cluster("local", Path(".gameday/cluster"), "3x2x1")
    cluster = open_cluster(Path(".gameday/cluster"))     # whichever backend created it
"""

from __future__ import annotations

from pathlib import Path

from chaos.backends.base import Backend

BACKENDS = ("local", "docker")


def open_cluster(data_dir: Path) -> Backend:
    """The cluster kept in ``data_dir``, whichever backend created it."""
    from chaos.backends.docker import DockerCluster, is_docker_cluster
    from chaos.backends.local import LocalCluster

    if is_docker_cluster(data_dir):
        return DockerCluster.open(data_dir)
    return LocalCluster.open(data_dir)


def create_cluster(
    backend: str, data_dir: Path, topology: str = "3x2x1", partitions: int = 4
) -> Backend:
    """Open or plan the cluster in ``data_dir`` on ``backend`` (``local`` or ``docker``)."""
    if backend == "docker":
        from chaos.backends.docker import DockerCluster

        return DockerCluster.create(data_dir, topology, partitions)
    if backend == "local":
        from chaos.backends.local import LocalCluster

        return LocalCluster.create(data_dir, topology, partitions)
    raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
