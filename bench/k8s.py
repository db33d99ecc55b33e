"""Kubernetes benchmark: the local Kubernetes' times, and a game day on k8s next to local.

Measures, on this machine, in one go (so both backends see the same hour's load):

  k8s up:     ``gameday k8s up`` (3x2 + infra: 7 real kubelet nodes, the cluster image imported
              into every node) until every node is Ready; only when none runs yet;
  cluster up: ``gameday cluster up --backend k8s`` until every process answers /health (helm
              install, scheduling, volumes bound), then ``cluster down --wipe``;
  game day:   the scenario (default scenarios/az-outages.yaml) on the local backend, then on
              k8s: the availability and p99 of every window, side by side, and each verdict;
  k8s down:   ``gameday k8s down`` (only of a Kubernetes this bench started), and then what is
              left on the host: processes, mounts, cgroups, links (bridges, veths), network
              namespaces, iptables/nft chains and sysctls, each compared with before ``up``;
  toolchain:  with ``--toolchain``, k8s/toolchain.sh from scratch into a temporary cache
              (GAMEDAY_K8S_CACHE; deleted afterwards) and then cached (~15 CPU-minutes: run it
              alone, under the machine's heavy-run lock).

    .venv/bin/python bench/k8s.py [--scenario scenarios/az-outages.yaml] [--ups 1] [--toolchain]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaos.k8s.localkube import CLUSTER_IMAGE, LocalKube  # noqa: E402
from chaos.k8s.node_images import save_docker_image  # noqa: E402
from chaos.k8s.traces import host_state, left_behind  # noqa: E402

console = Console()
GAMEDAY = [sys.executable, "-m", "chaos.cli_entry"]


def gameday(*args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [*GAMEDAY, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    return done, time.monotonic() - started


def must(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip


def time_cluster_up(work: Path, i: int) -> float:
    data = work / f"up{i}"
    done, took = gameday(
        "cluster", "up", "--backend", "k8s", "--data-dir", str(data), "--timeout", "300"
    )
    down, _ = gameday("cluster", "down", "--wipe", "--data-dir", str(data))
    must(done, "cluster up --backend k8s")
    must(down, "cluster down --wipe")
    return took


def import_seconds(output: str) -> float | None:
    """From ``k8s up``'s progress: when the image import began and the first kubelet started."""
    marks: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0].endswith("s") and parts[0][:-1].replace(".", "").isdigit():
            at = float(parts[0][:-1])
            if "images into" in line:
                marks.setdefault("import", at)
            elif ": kubelet" in line:
                marks.setdefault("kubelet", at)
    if {"import", "kubelet"} <= marks.keys():
        return marks["kubelet"] - marks["import"]
    return None


def time_reimport(kube: LocalKube) -> tuple[float, float, float]:
    """A source change as the nodes see it: an image that adds one small layer on top of the
    cluster image (tagged for this bench only), loaded into every node. Returns (seconds of
    ``docker save``, seconds of the import into every node, MB of layers sent per node)."""
    tag = f"gameday-bench-k8s:{os.getpid()}"
    dockerfile = f"FROM {CLUSTER_IMAGE}\nRUN echo {time.time()} > /tmp/changed-source\n"
    subprocess.run(
        ["docker", "build", "-q", "--network", "none", "-t", tag, "-"],
        input=dockerfile, text=True, capture_output=True, check=True,
    )  # fmt: skip
    cache = Path(tempfile.mkdtemp(prefix="bench-k8s-images-", dir="/var/tmp"))
    try:
        layer = subprocess.run(
            ["docker", "history", "--format", "{{.Size}}", "-H=false", tag],
            capture_output=True, text=True, check=True,
        ).stdout.split()[0]  # fmt: skip
        started = time.monotonic()
        archive = save_docker_image(tag, cache)
        saved = time.monotonic()
        kube.runtime.import_images(kube.nodes(), [archive])
        return saved - started, time.monotonic() - saved, int(layer) / 1e6
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def run_day(scenario: str, backend: str, work: Path) -> tuple[dict[str, Any], float]:
    out = work / backend
    done, took = gameday("run", scenario, "--backend", backend, "--out", str(out))
    runs = sorted(out.iterdir()) if out.exists() else []
    if not runs or not (runs[-1] / "checks.json").exists():
        raise SystemExit(f"{backend} game day left no checks.json:\n{done.stdout[-3000:]}")
    checks: dict[str, Any] = json.loads((runs[-1] / "checks.json").read_text())
    keep = Path(tempfile.gettempdir()) / f"bench-k8s-{backend}-{runs[-1].name}"
    shutil.copytree(runs[-1], keep, dirs_exist_ok=True)  # for a look afterwards
    checks["_run_dir"] = str(keep)
    return checks, took


def windows(checks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for check in checks["checks"]:
        if check["name"] == "availability":
            return {w["label"]: w for w in check["details"]["windows"]}
    return {}


# --- the toolchain ---------------------------------------------------------------------------


def time_toolchain() -> tuple[float, float]:
    """k8s/toolchain.sh from scratch into a temporary cache dir, then again (cached)."""
    cache = Path(tempfile.mkdtemp(prefix="gameday-k8s-toolchain-", dir="/var/tmp"))
    env = {**os.environ, "GAMEDAY_K8S_CACHE": str(cache)}
    try:
        times = []
        for _ in range(2):
            started = time.monotonic()
            done = subprocess.run(
                ["bash", str(ROOT / "k8s" / "toolchain.sh")], env=env, capture_output=True,
                text=True, check=False, timeout=7200,
            )  # fmt: skip
            times.append(time.monotonic() - started)
            if done.returncode != 0:
                raise SystemExit(f"toolchain.sh failed:\n{done.stderr[-3000:]}")
        return times[0], times[1]
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(cache)], check=False)  # Go's read-only modules
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="scenarios/az-outages.yaml")
    parser.add_argument("--ups", type=int, default=1, help="how many timed cluster ups")
    parser.add_argument("--no-local", action="store_true", help="skip the local game day")
    parser.add_argument(
        "--toolchain", action="store_true", help="only time the toolchain build (scratch, cached)"
    )
    args = parser.parse_args()
    if args.toolchain:
        scratch, cached = time_toolchain()
        table = Table(title="k8s/toolchain.sh (kube-*, kubectl, helm, CoreDNS, pause)")
        table.add_column("build")
        table.add_column("seconds", justify="right")
        table.add_row("from scratch (empty module and build caches)", f"{scratch:.0f}")
        table.add_row("cached", f"{cached:.2f}")
        console.print(table)
        return
    times = Table(title=f"local Kubernetes timings (load {os.getloadavg()[0]:.1f} at start)")
    times.add_column("step")
    times.add_column("seconds", justify="right")
    kube = LocalKube()
    started_kube = not kube.is_up()
    before = host_state(kube.state_dir)
    results: dict[str, tuple[dict[str, Any], float]] = {}
    try:
        if started_kube:
            done, took = gameday("k8s", "up", timeout=1200)
            must(done, "gameday k8s up")
            times.add_row("gameday k8s up (3x2 + infra, image imported) to all nodes Ready",
                          f"{took:.1f}")  # fmt: skip
            imported = import_seconds(done.stdout + done.stderr)
            if imported is not None:
                times.add_row("  of which: the whole image into 7 fresh nodes", f"{imported:.1f}")
        with tempfile.TemporaryDirectory(prefix="bench-k8s-") as tmp:
            work = Path(tmp)
            save, load, mb = time_reimport(kube)
            times.add_row("a source change: docker save of the rebuilt image", f"{save:.1f}")
            times.add_row(f"a source change: import into every node ({mb:.2f} MB layer sent)",
                          f"{load:.1f}")  # fmt: skip
            for i in range(args.ups):
                took = time_cluster_up(work, i)
                times.add_row(f"gameday cluster up --backend k8s to healthy (#{i + 1})",
                              f"{took:.1f}")  # fmt: skip
            backends = ("k8s",) if args.no_local else ("local", "k8s")
            results = {b: run_day(args.scenario, b, work) for b in backends}
    finally:
        left: dict[str, Any] | None = None
        if started_kube:
            done, took = gameday("k8s", "down", timeout=1200)
            times.add_row("gameday k8s down", f"{took:.1f}")
            left = left_behind(before, host_state(kube.state_dir))
        console.print(times)
        if left is not None:
            console.print(f"left on the host after k8s down: {left or 'nothing'}")
    table = Table(title=f"{args.scenario}: availability per window (same machine, same hour)")
    for column in ("window", "local", "k8s", "local p99 ms", "k8s p99 ms"):
        table.add_column(column, justify="left" if column == "window" else "right")
    local, k8s = (windows(results[b][0]) if b in results else {} for b in ("local", "k8s"))

    def cell(w: dict[str, Any] | None, key: str, fmt: str) -> str:
        value = None if w is None else w.get(key)
        return "-" if value is None else format(value, fmt)

    for label in dict.fromkeys([*local, *k8s]):
        lw, kw = local.get(label), k8s.get(label)
        table.add_row(
            label,
            cell(lw, "ratio", ".2%"),
            cell(kw, "ratio", ".2%"),
            cell(lw, "p99_ms", ".0f"),
            cell(kw, "p99_ms", ".0f"),
        )
    table.caption = " / ".join(
        f"{b}: {c['verdict']} in {t:.0f}s ({c['_run_dir']})" for b, (c, t) in results.items()
    )
    console.print(table)


if __name__ == "__main__":
    main()
