#!/usr/bin/env bash
# Build the Kubernetes toolchain the k8s backend's local cluster runs on, from the Go module proxy
# (no GitHub downloads, no container registry): kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl (Kubernetes v1.37.2), helm (v3.21.4), CoreDNS
# (v1.15.0, cluster DNS) and pause (the pod sandbox, compiled with gcc from kubernetes' own
# build/pause/linux/pause.c in the module cache).
#
# Binaries land in a fixed cache directory keyed by version, and only missing ones are built:
#   ${GAMEDAY_K8S_CACHE:-$HOME/.cache/gameday/k8s}/v1.37.2/bin/
# From scratch this takes about 12-15 minutes on 2 idle cores (kube-apiserver alone ~9 CPU-minutes)
# and 6 GB of disk (Go module and build caches); a cached run returns at once.
#
#   bash k8s/toolchain.sh          build what is missing, print the bin directory last
#   bash k8s/toolchain.sh --print  print the bin directory only (exit 1 if anything is missing)
set -euo pipefail

K8S_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
HELM_VERSION=v3.21.4
COREDNS_VERSION=v1.15.0
CACHE_ROOT=${GAMEDAY_K8S_CACHE:-$HOME/.cache/gameday/k8s}
PREFIX=$CACHE_ROOT/$K8S_VERSION
BIN=$PREFIX/bin
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)
ALL=("${KUBE_CMDS[@]}" helm coredns pause)

missing=()
for cmd in "${ALL[@]}"; do
    [ -x "$BIN/$cmd" ] || missing+=("$cmd")
done

if [ "${1:-}" = "--print" ]; then
    [ ${#missing[@]} -eq 0 ] || { echo "missing: ${missing[*]}" >&2; exit 1; }
    echo "$BIN"
    exit 0
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "k8s toolchain: cached in $BIN" >&2
    echo "$BIN"
    exit 0
fi

GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
if [ ! -x "$GO" ] && ! command -v "$GO" >/dev/null 2>&1; then
    echo "error: building the Kubernetes toolchain needs Go (1.26+); install it and retry" >&2
    exit 1
fi
# Module and build caches live beside the binaries, so a rebuild is warm and `rm -rf` of the
# cache root removes everything this script made.
export GOMODCACHE=$CACHE_ROOT/gomodcache GOCACHE=$CACHE_ROOT/gocache GOFLAGS=-mod=mod
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$BIN" "$PREFIX/src"
start=$(date +%s)
say() { echo "k8s toolchain [$(( $(date +%s) - start ))s]: $*" >&2; }
say "building ${missing[*]} into $BIN (from scratch about 12-15 min on 2 cores)"

build_kube() {
    local mod=$PREFIX/src/kube
    mkdir -p "$mod"
    if [ ! -f "$mod/go.mod" ]; then
        say "resolving k8s.io/kubernetes@$K8S_VERSION"
        (cd "$mod" && "$GO" mod init gameday.local/k8s-toolchain >/dev/null 2>&1)
        (cd "$mod" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null)
        local gomod
        gomod=$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
        # kubernetes replaces its staging modules with ./staging paths; point each at its
        # published version instead, which is what makes the build possible outside its repo.
        {
            echo "require k8s.io/kubernetes $K8S_VERSION"
            grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" |
                awk -v v="$STAGING_VERSION" '{ printf "replace %s => %s %s\n", $1, $1, v }'
        } >>"$mod/go.mod"
        say "$(grep -c '^replace' "$mod/go.mod") staging modules pinned to $STAGING_VERSION"
        cat >"$mod/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
EOF
        (cd "$mod" && "$GO" mod tidy >/dev/null 2>&1) || true
    fi
    local base=k8s.io/component-base/version
    local ldflags="-s -w -X $base.gitVersion=$K8S_VERSION -X $base.gitMajor=1 -X $base.gitMinor=37"
    for cmd in "${KUBE_CMDS[@]}"; do
        [ -x "$BIN/$cmd" ] && continue
        say "go build $cmd"
        (cd "$mod" && "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
        mv "$BIN/$cmd.tmp" "$BIN/$cmd"
    done
}

build_helm() {
    [ -x "$BIN/helm" ] && return 0
    local mod=$PREFIX/src/helm
    mkdir -p "$mod"
    if [ ! -f "$mod/go.mod" ]; then
        (cd "$mod" && "$GO" mod init gameday.local/helm-toolchain >/dev/null 2>&1)
        cat >"$mod/tools.go" <<'EOF'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
EOF
        (cd "$mod" && "$GO" get "helm.sh/helm/v3@$HELM_VERSION" >/dev/null 2>&1)
        (cd "$mod" && "$GO" mod tidy >/dev/null 2>&1) || true
    fi
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37"
    say "go build helm"
    (cd "$mod" && "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm)
    mv "$BIN/helm.tmp" "$BIN/helm"
}

build_coredns() {
    [ -x "$BIN/coredns" ] && return 0
    # CoreDNS' go.mod has no replace directives, so a plain `go install` of the tag works.
    say "go install coredns $COREDNS_VERSION"
    local tmp
    tmp=$(mktemp -d)
    GOBIN=$tmp "$GO" install "github.com/coredns/coredns@$COREDNS_VERSION"
    mv "$tmp/coredns" "$BIN/coredns"
    rmdir "$tmp"
}

build_pause() {
    [ -x "$BIN/pause" ] && return 0
    local src
    src=$GOMODCACHE/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c
    if [ ! -f "$src" ]; then
        (cd "$PREFIX/src/kube" && "$GO" mod download "k8s.io/kubernetes@$K8S_VERSION")
    fi
    command -v gcc >/dev/null 2>&1 || { echo "error: building pause needs gcc (apt-get install gcc)" >&2; exit 1; }
    say "gcc pause (static)"
    gcc -Os -static -DVERSION=3.10-gameday -o "$BIN/pause.tmp" "$src"
    strip "$BIN/pause.tmp" 2>/dev/null || true
    mv "$BIN/pause.tmp" "$BIN/pause"
}

build_helm
build_kube
build_coredns
build_pause
say "done"
echo "$BIN"
