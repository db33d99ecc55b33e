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
