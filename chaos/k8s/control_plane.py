"""Command lines of etcd and the Kubernetes control plane, all on 127.0.0.1, as pure functions.

etcd serves clients over TLS with client-certificate auth; the API server authorizes with Node and
RBAC, verifies kubelets' serving certificates, and keeps no `kubernetes` Service endpoints (it
listens on loopback only, which pods cannot reach).

    etcd_argv("/path/etcd", data_dir, pki)
    apiserver_argv(bin_dir, pki)
    component_argv(bin_dir, "kube-scheduler", kubeconfig)
"""

from __future__ import annotations

from pathlib import Path

from chaos.k8s.pki import Pki

API_PORT = 6443
ETCD_CLIENT, ETCD_PEER, ETCD_METRICS = 12379, 12380, 12381
SERVICE_CIDR = "10.96.0.0/16"
NODE_MONITOR_GRACE = "20s"  # NotReady 20 s after a node's last heartbeat (default 50 s)


def flags(values: dict[str, str | None]) -> list[str]:
    """``{"a": "1", "b": None}`` -> ``["--a=1", "--b"]``."""
    return [f"--{k}" if v is None else f"--{k}={v}" for k, v in values.items()]


def etcd_argv(etcd: str, data_dir: Path, pki: Pki) -> list[str]:
    client, peer = f"https://127.0.0.1:{ETCD_CLIENT}", f"http://127.0.0.1:{ETCD_PEER}"
    return [
        etcd,
        *flags(
            {
                "name": "gameday",
                "data-dir": str(data_dir),
                "listen-client-urls": client,
                "advertise-client-urls": client,
                "listen-peer-urls": peer,
                "initial-advertise-peer-urls": peer,
                "initial-cluster": f"gameday={peer}",
                "listen-metrics-urls": f"http://127.0.0.1:{ETCD_METRICS}",
                "client-cert-auth": None,
                "trusted-ca-file": str(pki.ca_cert),
                "cert-file": str(pki.cert("etcd")),
                "key-file": str(pki.key("etcd")),
                "log-level": "warn",
            }
        ),
    ]


def apiserver_argv(bin_dir: Path, pki: Pki) -> list[str]:
    sa_key, sa_pub = pki.ensure_service_account_keys()
    return [
        str(bin_dir / "kube-apiserver"),
        *flags(
            {
                "bind-address": "127.0.0.1",
                "secure-port": str(API_PORT),
                "advertise-address": "127.0.0.1",
                "etcd-servers": f"https://127.0.0.1:{ETCD_CLIENT}",
                "etcd-cafile": str(pki.ca_cert),
                "etcd-certfile": str(pki.cert("apiserver-etcd-client")),
                "etcd-keyfile": str(pki.key("apiserver-etcd-client")),
                "tls-cert-file": str(pki.cert("apiserver")),
                "tls-private-key-file": str(pki.key("apiserver")),
                "client-ca-file": str(pki.ca_cert),
                "anonymous-auth": "false",
                "kubelet-client-certificate": str(pki.cert("apiserver-kubelet-client")),
                "kubelet-client-key": str(pki.key("apiserver-kubelet-client")),
                "kubelet-certificate-authority": str(pki.ca_cert),
                "kubelet-preferred-address-types": "InternalIP",
                "service-account-key-file": str(sa_pub),
                "service-account-signing-key-file": str(sa_key),
                "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
                "service-cluster-ip-range": SERVICE_CIDR,
                "endpoint-reconciler-type": "none",
                "authorization-mode": "Node,RBAC",
                "enable-admission-plugins": "NodeRestriction",
                "profiling": "false",
                "v": "1",
            }
        ),
    ]


def component_argv(bin_dir: Path, name: str, kubeconfig: Path, pki: Pki) -> list[str]:
    """kube-controller-manager or kube-scheduler: loopback, no leader election."""
    values: dict[str, str | None] = {
        "bind-address": "127.0.0.1",
        "leader-elect": "false",
        "profiling": "false",
        "kubeconfig": str(kubeconfig),
        "authentication-kubeconfig": str(kubeconfig),
        "authorization-kubeconfig": str(kubeconfig),
    }
    if name == "kube-controller-manager":
        sa_key, _ = pki.ensure_service_account_keys()
        values |= {
            "service-account-private-key-file": str(sa_key),
            "root-ca-file": str(pki.ca_cert),
            "use-service-account-credentials": "true",
            "node-monitor-grace-period": NODE_MONITOR_GRACE,
            "cluster-signing-cert-file": str(pki.ca_cert),
            "cluster-signing-key-file": str(pki.ca_key),
            "service-cluster-ip-range": SERVICE_CIDR,
        }
    return [str(bin_dir / name), *flags(values)]
