"""The power-loss layer on a real FUSE mount: what a power loss keeps and what it throws away.

Each test mounts chaos/backends/lazyfs.py through ``PowerLayer`` (a real daemon, real libfuse3)
over a temporary directory, writes through the mount as a storage node would, and loses power.
"""

from __future__ import annotations

import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.backends.lazyfs import is_mounted
from chaos.backends.powerlayer import PowerLayer, daemon_id, leftover_mounts
from chaos.backends.processes import ProcessTable
from cluster.storage.layout import replace_durably


def fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if os.geteuid() != 0:
        return "mounting needs root"
    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 is not installed (make fuse)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(fuse_missing() is not None, reason=str(fuse_missing())),
]

NODE = "sn-a1"


@pytest.fixture
def layer(tmp_path: Path) -> Iterator[PowerLayer]:
    PowerLayer.enable(tmp_path)
    layer = PowerLayer(tmp_path, ProcessTable(tmp_path / "run", tmp_path / "logs"))
    layer.mount(NODE)
    try:
        yield layer
    finally:
        layer.unmount_all()
        assert leftover_mounts(tmp_path) == []
        assert not layer.procs.alive(daemon_id(NODE))


def write(path: Path, data: bytes, *, offset: int = 0, sync: bool, trunc: bool = False) -> None:
    flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0)
    fd = os.open(path, flags)
    try:
        os.pwrite(fd, data, offset)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_power_loss_keeps_what_was_synced_and_nothing_else(layer: PowerLayer) -> None:
    d = layer.mountpoint(NODE)
    write(d / "synced", b"A" * 10_000, sync=True)
    write(d / "never-synced", b"B" * 3000, sync=False)
    write(d / "overwritten", b"C" * 9000, sync=True)
    write(d / "overwritten", b"D" * 5000, offset=2000, sync=False)  # in place, and past the end
    write(d / "overwritten", b"E" * 4000, offset=9000, sync=False)
    write(d / "shrunk", b"F" * 8192, sync=True)
    os.truncate(d / "shrunk", 100)
    write(d / "resynced", b"G" * 100, sync=True)
    write(d / "resynced", b"H" * 100, sync=True)
    assert layer.status(NODE)["files"] == 3

    lost = layer.lose(NODE, torn=False, seed=1)
    layer.mount(NODE)

    assert lost["files"] == 3 and lost["bytes"] > 0 and lost["torn"] is None
    assert (d / "synced").read_bytes() == b"A" * 10_000
    assert (d / "never-synced").read_bytes() == b""  # the file stays (metadata), its data not
    assert (d / "overwritten").read_bytes() == b"C" * 9000
    assert (d / "shrunk").read_bytes() == b"F" * 8192
    assert (d / "resynced").read_bytes() == b"H" * 100
    assert layer.status(NODE)["files"] == 0


def test_power_off_keeps_unsynced_writes(layer: PowerLayer) -> None:
    """SIGKILL of the writer is not a power loss: the layer (the OS) keeps what it wrote."""
    path = layer.mountpoint(NODE) / "wal"
    code = f"import os; fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT); "
    code += "os.write(fd, b'x' * 5000); os.kill(os.getpid(), 9)"
    subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
    assert path.read_bytes() == b"x" * 5000
    assert layer.status(NODE)["files"] == 1  # still unsynced: a later power loss would take it


def test_a_torn_write_keeps_whole_sectors_of_the_last_write(layer: PowerLayer) -> None:
    """The last write request the layer received (page-aligned here, so it is the whole
    write) is torn: a whole number of its sectors survives, the rest is gone."""
    path = layer.mountpoint(NODE) / "log"
    write(path, b"s" * 4096, sync=True)
    write(path, b"t" * 4096, offset=4096, sync=False)

    lost = layer.lose(NODE, torn=True, seed=3)
    layer.mount(NODE)

    kept = lost["torn"]["kept"]
    assert 0 < kept < 4096 and kept % 512 == 0
    assert path.read_bytes() == b"s" * 4096 + b"t" * kept


def test_rename_without_fsync_loses_the_content(layer: PowerLayer) -> None:
    """The write-tmp-then-rename idiom needs an fsync before the rename, and replace_durably
    (cluster/storage/layout.py) has one."""
    d = layer.mountpoint(NODE)
    (d / "plain.tmp").write_text('{"g": 1}')
    (d / "plain.tmp").replace(d / "plain.json")
    replace_durably(d / "durable.json", '{"g": 1}')

    layer.lose(NODE, torn=False, seed=1)
    layer.mount(NODE)

    assert (d / "plain.json").read_text() == ""
    assert (d / "durable.json").read_text() == '{"g": 1}'


def test_a_killed_daemon_leaves_no_mount(tmp_path: Path) -> None:
    """A daemon SIGKILLed leaves a dead mount; unmount_all (down, the watchdog, gameday clean)
    removes it, and mounting again starts a fresh daemon over the same data."""
    PowerLayer.enable(tmp_path)
    layer = PowerLayer(tmp_path, ProcessTable(tmp_path / "run", tmp_path / "logs"))
    try:
        layer.mount(NODE)
        write(layer.mountpoint(NODE) / "f", b"z" * 100, sync=True)
        layer.procs.signal(daemon_id(NODE), signal.SIGKILL)
        assert is_mounted(layer.mountpoint(NODE))  # dead, still there
        layer.mount(NODE)
        assert (layer.mountpoint(NODE) / "f").read_bytes() == b"z" * 100
        layer.procs.signal(daemon_id(NODE), signal.SIGKILL)
    finally:
        layer.unmount_all()
    assert leftover_mounts(tmp_path) == []
    assert (layer.backing_dir(NODE) / "f").read_bytes() == b"z" * 100


OWNER = (10001, 10001)  # the cluster image's unprivileged user (docker/Dockerfile)

# Runs as another user: opens NAME in the mount through a directory descriptor the test passes
# down (the directories above the mount admit root only, as on a Docker host, where the
# container reaches the mount through its bind mount instead), writes and optionally fsyncs.
AS_USER = """
import os, sys
fd, name, sync = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "sync"
f = os.open(name, os.O_RDWR | os.O_CREAT, 0o644, dir_fd=fd)
os.pwrite(f, b"u" * 6000, 0)
if sync:
    os.fsync(f)
"""


def write_as(uid: int, mount_fd: int, name: str, *, sync: bool) -> subprocess.CompletedProcess[str]:
    argv = ["/usr/bin/python3", "-I", "-S", "-c", AS_USER, str(mount_fd), name]
    argv.append("sync" if sync else "nosync")
    return subprocess.run(
        argv, user=uid, group=uid, extra_groups=[], pass_fds=(mount_fd,),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_a_mount_served_to_an_owner_admits_that_user_and_keeps_its_modes(tmp_path: Path) -> None:
    """The Docker backend's mounts: the container's user writes (and owns what it creates),
    another user is refused by the files' modes, and a power loss still drops the unsynced."""
    PowerLayer.enable(tmp_path)
    layer = PowerLayer(tmp_path, ProcessTable(tmp_path / "run", tmp_path / "logs"), owner=OWNER)
    try:
        layer.mount(NODE)
        mount_fd = os.open(layer.mountpoint(NODE), os.O_RDONLY | os.O_DIRECTORY)
        try:
            ok = write_as(OWNER[0], mount_fd, "wal", sync=True)
            assert ok.returncode == 0, ok.stderr
            assert write_as(OWNER[0], mount_fd, "tail", sync=False).returncode == 0
            other = write_as(10002, mount_fd, "intruder", sync=True)
            assert other.returncode != 0 and "PermissionError" in other.stderr
            assert write_as(10002, mount_fd, "wal", sync=True).returncode != 0
        finally:
            os.close(mount_fd)
        backing = layer.backing_dir(NODE)
        for path in (backing, backing / "wal", backing / "tail"):
            assert (path.stat().st_uid, path.stat().st_gid) == OWNER
        assert not (backing / "intruder").exists()
        for parent in (layer.mountpoint(NODE).parent, backing.parent):
            assert parent.stat().st_mode & 0o777 == 0o700

        layer.lose(NODE, torn=False, seed=3)
        layer.mount(NODE)
        assert (layer.mountpoint(NODE) / "wal").read_bytes() == b"u" * 6000
        assert (layer.mountpoint(NODE) / "tail").read_bytes() == b""
    finally:
        layer.unmount_all()
    assert leftover_mounts(tmp_path) == []
