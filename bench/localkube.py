"""Local Kubernetes benchmark: time to all nodes Ready, what each part costs, power cycle, down.

Starts the local Kubernetes (a fresh state directory), and prints: seconds from `up` to every
node Ready; resident memory and CPU seconds per component kind (etcd, the control plane,
kube-proxy and CoreDNS for Services and names, containerd and kubelet per node); the time a
powered-off node takes to be seen NotReady and to be Ready again after power-on; and `down`.

    .venv/bin/python bench/localkube.py [--shape 3x2] [--cluster-image]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from chaos.k8s.localkube import LocalKube, unavailable_reason

console = Console()


def usage(pid: int) -> tuple[float, float]:
    """(resident MB, CPU seconds) of one process."""
    try:
        rss = next(
            int(line.split()[1]) / 1024
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        fields = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0, 0.0
    return rss, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="3x2", help="AZS x RACKS (one node per rack)")
    parser.add_argument("--cluster-image", action="store_true", help="also load gameday-cluster")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot start a local Kubernetes: {reason}")
    with tempfile.TemporaryDirectory(prefix="gameday-k8s-bench-") as tmp:
        kube = LocalKube(Path(tmp) / "k8s")
        try:
            start = time.monotonic()
            status = kube.up(args.shape, cluster_image=args.cluster_image, owner_pid=os.getpid())
            up = time.monotonic() - start
            time.sleep(10)  # let the nodes settle before measuring steady cost
            kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
            for pid_id in status.processes:
                pid = kube.procs.pid(pid_id)
                if pid is None:
                    continue
                kind = pid_id.split(".", 1)[1] if "." in pid_id else pid_id
                rss, cpu = usage(pid)
                kinds[kind][0] += rss
                kinds[kind][1] += cpu
                kinds[kind][2] += 1
            victim = kube.nodes()[0].name
            start = time.monotonic()
            kube.power_off(victim)
            off = time.monotonic() - start
            not_ready = kube.wait_ready([victim], timeout=120, ready=False)
            start = time.monotonic()
            kube.power_on(victim)
            back = kube.wait_ready([victim], timeout=120)
            back_total = time.monotonic() - start
        finally:
            start = time.monotonic()
            left = kube.down()
            down = time.monotonic() - start

    table = Table(title=f"local Kubernetes, shape {args.shape} ({len(status.nodes)} nodes)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("up to every node Ready", f"{up:.1f} s")
    table.add_row(f"power-off of {victim} (kill + unmount)", f"{off:.2f} s")
    table.add_row("... seen NotReady after", f"{not_ready:.1f} s")
    table.add_row("power-on to Ready", f"{back:.1f} s (call included: {back_total:.1f} s)")
    table.add_row("down", f"{down:.1f} s" + (f" LEFT: {left}" if left else ", nothing left"))
    console.print(table)
    cost = Table(title="cost per component kind (after up + 10 s)")
    for col in ("component", "processes", "resident MB", "CPU s"):
        cost.add_column(col, justify="left" if col == "component" else "right")
    for kind, (rss, cpu, n) in sorted(kinds.items()):
        cost.add_row(kind, str(int(n)), f"{rss:.0f}", f"{cpu:.1f}")
    console.print(cost)


if __name__ == "__main__":
    main()
