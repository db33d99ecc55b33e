"""What the power-loss layer costs: fsync'd writes per second with and without it.

A storage node's hot path is "append a record, fsync", so that is what this measures, in one
thread and in several: on a plain directory of the same disk, then through the lazyfs mount
(chaos/backends/lazyfs.py) over it. Also an in-place overwrite workload (SQLite's pages), where
the layer must keep the old block before each write. Needs root, /dev/fuse and libfuse3.

    .venv/bin/python bench/powerloss.py [--seconds 5] [--size 256] [--threads 1 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chaos.backends.powerlayer import PowerLayer
from chaos.backends.processes import ProcessTable


def fsynced_writes(
    directory: Path, seconds: float, size: int, threads: int, in_place: bool
) -> float:
    """Writes (each followed by fsync) per second over ``seconds``, ``threads`` files at once."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def worker(n: int) -> None:
        path = directory / f"bench-{n}.log"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        record = os.urandom(size)
        if in_place:  # a 1 MiB file whose pages are rewritten, as a B-tree does
            os.pwrite(fd, os.urandom(1 << 20), 0)
            os.fsync(fd)
        offset = 0
        try:
            for i in range(10_000_000):  # bounded: the clock ends it long before
                if time.monotonic() > stop:
                    break
                if in_place:
                    os.pwrite(fd, record, (i * 4096 * 7) % ((1 << 20) - size))
                else:
                    os.pwrite(fd, record, offset)
                    offset += size
                os.fsync(fd)
                counts[n] += 1
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--size", type=int, default=256, help="bytes per write (a WAL record)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--dir", type=Path, default=None, help="where (default: a temp dir)")
    args = parser.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="gameday-bench-powerloss-", dir=args.dir))
    plain = root / "plain"
    plain.mkdir()
    PowerLayer.enable(root)
    layer = PowerLayer(root, ProcessTable(root / "run", root / "logs"))
    table = Table(title=f"fsync'd writes/s ({args.size} B each, {args.seconds:g} s per cell)")
    for column in ("workload", "threads", "plain dir", "lazyfs layer", "layer / plain"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    try:
        layer.mount("bench")
        for in_place in (False, True):
            for threads in args.threads:
                base = fsynced_writes(plain, args.seconds, args.size, threads, in_place)
                lazy = fsynced_writes(
                    layer.mountpoint("bench"), args.seconds, args.size, threads, in_place
                )
                table.add_row(
                    "overwrite in place" if in_place else "append",
                    str(threads),
                    f"{base:,.0f}",
                    f"{lazy:,.0f}",
                    f"{lazy / base:.0%}" if base else "-",
                )
    finally:
        layer.unmount_all()
        shutil.rmtree(root, ignore_errors=True)
    console.print(table)
    console.print(
        f"load average while measuring: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
