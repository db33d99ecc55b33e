#!/usr/bin/env bash
# Debian packages the local Kubernetes' nodes run on: containerd and runc (one private containerd
# per node), the CNI plugins (bridge, host-local, loopback in /usr/lib/cni), busybox-static (the
# busybox image for tests), conntrack (kube-proxy), iptables, and gcc (compiles the pause binary).
# Idempotent: installs only what is missing (root). Used by `make k8s-toolchain` and .ci/run.
set -euo pipefail

want=(containerd runc containernetworking-plugins busybox-static conntrack iptables gcc libc6-dev)
missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "k8s packages: installed"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "k8s packages: missing ${missing[*]}, and installing them needs root" >&2
    exit 1
fi
echo "k8s packages: installing ${missing[*]} (Debian)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
