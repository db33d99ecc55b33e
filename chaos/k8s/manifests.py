"""The configuration files and API objects of the local Kubernetes, as pure functions.

Nothing here touches the machine: each function returns the text of a config file (containerd,
CNI, kubelet, kube-proxy, CoreDNS) or the API objects applied once the control plane is up
(StorageClass and local PersistentVolumes, the cluster DNS Service, CoreDNS' RBAC).

    kubelet_config(node, pki, socket, node_dir, "10.96.0.10", "gameday-k8s")   # YAML text
    cluster_objects(nodes, volumes_dir)                                        # list of dicts
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from chaos.backends.k8s_plan import MESH_SYSCTLS

if TYPE_CHECKING:
    from chaos.k8s.nodes import KubeNode
    from chaos.k8s.pki import Pki

STORAGE_CLASS = "gameday-local"
VOLUMES_PER_NODE = 4
VOLUME_SIZE = "1Gi"
KUBELET_HEALTHZ_PORT = 10248  # on the node's own IP: the kubelet answers once its runtime does


def cni_conflist(bridge: str, subnet: str, gateway: str, ipam_dir: Path) -> str:
    """The node's pod network: its own bridge and /24; no masquerade (pods talk only to pods
    and the host), hairpin so a pod reaches itself through a Service."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        },
        indent=2,
    )


def containerd_config(node_dir: Path, run_dir: Path, socket: Path, sandbox_image: str) -> str:
    """A private containerd: own root, state, socket and runc root; CRI without OOM-score
    changes (the VM lacks CAP_SYS_RESOURCE) and with network namespaces under its state."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{node_dir / "containerd"}"
state = "{run_dir / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "warn"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{node_dir / "opt"}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{run_dir / "runc"}"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{node_dir / "cni"}"
  max_conf_num = 1
"""


def kubelet_config(
    node: KubeNode, pki: Pki, socket: Path, node_dir: Path, dns_ip: str, cgroup_parent: str
) -> str:
    """The kubelet on the node's own address (its bridge), cgroupfs under its own cgroup root."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": node.ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki.cert(f"kubelet-{node.name}")),
        "tlsPrivateKeyFile": str(pki.key(f"kubelet-{node.name}")),
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_parent}/{node.name}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "clusterDNS": [dns_ip],
        "clusterDomain": "cluster.local",
        "resolvConf": str(node_dir / "resolv.conf"),
        "podLogsDir": str(node_dir / "pod-logs"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "maxPods": 60,
        # One disk under every node: do not let the kubelets evict pods or delete images that
        # cannot be pulled again (imported, no registry).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "4s",
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "serializeImagePulls": False,
        "registerWithTaints": node.taints,
        # The k8s backend's mesh pod bounds its upstream dials (k8s_plan.MESH_SYSCTLS).
        "allowedUnsafeSysctls": sorted(MESH_SYSCTLS),
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(kubeconfig: Path, cluster_cidr: str, hostname: str) -> str:
    """One kube-proxy for the host (all nodes share its network namespace), iptables mode,
    leaving conntrack sysctls and localhost NodePorts alone (no host changes beyond rules)."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": cluster_cidr,
        "hostnameOverride": hostname,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(address: str, kubeconfig: Path) -> str:
    """CoreDNS answers for cluster.local (and reverse lookups of pods and Services) only:
    nothing is forwarded off the machine."""
    return f""". {{
    bind {address}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} gameday-local
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""


def cluster_objects(nodes: list[KubeNode], volumes_dir: Path) -> list[dict[str, Any]]:
    """StorageClass and per-node local PVs, the kube-dns Service in front of the host's
    CoreDNS, and CoreDNS' read access to Services, EndpointSlices, Pods and Namespaces."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "gameday:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "endpoints", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "gameday:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "gameday:coredns",
            },
            "subjects": [{"kind": "User", "name": "gameday:coredns"}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns"},
            },
            "spec": {
                "clusterIP": "10.96.0.10",
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-host",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "gameday.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.10"], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    ]
    for node in nodes:
        for k in range(VOLUMES_PER_NODE):
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": f"gd-{node.name}-{k}",
                        "labels": {**node.labels, "gameday.dev/local-volume": "true"},
                    },
                    "spec": {
                        "capacity": {"storage": VOLUME_SIZE},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": STORAGE_CLASS,
                        "local": {"path": str(volume_path(volumes_dir, node.name, k))},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/hostname",
                                                "operator": "In",
                                                "values": [node.name],
                                            }
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                }
            )
    return objects


def volume_path(volumes_dir: Path, node: str, k: int) -> Path:
    return volumes_dir / node / f"vol{k}"
