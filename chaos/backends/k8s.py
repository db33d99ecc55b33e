"""The cluster as a Helm release of charts/gameday on Kubernetes; faults through the API.

``up`` installs the chart with helm (one pod per process, pinned to its zone and rack, a
PersistentVolume per storage node, the Toxiproxy mesh in a pod of its own); every other call
goes through the Kubernetes Python client. The orchestrator runs on this host and reaches the
pods at their IPs: /health on admin ports, routers on :8000, the Toxiproxy API on :8474, so the
same fault planning, nemesis and checks as on the other backends apply unchanged.

Power on Kubernetes is a node's power. ``kill`` collects the processes of one fault and then,
for every Kubernetes node all of whose release pods are among them, powers the node off (the
local Kubernetes of chaos/k8s/localkube.py: its kubelet, containerd and every pod process are
SIGKILLed; the Node goes NotReady). Processes that share a node with others that stay up (or
any process on a cluster whose power we do not control) are killed as pods: the workload is
scaled to 0 and the pod's processes SIGKILLed (on this host) or the pod deleted at once.
``start`` powers the node on again (the pods come back with their volumes) or scales back to 1.

Kubernetes-native faults beside it (pod delete, cordon, drain, uncordon of the nodes of an AZ
or a rack) live in k8s_native.py. Clients reach each router through its own ClusterIP Service
on the local Kubernetes (``endpoints``), an address that outlives the router's pod IP.

    cluster = K8sCluster.create(Path(".gameday/cluster"), "3x2x1")   # local Kubernetes
    cluster.up()                       # helm install; every process healthy
    cluster.kill("sn-c1"); cluster.kill("sn-c2"); ...     # an AZ: its nodes powered off
    cluster.down(wipe=True)            # helm uninstall, the PVCs (data) and the namespace gone

``data_dir`` keeps ``k8s.json`` (release, namespace, kubeconfig), ``power.json`` (which nodes
and workloads this backend holds down, so another process can bring them back), the faults
and the dead-man's lease, and ``cluster.json`` (the release's config as this host reaches it).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chaos.backends import k8s_objects
from chaos.backends.base import (
    TOXIPROXY_API_PORT,
    Backend,
    check_reopened,
    refuse_foreign,
    saved_state,
)
from chaos.backends.k8s_plan import (
    CANNOT_START,
    ENDPOINT_OF,
    INSTANCE,
    KILL_GATHER_SECONDS,
    POD_CACHE_SECONDS,
    POWER_FILE,
    PROCESS,
    STATE_FILE,
    K8sError,
    K8sState,
    PowerState,
    at_pod_addresses,
    chart_values,
    default_namespace,
    is_k8s_cluster,
    placeholder_config,
    plan_power,
    signal_pod,
    unschedulable,
)
from chaos.helm import CHART, Helm
from chaos.images import CLUSTER_IMAGE
from chaos.mesh import wait_ready
from cluster import auth
from cluster.config import ClusterConfig
from cluster.topology import parse_topology

log = logging.getLogger(__name__)

__all__ = ["K8sCluster", "K8sError", "K8sState", "is_k8s_cluster", "local_kube"]


def local_kube() -> Any:
    """The project's local Kubernetes (chaos/k8s/localkube.py)."""
    try:
        from chaos.k8s.localkube import LocalKube
    except ImportError as exc:  # pragma: no cover - lands with the local Kubernetes
        raise K8sError(f"the local Kubernetes is not available in this checkout: {exc}") from None
    return LocalKube()


class K8sCluster(Backend):
    """A Helm release of charts/gameday, as the chaos orchestrator sees it."""

    name = "k8s"
    startup_timeout = 300.0
    poll_interval = 0.25

    def __init__(self, data_dir: Path, state: K8sState) -> None:
        super().__init__(data_dir, placeholder_config(state))
        self.state = state
        self._api: Any = None
        self._pods_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self._toxiproxy_ip: str | None = None
        self._lock = threading.RLock()
        self._pending_kills: set[str] = set()
        self._kill_timer: threading.Timer | None = None
        self._pending_starts: set[str] = set()
        self._start_timer: threading.Timer | None = None
        saved = data_dir / "cluster.json"
        if saved.exists():
            with contextlib.suppress(ValueError, OSError):
                self.config = ClusterConfig.load(saved)
                auth.install(self.config.internal_secret())  # the release's key

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        data_dir: Path,
        topology: str = "3x2x1",
        partitions: int = 4,
        *,
        kubeconfig: Path | None = None,
        namespace: str | None = None,
        release: str = "gameday",
    ) -> K8sCluster:
        """Open the release kept in ``data_dir``, or plan a new one (nothing is installed yet).

        ``namespace`` defaults to ``gameday-<hash of data_dir>``, so that every data dir (every
        game day's own cluster) gets a namespace of its own.
        """
        if is_k8s_cluster(data_dir):
            cluster = cls.open(data_dir)
            check_reopened(data_dir, cluster.state.topology, topology)
            return cluster
        refuse_foreign(data_dir, cls.name)
        parse_topology(topology)  # a clear ValueError for a bad shape
        state = K8sState(
            release=release,
            namespace=namespace or default_namespace(data_dir),
            kubeconfig=None if kubeconfig is None else str(kubeconfig.resolve()),
            topology=topology,
            partitions=partitions,
        )
        cluster = cls(data_dir, state)
        cluster._save_state()
        return cluster

    def _save_state(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.data_dir / f"{STATE_FILE}.tmp"
        tmp.write_text(self.state.model_dump_json(indent=2))
        tmp.replace(self.data_dir / STATE_FILE)

    @classmethod
    def open(cls, data_dir: Path) -> K8sCluster:
        return cls(
            data_dir, K8sState.model_validate_json(saved_state(data_dir, STATE_FILE, cls.name))
        )

    @property
    def kubeconfig(self) -> Path:
        if self.state.kubeconfig is not None:
            return Path(self.state.kubeconfig)
        return Path(local_kube().kubeconfig)

    @property
    def api(self) -> Any:
        """The Kubernetes API client (``kubernetes.client.ApiClient``) for ``kubeconfig``."""
        if self._api is None:
            from kubernetes import config

            path = self.kubeconfig
            if not path.exists():
                hint = "start it with 'gameday k8s up'" if self.state.local else "check the path"
                raise K8sError(f"no kubeconfig at {path} ({hint})")
            load: Any = config.new_client_from_config  # the client has no type hints
            self._api = load(config_file=str(path))
        return self._api

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    # -- the release ----------------------------------------------------------------------------

    def up(
        self, timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """helm install (or upgrade) the release and wait until every process is healthy."""
        timeout = self.startup_timeout if timeout is None else timeout
        started = time.monotonic()
        if self.state.local:
            kube = local_kube()
            if not kube.is_up():
                raise K8sError(
                    "the local Kubernetes is not running: start it with 'gameday k8s up'"
                )
            kube.load_image(CLUSTER_IMAGE)  # only into nodes that lack this image id
        self.bring_back()  # nothing this backend powered off or scaled down stays that way
        self._ensure_namespace()
        Helm.find().install(
            CHART,
            self.state.release,
            chart_values(self.state),
            namespace=self.state.namespace,
            kubeconfig=self.kubeconfig,
            timeout=timeout,
        )
        self.refresh()
        self.start_mesh()
        left = max(5.0, timeout - (time.monotonic() - started))
        self.wait_healthy(left, progress)

    def down(self, wipe: bool = False) -> None:
        """helm uninstall; nodes this backend powered off come back first (the node is shared).

        ``wipe`` also deletes the storage nodes' PersistentVolumeClaims (their data).
        """
        with contextlib.suppress(Exception):
            self._flush_kills()
        self.bring_back(scale=False)
        self._save_logs()
        Helm.find().uninstall(
            self.state.release, namespace=self.state.namespace, kubeconfig=self.kubeconfig
        )
        if wipe:
            self.remove_volumes()
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def remove_volumes(self) -> None:
        """Delete the release's volume claims (its data) and the namespace ``up`` created; on the
        local Kubernetes the freed volumes are emptied for the next release. After ``down``."""
        self._delete_claims()
        if self.state.owns_namespace:
            self._delete_namespace()
        if self.state.local:
            local_kube().recycle_volumes()  # Released local PVs -> emptied, Available

    def _ensure_namespace(self) -> None:
        if k8s_objects.ensure_namespace(self.core(), self.state.namespace):
            self.state = self.state.model_copy(update={"owns_namespace": True})
            self._save_state()

    def _delete_namespace(self) -> None:
        k8s_objects.delete_namespace(self.core(), self.state.namespace)

    def bring_back(self, scale: bool = True) -> None:
        """Power on every node and uncordon every node this backend holds down; scale back."""
        power = self.power_state()
        if power.nodes_off:
            kube = local_kube()
            for node in list(power.nodes_off):
                power_on_node(kube, node)
        if power.cordoned:
            self.set_unschedulable(power.cordoned, False)
        if scale:
            for process_id in power.scaled_down:
                self._scale(process_id, 1)
        self._save_power(PowerState())

    def _delete_claims(self) -> None:
        selector = f"{INSTANCE}={self.state.release}"
        k8s_objects.delete_claims(self.core(), self.state.namespace, selector)

    def _save_logs(self) -> None:
        """Each pod's output into ``logs/<process>.log`` before the release goes."""
        pods = self.pods(fresh=True)
        k8s_objects.save_pod_logs(self.core(), self.state.namespace, pods, self.data_dir / "logs")

    # -- pods, their addresses and the config as this host reaches it --------------------------

    def pods(self, fresh: bool = False) -> dict[str, Any]:
        """The release's pods by process id ("toxiproxy" included), cached for a moment."""
        with self._lock:
            at, pods = self._pods_cache
            if not fresh and time.monotonic() - at < POD_CACHE_SECONDS:
                return pods
            pods = {}
            for pod in self._listed(self.core().list_namespaced_pod, PROCESS):
                if pod.metadata.deletion_timestamp is not None:
                    continue
                pods[pod.metadata.labels[PROCESS]] = pod
            self._pods_cache = (time.monotonic(), pods)
            self._update_addresses(pods)
            return pods

    def _listed(self, list_namespaced: Callable[..., Any], label: str) -> list[Any]:
        """The release's objects of one kind carrying ``label``, listed by ``list_namespaced``."""
        selector = f"{INSTANCE}={self.state.release},{label}"
        result = list_namespaced(self.state.namespace, label_selector=selector, _request_timeout=10)
        return list(result.items)

    def refresh(self) -> None:
        """Read the release's config from its Secret and the pods' addresses (after install)."""
        secret = self.core().read_namespaced_secret(
            f"{self.state.fullname}-credentials", self.state.namespace
        )
        chart_config = ClusterConfig.model_validate_json(
            base64.b64decode(secret.data["cluster.json"])
        )
        with self._lock:
            self.config = chart_config
            # Signed admin GETs (/digest for the convergence check, /replicas, ...) need the
            # release's internal key; the placeholder config installed a key of no credentials.
            auth.install(chart_config.internal_secret())
            self._toxiproxy_ip = None
            self._update_addresses(self.pods(fresh=True), force=True)

    def _update_addresses(self, pods: dict[str, Any], force: bool = False) -> None:
        """Point every process's listen and admin address at its pod's IP (same ports)."""
        processes = at_pod_addresses(self.config.processes, pods)
        changed = force or processes != self.config.processes
        toxiproxy = pods.get("toxiproxy")
        ip = None if toxiproxy is None else toxiproxy.status.pod_ip
        if ip is not None and ip != self._toxiproxy_ip:
            self._toxiproxy_ip = ip
            self._mesh = None
            changed = True
        if changed:
            self.config = self.config.model_copy(update={"processes": processes})
            with contextlib.suppress(OSError):
                path = self.data_dir / "cluster.json"
                self.config.save(path)
                path.chmod(0o600)  # it holds the credentials

    def favour_load(self, pid: int) -> None:
        """On the local Kubernetes: a machine's CPU weight (host.py ``favour_load_generator``)."""
        from chaos.k8s import host

        if self.state.local and not host.favour_load_generator(pid):
            log.warning("no CPU weight for the load generator (needs root): it may send late")

    def endpoints(self) -> dict[str, str]:
        """Router id -> its DynamoDB endpoint. On the local Kubernetes: the router's own
        ClusterIP Service (``<release>-<router>-api``; kube-proxy serves this host too), an
        address that stays when the pod comes back with a new IP after a power cut, as an AZ's
        load balancer would. Elsewhere: the pod's IP (flat pod networks reach it)."""
        direct = super().endpoints()
        if not self.state.local:
            return direct
        services = self._listed(self.core().list_namespaced_service, ENDPOINT_OF)
        stable = {
            svc.metadata.labels[
                ENDPOINT_OF
            ]: f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"
            for svc in services
            if svc.spec.cluster_ip not in (None, "", "None")
        }
        return {router: stable.get(router, url) for router, url in direct.items()}

    def proxy_host(self) -> str:
        if self._toxiproxy_ip is None:
            self.pods(fresh=True)
        if self._toxiproxy_ip is None:
            raise K8sError(f"the Toxiproxy pod of {self.state.release} has no address (yet)")
        return self._toxiproxy_ip

    def start_toxiproxy(self) -> None:
        """Nothing to start: the release's Deployment runs it."""

    def start_mesh(self) -> None:
        """Wait for the in-cluster Toxiproxy: it creates every proxy from the chart at start."""
        if self.has_mesh:
            wait_ready(f"http://{self.proxy_host()}:{TOXIPROXY_API_PORT}", 60.0)

    def node_data_dir(self, node_id: str) -> Path:
        """The storage node's volume on this host (the local Kubernetes' ``local`` PV)."""
        claim = f"data-{self.state.fullname}-{node_id}-0"
        core = self.core()
        pvc = core.read_namespaced_persistent_volume_claim(claim, self.state.namespace)
        volume = pvc.spec.volume_name
        if not volume:
            raise K8sError(f"{claim} is not bound to a volume yet")
        pv = core.read_persistent_volume(volume)
        source = pv.spec.local or pv.spec.host_path
        if source is None or not self.state.local:
            raise K8sError(f"{node_id}'s volume {volume} is not a directory on this host")
        return Path(source.path)

    def logs_hint(self, process_id: str) -> str:
        pod = self.pods().get(process_id)
        name = pod.metadata.name if pod is not None else f"-l {PROCESS}={process_id}"
        return f"see 'kubectl --kubeconfig {self.kubeconfig} -n {self.state.namespace} logs {name}'"

    def down_reason(self, process_id: str) -> str:
        pod = self.pods().get(process_id)
        if pod is None:
            return "has no pod"
        node = pod.spec.node_name
        if node in self.power_state().nodes_off:
            return f"is on node {node}, which is powered off"
        waiting = [
            s.state.waiting.reason
            for s in pod.status.container_statuses or []
            if s.state and s.state.waiting
        ]
        phase = pod.status.phase
        return f"is {phase}" + (f" ({', '.join(waiting)})" if waiting else "")

    # -- process control ------------------------------------------------------------------------

    def alive(self, process_id: str) -> bool:
        """Its pod is there, on a node that has power, running or on its way to (a process
        coming back after a power-on or a scale-up is alive: ``wait_healthy`` waits for it;
        a paused one is alive too). A pod that cannot start (crash loop, no image) is not."""
        self._flush_kills()
        self.config.process(process_id)  # KeyError for an unknown id
        pod = self.pods().get(process_id)
        if pod is None or pod.spec.node_name in self.power_state().nodes_off:
            return False
        if pod.status.phase in ("Failed", "Succeeded") or unschedulable(pod):
            return False
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in CANNOT_START:
                return False
        return True

    def kill(self, process_id: str) -> None:
        """Power off (see the module docstring); lands within ``KILL_GATHER_SECONDS``."""
        self.config.process(process_id)
        self._flush_starts()
        with self._lock:
            self._pending_kills.add(process_id)
            if self._kill_timer is None:
                self._kill_timer = threading.Timer(KILL_GATHER_SECONDS, self._flush_kills)
                self._kill_timer.daemon = True
                self._kill_timer.start()

    def _flush_kills(self, starts_first: bool = True) -> None:
        if starts_first:
            self._flush_starts()
        with self._lock:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
                self._kill_timer = None
            pending, self._pending_kills = self._pending_kills, set()
            if not pending:
                return
            pods = self.pods(fresh=True)
            on_node: dict[str, set[str]] = {}
            for process_id, pod in pods.items():
                on_node.setdefault(pod.spec.node_name, set()).add(process_id)
            power = self.power_state()
            dark, singles = plan_power(pending, on_node, set(power.nodes_off), self.state.local)
            if dark:
                kube = local_kube()
                with ThreadPoolExecutor(max_workers=len(dark)) as pool:
                    list(pool.map(kube.power_off, dark))
                for node in dark:
                    power.nodes_off[node] = sorted(on_node[node])
                log.info("powered off nodes %s", ", ".join(dark))
            for process_id in singles:
                self._kill_pod(process_id, pods.get(process_id))
                if process_id not in power.scaled_down:
                    power.scaled_down.append(process_id)
            self._save_power(power)
            self._pods_cache = (0.0, {})

    def _kill_pod(self, process_id: str, pod: Any) -> None:
        """Scale the process's workload to 0 and kill its pod without a grace period."""
        self._scale(process_id, 0)
        if pod is None:
            return
        if self.state.local:
            signal_pod(pod.metadata.uid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.core().delete_namespaced_pod(
                pod.metadata.name, self.state.namespace, grace_period_seconds=0
            )

    def start(self, process_id: str) -> None:
        """Power on its node, or scale its workload back to 1 (no-op when running).

        Lands within ``KILL_GATHER_SECONDS`` (or at the next look at any process): the starts
        of one heal are gathered so that an AZ's nodes are powered on together.
        """
        self.config.process(process_id)
        self._flush_kills(starts_first=False)  # the starts of one heal are gathered, not run
        with self._lock:
            self._pending_starts.add(process_id)
            if self._start_timer is None:
                self._start_timer = threading.Timer(KILL_GATHER_SECONDS, self._flush_starts)
                self._start_timer.daemon = True
                self._start_timer.start()

    def _flush_starts(self) -> None:
        with self._lock:
            if self._start_timer is not None:
                self._start_timer.cancel()
                self._start_timer = None
            pending, self._pending_starts = self._pending_starts, set()
            if not pending:
                return
            power = self.power_state()
            nodes = [node for node, there in power.nodes_off.items() if pending & set(there)]
            if nodes:
                kube = local_kube()

                def power_on(node: str) -> None:
                    power_on_node(kube, node)

                with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                    list(pool.map(power_on, nodes))
                for node in nodes:
                    del power.nodes_off[node]
                log.info("powered on nodes %s", ", ".join(nodes))
            self._save_power(power)
            if power.cordoned:  # a drained process comes back once its nodes take pods again
                pods = self.pods(fresh=True)
                if any(p not in pods or not pods[p].spec.node_name for p in pending):
                    self.set_unschedulable(list(power.cordoned), False)
                    power = self.power_state()
            scaled = sorted(pending & set(power.scaled_down))
            for process_id in scaled:
                self._scale(process_id, 1)
                power.scaled_down.remove(process_id)
            self._save_power(power)
            self._pods_cache = (0.0, {})
            # Their controllers make the pods in a moment: wait for them, briefly, so that
            # nobody takes a process that is on its way back for one that is down.
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                if all(p in self.pods(fresh=True) for p in scaled):
                    break
                time.sleep(0.2)

    def pause(self, process_id: str) -> None:
        """SIGSTOP every process of the pod (the local Kubernetes only: they run on this host)."""
        self._signal(process_id, signal.SIGSTOP)

    def resume(self, process_id: str) -> None:
        self._signal(process_id, signal.SIGCONT)

    def _signal(self, process_id: str, sig: signal.Signals) -> None:
        if not self.state.local:
            raise K8sError("pause/resume needs the pods' processes on this host (local k8s)")
        pod = self.pods(fresh=True).get(process_id)
        if pod is not None:
            signal_pod(pod.metadata.uid, sig)

    def _workload(self, process_id: str) -> tuple[str, str]:
        kind = "stateful_set" if self.config.process(process_id).role == "storage" else "deployment"
        return kind, f"{self.state.fullname}-{process_id}"

    def _scale(self, process_id: str, replicas: int) -> None:
        kind, name = self._workload(process_id)
        patch = getattr(self.apps(), f"patch_namespaced_{kind}_scale")
        patch(name, self.state.namespace, {"spec": {"replicas": replicas}})

    # -- Kubernetes-native faults ---------------------------------------------------------------

    def set_unschedulable(self, nodes: Iterable[str], unschedulable: bool) -> None:
        with self._lock:
            power = self.power_state()
            for node in nodes:
                self.core().patch_node(node, {"spec": {"unschedulable": unschedulable}})
                if unschedulable and node not in power.cordoned:
                    power.cordoned.append(node)
                elif not unschedulable and node in power.cordoned:
                    power.cordoned.remove(node)
            self._save_power(power)

    # -- power state, shared with other processes (gameday heal, the dead-man's switch) ---------

    def power_state(self) -> PowerState:
        path = self.data_dir / POWER_FILE
        try:
            return PowerState.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return PowerState()

    def _save_power(self, power: PowerState) -> None:
        if not self.data_dir.exists():
            return
        tmp = self.data_dir / f"{POWER_FILE}.tmp"
        tmp.write_text(power.model_dump_json(indent=1))
        tmp.replace(self.data_dir / POWER_FILE)


def power_on_node(kube: Any, node: str) -> None:
    """Power ``node`` on; one left half on (containerd without a kubelet) is cycled first.
    LocalKube.power_on returns once the node's kubelet is healthy, or raises."""
    if kube.powered(node):
        return
    with contextlib.suppress(Exception):
        kube.power_off(node)
    kube.power_on(node)
