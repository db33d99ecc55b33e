"""A FUSE filesystem that forgets every byte not fsynced when the power is lost.

A storage node's data directory is a mount of this filesystem over a backing directory. Reads,
writes, creates, renames all pass through to the backing directory, so the node sees an
ordinary filesystem, and so does a plain ``power_off`` (SIGKILL: the operating system keeps its
page cache, so what was written survives). What the layer adds is memory of what is not yet on
stable storage: for every file written since its last ``fsync``, the file's size at that fsync
and the original content of every block overwritten since. A ``power-loss`` command on the
control socket puts every such file back as it was at its last fsync (optionally keeping a torn
prefix of the very last write), then unmounts: the kernel's page cache of the mount goes with it.
The daemon then mounts the backing directory again at once, holding exactly what was synced, so
that power-on is only the node starting again.

    python -m chaos.backends.lazyfs --backing data/backing/sn-a1 --mount data/nodes/sn-a1 \\
        --control data/run/lazyfs-sn-a1.sock          # foreground; SIGTERM unmounts
    echo status | socat - UNIX:data/run/lazyfs-sn-a1.sock   # {"files": 2, "bytes": 8192, "up": ...}

Why this layer (the choice, measured by bench/powerloss.py):

- **FUSE in Python (mfusepy over libfuse3)**, chosen: /dev/fuse is here, we are root, libfuse3
  is one Debian package, and the whole layer is this one module in the project's language, with
  its tests beside the rest. Its cost is a few Python calls per write and fsync:
  bench/powerloss.py prints fsync'd writes/s with and without it (on the shared 2-core machine
  it was measured on, at load 30-70, the layer kept 20-70% of the plain directory's rate; a
  Go or Rust daemon would keep more), which the cluster, far from disk-bound, absorbs; the layer
  is mounted only for clusters whose scenario has power_loss faults.
- **Undo instead of redo.** lazyfs (Jepsen) keeps unsynced writes in its own page cache and
  writes them back at fsync; this layer writes through at once and keeps the *old* bytes until
  fsync. After a power loss both leave each file as of its last fsync, but undo keeps reads,
  stat and mmap trivially right (the backing file is the truth while the power is on) and the
  memory held is only what was overwritten in place (appends cost nothing: the old size says it).
- **device-mapper log-writes** would replay block-level writes up to a flush mark, faithful to
  the block layer, but needs loop devices and the dm modules (this machine has no /dev/mapper and
  containers rarely do) and one block device per node; too heavy for a per-run layer.

What it models and what it does not: file *contents* and *sizes* revert to the last fsync
(``fdatasync`` counts as ``fsync``); directory operations (create, rename, unlink, mkdir) are
durable at once, as on a journalling filesystem that orders metadata (lazyfs does the same). A
file that was created and never synced survives, empty. A torn write keeps a prefix of the last
unsynced write request the layer received (the kernel may split a write that straddles pages), a
whole number of 512-byte sectors shorter than the whole, as a disk writing a sector at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import random
import socket
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lazyfs")

BLOCK = 4096  # the unit of old content kept: one page
SECTOR = 512  # a torn write keeps a whole number of sectors
FSNAME = "gameday-lazyfs"  # /proc/mounts shows the type fuse.gameday-lazyfs (gameday clean)


@dataclass
class Unsynced:
    """One file's state at its last fsync, as far as writes since then have changed it."""

    size: int  # the file's size at its last fsync (or when first written, if never synced)
    blocks: dict[int, bytes] = field(default_factory=dict)  # block -> its content then


@dataclass
class LastWrite:
    path: str
    offset: int
    data: bytes


class UndoLog:
    """What to put back on power loss: per backing path, its synced size and overwritten blocks.

    Pure bookkeeping over the backing files (no FUSE): the filesystem calls ``before_write`` /
    ``before_truncate`` before changing a file, ``synced`` after its fsync, and ``lose`` puts every
    file back as of its last fsync.
    """

    def __init__(self) -> None:
        self.files: dict[str, Unsynced] = {}
        self.last: LastWrite | None = None
        self.lock = threading.Lock()

    def _entry(self, path: str) -> Unsynced:
        entry = self.files.get(path)
        if entry is None:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                size = 0
            entry = self.files[path] = Unsynced(size)
        return entry

    def _keep(self, path: str, entry: Unsynced, start: int, end: int) -> None:
        """Keep the synced content of [start, end) (only what lies below the synced size)."""
        end = min(end, entry.size)
        if start >= end:
            return
        todo = [b for b in range(start // BLOCK, (end - 1) // BLOCK + 1) if b not in entry.blocks]
        if not todo:
            return
        with open(path, "rb") as f:
            for b in todo:
                f.seek(b * BLOCK)
                entry.blocks[b] = f.read(BLOCK)

    def before_write(self, path: str, offset: int, data: bytes) -> None:
        entry = self._entry(path)
        self._keep(path, entry, offset, offset + len(data))
        self.last = LastWrite(path, offset, data)

    def before_truncate(self, path: str, length: int) -> None:
        entry = self._entry(path)
        self._keep(path, entry, length, entry.size)

    def synced(self, path: str) -> None:
        self.files.pop(path, None)
        if self.last is not None and self.last.path == path:
            self.last = None

    def renamed(self, old: str, new: str) -> None:
        self.files.pop(new, None)
        entry = self.files.pop(old, None)
        if entry is not None:
            self.files[new] = entry
        if self.last is not None and self.last.path == new:
            self.last = None
        elif self.last is not None and self.last.path == old:
            self.last = LastWrite(new, self.last.offset, self.last.data)

    def removed(self, path: str) -> None:
        self.files.pop(path, None)
        if self.last is not None and self.last.path == path:
            self.last = None

    def pending(self) -> dict[str, int]:
        """How much would be lost now: files, and bytes changed past their synced state."""
        changed = 0
        for path, entry in self.files.items():
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            changed += len(entry.blocks) * BLOCK + max(0, size - entry.size)
        return {"files": len(self.files), "bytes": changed}

    def lose(self, torn: bool = False, rng: random.Random | None = None) -> dict[str, Any]:
        """Every file back as of its last fsync; with ``torn``, a prefix of the last write stays."""
        summary: dict[str, Any] = {**self.pending(), "torn": None}
        last = self.last
        for path, entry in self.files.items():
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                continue
            try:
                for b, content in sorted(entry.blocks.items()):
                    os.pwrite(fd, content, b * BLOCK)
                os.ftruncate(fd, entry.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        if torn and last is not None and len(last.data) > SECTOR and last.path in self.files:
            sectors = (len(last.data) - 1) // SECTOR
            keep = (rng or random.Random()).randint(1, sectors) * SECTOR
            fd = os.open(last.path, os.O_WRONLY)
            try:
                os.pwrite(fd, last.data[:keep], last.offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            summary["torn"] = {"file": last.path, "offset": last.offset, "kept": keep}
        self.files.clear()
        self.last = None
        return summary


def make_operations(
    backing: Path, undo: UndoLog, power: Power, owner: tuple[int, int] | None = None
) -> Any:
    """The mfusepy ``Operations`` of a pass-through filesystem over ``backing`` that tells
    ``undo`` before every change; once ``power.dead`` is set every call fails. With ``owner``
    (uid, gid) everything created through the mount belongs to that user, not to the daemon."""
    import mfusepy as fuse

    root = str(backing)

    def own(path: str) -> None:
        if owner is not None:
            os.lchown(path, *owner)

    def real(path: str) -> str:
        return root + path

    def alive() -> None:
        if power.dead.is_set():
            raise fuse.FuseOSError(errno.EIO)

    class LazyOps(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def init(self, path: str) -> None:
            power.up.set()  # mounted: the control socket now says so

        def access(self, path: str, amode: int) -> int:
            if not os.access(real(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            alive()
            st = os.fstat(fh) if fh is not None else os.lstat(real(path))
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino", "st_dev")
            attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
            for t in ("atime", "mtime", "ctime"):
                attrs[f"st_{t}"] = getattr(st, f"st_{t}_ns")
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            alive()
            return [".", "..", *os.listdir(real(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(real(path))

        def mkdir(self, path: str, mode: int) -> int:
            alive()
            os.mkdir(real(path), mode)
            own(real(path))
            return 0

        def rmdir(self, path: str) -> int:
            alive()
            os.rmdir(real(path))
            return 0

        def symlink(self, target: str, source: str) -> int:
            alive()
            os.symlink(source, real(target))
            own(real(target))
            return 0

        def link(self, target: str, source: str) -> int:
            alive()
            os.link(real(source), real(target))
            return 0

        def unlink(self, path: str) -> int:
            alive()
            with undo.lock:
                os.unlink(real(path))
                undo.removed(real(path))
            return 0

        def rename(self, old: str, new: str) -> int:
            alive()
            with undo.lock:
                os.rename(real(old), real(new))
                undo.renamed(real(old), real(new))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            if times is None:
                os.utime(real(path))
            else:
                os.utime(real(path), ns=times)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            sv = os.statvfs(real(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
            return {k: getattr(sv, k) for k in (*keys, "f_flag", "f_frsize", "f_namemax")}

        def _open(self, path: str, flags: int, mode: int = 0o644) -> int:
            alive()
            # Read-write whatever was asked (undo reads old blocks through its own descriptor,
            # but a write-only caller must still be served); never O_APPEND: the kernel gives
            # each write its offset, and an O_APPEND descriptor would ignore it.
            wants_write = flags & os.O_ACCMODE != os.O_RDONLY
            flags &= ~(os.O_APPEND | os.O_ACCMODE)
            flags |= os.O_RDWR if wants_write else os.O_RDONLY
            if flags & os.O_TRUNC:
                with undo.lock:
                    undo.before_truncate(real(path), 0)
                    return os.open(real(path), flags, mode)
            return os.open(real(path), flags, mode)

        def open(self, path: str, flags: int) -> int:
            return self._open(path, flags)

        def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
            fd = self._open(path, flags | os.O_CREAT, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            return fd

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            alive()
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            alive()
            with undo.lock:
                undo.before_write(real(path), offset, data)
                return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            alive()
            with undo.lock:
                undo.before_truncate(real(path), length)
                os.truncate(real(path), length)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0  # close() is not fsync: nothing becomes durable here

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            alive()
            # Durable on the real disk too, outside the lock (other files' writes and fsyncs go
            # on meanwhile). A write to this file that races with the fsync counts as synced:
            # POSIX leaves such a write's fate open, and a program that acknowledges it only
            # after an fsync of its own is judged the same either way.
            os.fsync(fh)
            with undo.lock:
                if not power.dead.is_set():
                    undo.synced(real(path))
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            return 0  # directory operations are durable at once (see the module docstring)

    return LazyOps()


@dataclass
class Power:
    """The mount's power: ``up`` once libfuse has mounted (its ``init``), ``dead`` from a power
    loss until the next mount; ``generation`` counts the mounts."""

    dead: threading.Event = field(default_factory=threading.Event)
    up: threading.Event = field(default_factory=threading.Event)
    generation: int = 0


def serve_control(sock_path: Path, mountpoint: Path, undo: UndoLog, power: Power) -> None:
    """Answer ``status`` and ``power-loss [torn] [seed]`` on a unix socket, one line each.

    A power loss fails every call from then on, puts the files back as of their last fsync,
    unmounts (the kernel's cache of the mount goes with it) and answers; ``main`` then mounts the
    backing directory afresh: power-on finds what was synced, with no daemon to start.
    """
    sock_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    server.listen(4)

    def handle(words: list[str]) -> dict[str, Any]:
        command = words[0] if words else ""
        if command == "status":
            with undo.lock:
                pending = undo.pending()
            return {"ok": True, **pending, "up": power.up.is_set(), "generation": power.generation}
        if command == "power-loss":
            torn = "torn" in words[1:]
            seed = next((int(w) for w in words[1:] if w.lstrip("-").isdigit()), None)
            power.dead.set()  # from now on every call fails: nothing more reaches the files
            with undo.lock:
                lost = undo.lose(torn, random.Random(seed))
            power.up.clear()
            unmount(mountpoint)
            return {"ok": True, **lost}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def loop() -> None:
        with server:
            while True:
                conn, _ = server.accept()
                with conn:
                    try:
                        reply = handle(conn.makefile().readline().split())
                        conn.sendall((json.dumps(reply) + "\n").encode())
                    except Exception:  # a bad request never takes the filesystem down
                        log.exception("control request failed")

    threading.Thread(target=loop, name="lazyfs-control", daemon=True).start()


def unmount(mountpoint: Path) -> None:
    """Detach the mount now (lazily: a process still inside it keeps nothing alive)."""
    for argv in (["fusermount3", "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, timeout=10)
            if done.returncode == 0:
                return
            log.warning("%s: %s", " ".join(argv), done.stderr.decode(errors="replace").strip())


def is_mounted(mountpoint: Path) -> bool:
    target = str(mountpoint.resolve())
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 2)
    return False


def parse_owner(parser: argparse.ArgumentParser, text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    uid, sep, gid = text.partition(":")
    if not (uid.isdigit() and sep and gid.isdigit()):
        parser.error(f"--owner {text!r}: expected UID:GID, two numbers (e.g. 10001:10001)")
    return int(uid), int(gid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.backends.lazyfs", description=__doc__)
    parser.add_argument("--backing", type=Path, required=True, help="where the data really is")
    parser.add_argument("--mount", type=Path, required=True, help="the directory to mount over")
    parser.add_argument("--control", type=Path, required=True, help="the control socket")
    parser.add_argument(
        "--owner",
        metavar="UID:GID",
        help="serve the mount to this user (a container's unprivileged user on Docker): other "
        "users may enter it, the kernel checks file modes, and what is created belongs to it",
    )
    args = parser.parse_args(argv)
    owner = parse_owner(parser, args.owner)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s lazyfs %(message)s")
    import mfusepy as fuse

    args.backing.mkdir(parents=True, exist_ok=True)
    args.mount.mkdir(parents=True, exist_ok=True)
    args.mount = args.mount.resolve()
    if is_mounted(args.mount):
        unmount(args.mount)  # a dead daemon's mount ("transport endpoint is not connected")
    if stat.S_ISDIR(os.stat(args.backing).st_mode) is False:
        parser.error(f"--backing {args.backing} is not a directory")
    # allow_other lets the owner (not the daemon's root) in; default_permissions makes the
    # kernel check modes, so that other users get no more than the files' modes give them.
    options: dict[str, bool] = {}
    if owner is not None:
        os.chown(args.backing, *owner)
        options = {"allow_other": True, "default_permissions": True}
    undo, power = UndoLog(), Power()
    serve_control(args.control, args.mount, undo, power)
    try:
        while True:  # one mount per power cycle
            power.generation += 1
            try:
                fuse.FUSE(
                    make_operations(args.backing.resolve(), undo, power, owner),
                    str(args.mount),
                    foreground=True,
                    nothreads=False,
                    fsname=FSNAME,
                    subtype=FSNAME,
                    **options,
                )
            except RuntimeError:
                if not power.dead.is_set():  # a power loss ends the loop by unmounting
                    raise
            if not power.dead.is_set():
                break  # SIGTERM or an unmount from outside: the daemon is done
            power.dead.clear()  # power on: the backing directory as synced, mounted afresh
    finally:
        args.control.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
