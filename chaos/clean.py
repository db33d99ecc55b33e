"""`gameday clean`: find and remove what killed runs, commands and tests left behind.

A run that is SIGKILLed has a watchdog to tear down after it (chaos/deadman.py); this is the
sweep for when even that was killed, or a machine was rebooted mid-run. Each *sweeper* knows one
kind of thing the project creates — local cluster processes, Docker containers and networks
(labelled ``io.gameday.*``), loopback subnet claims, the k8s backend's namespaces on the local
Kubernetes — and reports what it found before removing it.

What counts as left behind, and never a cluster someone is using:

- a run or `gameday load` whose process and watchdog both died without finishing (their guard
  files are listed in a machine-wide registry): its faults healed, its process groups stopped,
  the cluster it started torn down, on whichever backend;
- a local cluster whose data dir is gone; test-fixture nodes and Locust orphaned to init;
- mounts of the power-loss layer whose daemon died or whose cluster is gone;
- subnet claims that are provably stale (chaos/backends/subnets.py).

``--all`` also removes every local cluster and Docker cluster of the project that is still
running (for a clean machine), ``--dry-run`` only lists.

    $ gameday clean --dry-run
    $ gameday clean
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from chaos.backends.processes import pid_alive

MANAGED_BY = "app.kubernetes.io/managed-by=gameday"  # namespaces the k8s backend created


@dataclass
class Leftover:
    kind: str  # "local cluster", "process", "container", "network", "subnet claim", ...
    name: str
    why: str
    remove: Callable[[], None] = field(repr=False, default=lambda: None)


class Sweeper(Protocol):
    name: str

    def find(self, everything: bool) -> list[Leftover]: ...


# --- local processes and clusters ------------------------------------------------------------

CLUSTER_MODULES = ("cluster.storage", "cluster.router", "cluster.memds", "cluster.admission")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    argv: tuple[str, ...]

    def module(self) -> str | None:
        argv = self.argv
        for i, arg in enumerate(argv[:-1]):
            if arg == "-m":
                return argv[i + 1]
        return None

    def option(self, name: str) -> str | None:
        argv = self.argv
        for i, arg in enumerate(argv[:-1]):
            if arg == name:
                return argv[i + 1]
        return None

    def path_option(self, name: str) -> Path | None:
        """A path argument as the process sees it: a relative one is relative to *its* cwd.

        `make demo` starts nodes with ``--config runs/<run>/cluster/cluster.json``; read from
        the cwd of `gameday clean` that file "is gone" and a live cluster would be stopped.
        """
        value = self.option(name)
        if value is None:
            return None
        path = Path(value)
        if path.is_absolute():
            return path
        try:
            return Path(os.readlink(f"/proc/{self.pid}/cwd")) / path
        except OSError:
            return None  # the process is gone or not ours to inspect: judge nothing by it


def processes() -> Iterator[Proc]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = tuple(
                a.decode(errors="replace")
                for a in (entry / "cmdline").read_bytes().split(b"\0")
                if a
            )
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if not argv or fields[0] == "Z":
            continue
        yield Proc(int(entry.name), int(fields[1]), argv)


def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGCONT + SIGTERM, then SIGKILL what is still there after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class GuardSweeper:
    """Runs and `gameday load`s that died with their watchdog: do what the watchdog would."""

    name = "guards"

    def find(self, everything: bool) -> list[Leftover]:
        from chaos.deadman import Watchdog, read_lease, registered_guards, unregister_guard

        found = []
        for path in registered_guards():
            plan = read_lease(path)
            if plan is None or plan.get("done"):
                unregister_guard(path)
                continue
            owner = int(plan.get("owner", 0))
            watchdog = int(plan.get("watchdog", 0))
            if (owner and pid_alive(owner)) or (watchdog and pid_alive(watchdog)):
                continue  # still running, or its watchdog is still cleaning up after it

            def remove(guard: Path = path) -> None:
                Watchdog(guard).step()  # the owner is dead: heal, stop its groups, tear down
                unregister_guard(guard)

            what = plan.get("data_dir") or "its process groups"
            why = f"its owner (pid {owner}) and its watchdog died without finishing"
            found.append(Leftover("killed run", str(what), why, remove))
        return found


class LocalSweeper:
    name = "local"

    def find(self, everything: bool) -> list[Leftover]:
        from chaos.backends.local import LocalCluster

        found: list[Leftover] = []
        by_dir: dict[Path, list[Proc]] = {}
        for proc in processes():
            module = proc.module()
            config = proc.path_option("--config")
            if module in CLUSTER_MODULES and config:
                by_dir.setdefault(Path(config).parent, []).append(proc)
            elif module in CLUSTER_MODULES and proc.ppid == 1:  # a test fixture's node, orphaned
                found.append(self._proc(proc, "a test's node whose test process died"))
            elif _is_locust(proc) and proc.ppid == 1:
                found.append(self._proc(proc, "Locust whose gameday process died"))
        for cluster_dir, procs in sorted(by_dir.items()):
            if not (cluster_dir / "cluster.json").exists():
                pids = [p.pid for p in procs]

                def stop(pids: list[int] = pids) -> None:
                    terminate(pids)

                found.append(
                    Leftover("local cluster", str(cluster_dir), "its data dir is gone", stop)
                )
                continue
            if not everything:
                continue  # someone's cluster, running as asked (`gameday cluster up`)
            why = "--all"
            cluster = LocalCluster.open(cluster_dir)

            def remove(c: LocalCluster = cluster) -> None:
                c.down()
                c.release_subnet()

            found.append(Leftover("local cluster", str(cluster_dir), why, remove))
        return found

    @staticmethod
    def _proc(proc: Proc, why: str) -> Leftover:
        return Leftover(
            "process", f"{proc.pid} {' '.join(proc.argv)[:80]}", why, lambda: terminate([proc.pid])
        )


def _is_locust(proc: Proc) -> bool:
    text = " ".join(proc.argv)
    return "locust" in text and "workloads" in text and "locustfile" in text


# --- the power-loss layer's mounts --------------------------------------------------------------


class MountSweeper:
    """Mounts of the power-loss layer (chaos/backends/lazyfs.py) and their daemons, left by a
    cluster that is gone: the daemon dead (a dead mount), or the cluster's config removed."""

    name = "mounts"

    def find(self, everything: bool) -> list[Leftover]:
        from chaos.backends.lazyfs import unmount
        from chaos.backends.powerlayer import leftover_mounts

        daemons: dict[str, list[int]] = {}
        for proc in processes():
            mount = proc.path_option("--mount")
            if proc.module() == "chaos.backends.lazyfs" and mount:
                daemons.setdefault(str(Path(mount).resolve()), []).append(proc.pid)
        found: list[Leftover] = []
        mounts = {str(m): m for m in leftover_mounts()}
        for path in sorted(set(mounts) | set(daemons)):
            cluster_dir = Path(path).parent.parent  # <data_dir>/nodes/<id>
            pids = daemons.get(path, [])
            if not pids:
                why = "its daemon is gone (a dead mount)"
            elif not (cluster_dir / "cluster.json").exists():
                why = "its cluster's data dir is gone"
            elif everything:
                why = "--all"
            else:
                continue  # a running cluster's node, on the layer as asked

            def remove(pids: list[int] = pids, mountpoint: Path = Path(path)) -> None:
                terminate(pids)
                if str(mountpoint) in {str(m) for m in leftover_mounts()}:
                    unmount(mountpoint)

            found.append(Leftover("power-loss mount", path, why, remove))
        return found


# --- subnet claims -----------------------------------------------------------------------------


class SubnetSweeper:
    name = "subnets"

    def find(self, everything: bool) -> list[Leftover]:
        from chaos.backends.subnets import claims, release_subnet

        found = []
        for octet, claim in sorted(claims().items()):
            if claim.get("stale"):

                def release(octet: int = octet) -> None:
                    release_subnet(octet)

                name, why = f"127.{octet}.0.0/16", f"stale claim by {claim.get('owner')}"
                found.append(Leftover("subnet claim", name, why, release))
        return found


# --- Docker ------------------------------------------------------------------------------------


class DockerSweeper:
    name = "docker"

    def find(self, everything: bool) -> list[Leftover]:
        from chaos.images import engine

        try:
            client = engine(timeout=10)
        except Exception:  # no engine here: nothing of ours can be running in it
            return []
        from chaos.backends.docker_plan import LABEL

        found: list[Leftover] = []
        containers = client.containers.list(
            all=True, filters={"label": f"{LABEL}.cluster"}, ignore_removed=True
        )
        clusters: dict[str, list[object]] = {}
        for container in containers:
            clusters.setdefault(container.labels.get(f"{LABEL}.cluster", "?"), []).append(container)
        for network in client.networks.list(filters={"label": f"{LABEL}.cluster"}):
            clusters.setdefault(network.attrs["Labels"].get(f"{LABEL}.cluster", "?"), [])
        for name in sorted(clusters):
            if not everything:
                continue  # a killed run's containers are found through its guard file
            why = "--all"

            def remove(cluster: str = name) -> None:
                flt = {"label": f"{LABEL}.cluster={cluster}"}
                for c in client.containers.list(all=True, filters=flt, ignore_removed=True):
                    c.remove(force=True)
                for n in client.networks.list(filters=flt):
                    n.remove()
                for v in client.volumes.list(filters=flt):
                    v.remove(force=True)

            found.append(Leftover("docker cluster", name, why, remove))
        return found


# --- Kubernetes --------------------------------------------------------------------------------


class K8sSweeper:
    """Namespaces the k8s backend created (labelled ``app.kubernetes.io/managed-by=gameday``)
    on the local Kubernetes; a killed run's own namespace is found through its guard file."""

    name = "k8s"

    def find(self, everything: bool) -> list[Leftover]:
        if not everything:
            return []
        try:
            from chaos.backends.k8s import local_kube

            kube = local_kube()
            if not kube.is_up():
                return []
            from kubernetes import client, config

            load: Any = config.new_client_from_config
            core: Any = client.CoreV1Api(load(config_file=str(kube.kubeconfig)))
            namespaces = [
                n.metadata.name for n in core.list_namespace(label_selector=MANAGED_BY).items
            ]
        except Exception:  # no local Kubernetes here: nothing of ours can run in it
            return []
        found: list[Leftover] = []
        for namespace in namespaces:

            def remove(name: str = namespace) -> None:
                core.delete_namespace(name)  # its pods, claims and the release's objects
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    names = {n.metadata.name for n in core.list_namespace().items}
                    if name not in names:
                        break
                    time.sleep(0.5)
                kube.recycle_volumes()

            found.append(Leftover("k8s namespace", namespace, "--all", remove))
        return found


SWEEPERS: list[Sweeper] = [
    GuardSweeper(),
    LocalSweeper(),
    MountSweeper(),
    DockerSweeper(),
    K8sSweeper(),
    SubnetSweeper(),
]


def sweep(everything: bool = False, dry_run: bool = False) -> list[tuple[Leftover, str | None]]:
    """Find leftovers with every sweeper and remove them; (leftover, error or None) each."""
    done: list[tuple[Leftover, str | None]] = []
    for sweeper in SWEEPERS:
        for leftover in sweeper.find(everything):
            error = None
            if not dry_run:
                try:
                    leftover.remove()
                except Exception as exc:  # report it, carry on with the rest
                    error = str(exc)
            done.append((leftover, error))
    return done
