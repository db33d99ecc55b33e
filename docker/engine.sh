#!/usr/bin/env bash
# Make a Docker engine available on this machine (Debian, as root): install docker.io and
# debootstrap from Debian's packages when missing, then start dockerd when none answers.
# Idempotent; used by `make docker-engine` and .ci/run. dockerd's output: /var/log/gameday-dockerd.log
set -euo pipefail

log=/var/log/gameday-dockerd.log

if docker info >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
    echo "docker engine: running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "docker engine: not running, and installing or starting it needs root" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "docker engine: installing docker.io and debootstrap (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    echo "docker engine: starting dockerd (log: $log)"
    # Its own session, so it outlives this script; no stdin.
    setsid dockerd </dev/null >>"$log" 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
fi
if ! docker info >/dev/null 2>&1; then
    echo "docker engine: dockerd did not come up within 60 s; the end of $log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
fi
echo "docker engine: running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
