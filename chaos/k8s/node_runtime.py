"""One local Kubernetes node's machine: its containerd and kubelet, started in the node's cgroup,
cut off as by a power cut and started again.

LocalKube (localkube.py) owns the cluster; this module owns what runs per node:

    runtime = NodeRuntime(state_dir, procs, pki, bin_dir)
    runtime.start_containerd(node)        # configs, containerd in the node's cgroup, answering
    runtime.import_images(nodes, [tar])   # into every node lacking it, several nodes at once
    runtime.start_kubelet(node)           # returns once the kubelet serves its health port
    runtime.power_off(node)               # cgroup frozen, every process SIGKILLed, mounts gone
    runtime.power_on(node)                # containerd answering, then a healthy kubelet
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chaos.backends.processes import ProcessTable
from chaos.k8s import host, manifests
from chaos.k8s.node_images import PAUSE_IMAGE, import_archive
from chaos.k8s.nodes import CGROUP_PARENT, KubeNode, LocalKubeError
from chaos.k8s.pki import Pki

RUN_DIR = Path("/run/gameday-k8s")  # sockets and containerd state (short paths, one per machine)
KUBELET_ROOT = Path("/var/lib/gameday-k8s")  # kubelets' root dirs (pod volumes), on disk
DNS_SERVICE_IP = "10.96.0.10"
IMPORT_WORKERS = 4  # nodes importing an image at once (ctr import is mostly disk)
SHIM_SOCKETS = Path("/run/containerd/s")


class NodeRuntime:
    """The containerd and kubelet of each node of the local Kubernetes in ``state_dir``."""

    def __init__(self, state_dir: Path, procs: ProcessTable, pki: Pki, bin_dir: Path) -> None:
        self.state_dir = state_dir
        self.procs = procs
        self.pki = pki
        self.bin_dir = bin_dir

    # --- where a node's things are --------------------------------------------------------------

    def node_dir(self, node: KubeNode) -> Path:
        return self.state_dir / "nodes" / node.name

    def kubelet_dir(self, node: KubeNode) -> Path:
        """The kubelet's --root-dir: a short path, since it holds unix sockets (108 bytes max)."""
        return KUBELET_ROOT / node.name

    def socket(self, node: KubeNode) -> Path:
        return RUN_DIR / node.name / "containerd.sock"

    def kubeconfig(self, node: KubeNode) -> Path:
        return self.state_dir / "kubeconfigs" / f"node-{node.name}"

    # --- starting -------------------------------------------------------------------------------

    def start_containerd(self, node: KubeNode) -> None:
        """Write the node's configs and start its containerd; returns once it answers."""
        ndir, rdir = self.node_dir(node), RUN_DIR / node.name
        for d in (ndir / "cni", self.kubelet_dir(node), ndir / "pod-logs", rdir):
            d.mkdir(parents=True, exist_ok=True)
        (ndir / "cni" / "10-gameday.conflist").write_text(
            manifests.cni_conflist(node.bridge, node.pod_cidr, node.ip, ndir / "cni-ipam")
        )
        (ndir / "containerd.toml").write_text(
            manifests.containerd_config(ndir, rdir, self.socket(node), PAUSE_IMAGE)
        )
        (ndir / "kubelet.yaml").write_text(
            manifests.kubelet_config(
                node, self.pki, self.socket(node), ndir, DNS_SERVICE_IP, CGROUP_PARENT
            )
        )
        (ndir / "resolv.conf").write_text("")
        self._run_containerd(node)

    def _run_containerd(self, node: KubeNode) -> None:
        host.make_cgroup(node.cgroup + "/system")
        config = self.node_dir(node) / "containerd.toml"
        self._spawn_in_node(node, "containerd", ["containerd", "--config", str(config)])
        self._wait_containerd(node)

    def import_images(self, nodes: list[KubeNode], archives: list[Path]) -> list[str]:
        """Import each archive into every node's containerd that lacks it (a marker per node
        and archive name, which carries the image id), several nodes at once: an import is
        mostly waiting on the disk. Returns the nodes that received something."""

        running: set[subprocess.Popen[bytes]] = set()
        lock = threading.Lock()
        stop = threading.Event()

        def started(proc: subprocess.Popen[bytes]) -> None:
            with lock:
                running.add(proc)
                if stop.is_set():
                    proc.kill()

        def load(node: KubeNode) -> bool:
            loaded = False
            for archive in archives:
                marker = self.node_dir(node) / "images" / archive.name
                if marker.exists():
                    continue
                if stop.is_set():
                    raise LocalKubeError("image import interrupted")
                if not self.procs.alive(f"{node.name}.containerd"):
                    raise LocalKubeError(
                        f"cannot load {archive.name} into {node.name}: it is powered off"
                    )
                import_archive(self.socket(node), archive, started)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                loaded = True
            return loaded

        pool = ThreadPoolExecutor(max_workers=IMPORT_WORKERS)
        try:
            futures = [pool.submit(load, node) for node in nodes]
            done = [future.result() for future in futures]
        except BaseException:  # a failed import, Ctrl-C, SIGTERM: no ctr import outlives us
            stop.set()
            with lock:
                for proc in running:
                    proc.kill()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [n.name for n, loaded in zip(nodes, done, strict=True) if loaded]

    def start_kubelet(self, node: KubeNode, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start the node's kubelet and wait until it serves its health port (it has then
        connected to its container runtime). A kubelet that exits first is started again, up to
        ``attempts`` times within ``timeout`` s: right after a power cut containerd may answer
        ``version`` while its CRI service still cleans up after the killed shims."""
        deadline = time.monotonic() + timeout
        health = f"http://{node.ip}:{manifests.KUBELET_HEALTHZ_PORT}/healthz"
        for attempt in range(1, attempts + 1):
            self._spawn_kubelet(node)
            while self.procs.alive(f"{node.name}.kubelet"):
                if _http_ok(health):
                    return
                if time.monotonic() > deadline:
                    raise LocalKubeError(
                        f"the kubelet of {node.name} is not healthy after {timeout:g}s: "
                        f"{self.log_tail(node.name + '.kubelet')}"
                    )
                time.sleep(0.1)
            if attempt == attempts or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        raise LocalKubeError(
            f"the kubelet of {node.name} exited {attempts} times: "
            f"{self.log_tail(node.name + '.kubelet')}"
        )

    def _spawn_kubelet(self, node: KubeNode) -> None:
        ndir = self.node_dir(node)
        labels = ",".join(f"{k}={v}" for k, v in node.labels.items())
        self._spawn_in_node(
            node,
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={ndir / 'kubelet.yaml'}",
                f"--kubeconfig={self.kubeconfig(node)}",
                f"--root-dir={self.kubelet_dir(node)}",
                f"--hostname-override={node.name}",
                f"--node-ip={node.ip}",
                f"--node-labels={labels}",
                f"--cert-dir={ndir / 'kubelet-pki'}",
                "--v=1",
            ],
        )

    def _spawn_in_node(self, node: KubeNode, what: str, argv: list[str]) -> None:
        """Start ``argv`` inside the node's cgroup (so power-off finds all it started)."""
        cgroups = " ".join(str(d) for d in host.cgroup_dirs(node.cgroup + "/system"))
        script = 'for d in $GAMEDAY_CGROUPS; do echo $$ > "$d/cgroup.procs"; done; exec "$@"'
        self.procs.spawn(
            f"{node.name}.{what}",
            ["/bin/sh", "-c", script, what, *argv],
            env={"GAMEDAY_CGROUPS": cgroups},
        )

    def _wait_containerd(self, node: KubeNode, timeout: float = 30.0) -> None:
        """Until the node's containerd answers on its socket (``ctr version``), at most
        ``timeout`` s: its socket appears before the services behind it are served, and a
        kubelet that finds the runtime unavailable exits at once."""
        deadline = time.monotonic() + timeout
        version = ["ctr", "-a", str(self.socket(node)), "version"]
        while True:
            if self.socket(node).exists() and host.succeeds(version, timeout=5.0):
                return
            if not self.procs.alive(f"{node.name}.containerd"):
                raise LocalKubeError(
                    f"containerd of {node.name} exited: {self.log_tail(node.name + '.containerd')}"
                )
            if time.monotonic() > deadline:
                raise LocalKubeError(
                    f"containerd of {node.name} does not answer after {timeout:g}s"
                )
            time.sleep(0.1)

    # --- power ----------------------------------------------------------------------------------

    def power_off(self, node: KubeNode) -> int:
        """Cut the node's power: SIGKILL its kubelet, containerd, shims and every pod process
        (its cgroup is frozen first, so nothing escapes), then drop what a reboot loses (its
        container mounts and network namespaces). Returns the number of processes killed."""
        killed = host.kill_cgroup_tree(node.cgroup)
        for what in ("containerd", "kubelet"):
            self.procs.wait_dead(f"{node.name}.{what}", 5.0)
        self._remove_shim_sockets(node)
        host.unmount_under(RUN_DIR / node.name, self.kubelet_dir(node))
        return killed

    def power_on(self, node: KubeNode) -> None:
        """Start the node's containerd and kubelet again and return once the kubelet is healthy
        (its pods then come back by themselves); raises LocalKubeError if it cannot start."""
        if self.procs.alive(f"{node.name}.kubelet") or self.procs.alive(f"{node.name}.containerd"):
            raise LocalKubeError(f"node {node.name} is powered on")
        self._run_containerd(node)
        self.start_kubelet(node)

    def powered(self, node: KubeNode) -> bool:
        return self.procs.alive(f"{node.name}.kubelet")

    def _remove_shim_sockets(self, node: KubeNode) -> None:
        """containerd 1.6 shims keep sockets in /run/containerd/s; a killed shim leaves its own."""
        tasks = RUN_DIR / node.name / "state" / "io.containerd.runtime.v2.task"
        for ns in tasks.glob("*") if tasks.is_dir() else []:
            for bundle in ns.iterdir():
                key = f"{self.socket(node)}/{ns.name}/{bundle.name}"
                (SHIM_SOCKETS / hashlib.sha256(key.encode()).hexdigest()).unlink(missing_ok=True)

    def log_tail(self, pid_id: str, lines: int = 6) -> str:
        try:
            text = self.procs.log_file(pid_id).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # a node's own IP
            return bool(resp.status == 200)
    except OSError:
        return False
