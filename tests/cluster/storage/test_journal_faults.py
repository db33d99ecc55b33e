"""The node journal under I/O faults: one fsync fails (a journal generation's, the journal
directory's, a WAL segment's or a WAL directory's) at any point of a run of saves, syncs,
marks, releases, checkpoints, groups joining or reopened, and the node's stop (the journal
closed before the replicas, which may still write). Whatever fails, a power loss afterwards
keeps every acknowledged write, and the node starts."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster.consensus.messages import HardState, SnapshotMeta
from cluster.storage.journal import NodeJournal
from cluster.storage.wal import WalState, WriteAheadLog
from tests.cluster.storage.test_journal import MEMBERS, PowerLoss, entries

KINDS = ("generation", "journal-dir", "wal-segment", "wal-dir")


class Fault:
    """Once armed, the next fsync (or fdatasync) of a file of ``kind`` fails with EIO, once;
    what it should have made durable is lost at a power loss (``PowerLoss`` never saw it)."""

    def __init__(self, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind, self.armed, self.fired = kind, False, ""
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _matches(self, path: str) -> bool:
        return {
            "generation": path.endswith(".jnl"),
            "journal-dir": path.endswith("/journal"),
            "wal-segment": path.endswith(".wal"),
            "wal-dir": path.endswith("/wal"),
        }[self.kind]

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if self.armed and self._matches(path):
                self.armed, self.fired = False, path
                raise OSError(5, "EIO (injected)")
            real(fd)

        return fsync


@dataclass
class Group:
    wal: WriteAheadLog
    last: int = 0  # highest index that may be in its log (written, acknowledged or not)
    acked: int = 0  # highest index acknowledged (durable by promise)
    mark: SnapshotMeta | None = None  # the last snapshot mark acknowledged
    tried: SnapshotMeta | None = None  # a mark that failed: it may be there or not
    dead: bool = False  # an operation of it failed: its replica stopped (no more writes)


class Node:
    """One node's journal and groups, driven through random operations (one run of the node)."""

    def __init__(self, tmp_path: Path, rng: random.Random, fault: Fault) -> None:
        self.root, self.rng, self.fault = tmp_path, rng, fault
        self.groups: dict[str, Group] = {}
        self.journal = NodeJournal.open(
            tmp_path / "journal", max_bytes=rng.choice([1500, 4000, 10**6])
        )
        self.closed = False

    def write(
        self, g: Group, last: int, op: Callable[..., object], *args: object, **kw: object
    ) -> bool:
        """A write of ``g`` up to index ``last``: its records may be on disk from now on,
        acknowledged or not; True when it returned (acknowledged if it waited)."""
        g.last = max(g.last, last)
        try:
            op(*args, **kw)
        except OSError:
            g.dead = True  # refused or failed: not acknowledged
            return False
        return True

    def join(self, name: str) -> None:
        """``name`` joins (or is reopened: closed, forgotten, then opened again)."""
        journal, g = self.journal, self.groups.get(name)
        if g is not None and g.dead:
            return
        try:
            if g is not None:
                journal.forget(name)
                g.wal.close()
            wal, _ = journal.recover(name, self.root / name / "wal", 400)
            self.groups.setdefault(name, Group(wal)).wal = wal
            journal.register(name, wal, checkpoint=self.rng.random() < 0.3)
        except OSError:
            if name in self.groups:
                self.groups[name].dead = True

    def step(self) -> None:
        rng, journal = self.rng, self.journal
        op = rng.random()
        if not self.closed and (op < 0.1 or not self.groups):
            self.join(f"p{rng.randrange(5)}")
            return
        alive = sorted(n for n, g in self.groups.items() if not g.dead)
        if not alive:
            return
        name = rng.choice(alive)
        g = self.groups[name]
        if op < 0.65:
            n = rng.randint(1, 4)
            save = HardState(1, "n1", g.last), entries(g.last + 1, g.last + n)
            if rng.random() < 0.75:
                if self.write(g, g.last + n, journal.save, name, g.wal, *save):
                    g.acked = g.last
            else:
                self.write(g, g.last + n, journal.save, name, g.wal, *save, wait=False)
        elif op < 0.78:
            if self.write(g, g.last, journal.sync, [(name, g.wal)]):
                g.acked = g.last
        elif op < 0.9:
            if g.acked <= (g.mark.index if g.mark else 0):
                return
            if not self.write(g, g.last, journal.sync, [(name, g.wal)]):
                return
            g.acked = g.last  # the replica's Ready before its compaction
            meta = SnapshotMeta(rng.randint(g.mark.index if g.mark else 1, g.acked), 1, MEMBERS)
            g.tried = meta
            if not self.write(g, g.last, journal.mark_snapshot, name, g.wal, meta):
                return
            g.mark = meta
            self.write(g, g.last, journal.release_before, name, g.wal, meta.index + 1)
        elif op < 0.95 and not self.closed:
            with contextlib.suppress(OSError):
                journal.checkpoint()
        elif op < 0.97 and not self.closed:
            self.closed = True  # node.stop: the journal first; the replicas may still write
            with contextlib.suppress(OSError):
                journal.close()

    def check(self, name: str, state: WalState) -> None:
        """Recovered ``state`` of ``name`` holds every acknowledged write (and nothing else)."""
        g = self.groups[name]
        assert state.snapshot in (g.mark, g.tried), (name, self.fault.fired)
        low = state.snapshot.index if state.snapshot else 0
        got = [e.index for e in state.entries]
        assert got[: g.acked - low] == list(range(low + 1, g.acked + 1)), (
            f"{name}: acknowledged up to {g.acked}, recovered {got[:3]}..{got[-3:]} "
            f"(fault on {self.fault.fired or 'nothing'})"
        )
        assert got == list(range(low + 1, low + 1 + len(got))) and len(got) <= g.last - low

    def restart(self) -> None:
        """The process died (its files as they are, nothing fsynced at exit); it starts again
        as node.start does: every group recovered and registered, then one checkpoint."""
        armed, self.fault.armed = self.fault.armed, False  # (the start itself works)
        self.journal = NodeJournal.open(
            self.root / "journal", max_bytes=self.rng.choice([1500, 4000, 10**6])
        )
        self.closed = False
        for name, g in self.groups.items():
            g.wal, state = self.journal.recover(name, self.root / name / "wal", 400)
            self.check(name, state)
            g.mark, g.tried, g.dead = state.snapshot, None, False
            g.last = state.entries[-1].index if state.entries else g.mark.index if g.mark else 0
            g.acked = g.last  # what recovery returned is the log now (durable: open fsyncs)
            self.journal.register(name, g.wal, checkpoint=False)
        self.journal.checkpoint()
        self.fault.armed = armed

    def power_loss_then_start(self, power: PowerLoss) -> None:
        for g in self.groups.values():
            with contextlib.suppress(OSError):
                g.wal.close()
        self.fault.armed = False  # (the next start's I/O works)
        power.lose()
        again = NodeJournal.open(self.root / "journal")
        for name in self.groups:
            wal, state = again.recover(name, self.root / name / "wal", 400)
            wal.close()
            self.check(name, state)


@pytest.mark.parametrize("seed", range(120))
def test_power_loss_after_an_io_fault_keeps_every_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    power = PowerLoss(tmp_path, monkeypatch)
    node = Node(tmp_path, rng, Fault(rng.choice(KINDS), monkeypatch))
    steps = rng.randrange(20, 90)
    arm_at = rng.randrange(steps)
    for step in range(steps):
        node.fault.armed = node.fault.armed or step == arm_at
        node.step()
    node.power_loss_then_start(power)


@pytest.mark.parametrize("seed", range(80))
def test_a_process_death_then_a_power_loss_keep_every_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """As above, over two runs of the node: the process dies (no power loss: the next start
    reads what it never fsynced from the page cache), starts again and goes on, with one
    fault in either run; then a power loss. Every write acknowledged in either run is kept:
    what the start recovered counts as persisted from then on (a Raft core counts it)."""
    rng = random.Random(seed)
    power = PowerLoss(tmp_path, monkeypatch)
    node = Node(tmp_path, rng, Fault(rng.choice(KINDS), monkeypatch))
    steps = [rng.randrange(10, 60), rng.randrange(10, 60)]
    arm_at = rng.randrange(sum(steps))
    for run, count in enumerate(steps):
        if run:
            node.restart()
        for step in range(count):
            node.fault.armed = node.fault.armed or run * steps[0] + step == arm_at
            node.step()
    node.power_loss_then_start(power)


def test_a_group_whose_wal_fsync_fails_as_it_leaves_keeps_its_records_in_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``forget`` (a replica closing: rebuilt, dropped) fsyncs the group's WAL, then takes a
    checkpoint without it. When that fsync fails, the WAL may have lost the records only the
    journal holds durably: the journal fails, so no later checkpoint drops them. It used to
    drop the group first: the next checkpoint (any group's) left its acknowledged records
    nowhere, and a power loss lost them."""
    power = PowerLoss(tmp_path, monkeypatch)
    fault = Fault("wal-segment", monkeypatch)
    journal = NodeJournal.open(tmp_path / "journal")
    wals = {g: journal.recover(g, tmp_path / g / "wal", 4096)[0] for g in ("p0", "p1")}
    for g, wal in wals.items():
        journal.register(g, wal)
    for i in range(1, 6):  # acknowledged: journaled, the WAL's copy not fsynced
        journal.save("p1", wals["p1"], HardState(1, "n1", i - 1), entries(i, i))
    fault.armed = True
    with pytest.raises(OSError):
        journal.forget("p1")  # the replica stops (its WAL is not closed: close failed)
    assert fault.fired.endswith(".wal")
    with contextlib.suppress(OSError):  # another group's compaction, or a registration
        journal.save("p0", wals["p0"], HardState(1, "n1", 0), entries(1, 1))
        journal.checkpoint()
    power.lose()
    again = NodeJournal.open(tmp_path / "journal")
    wal, state = again.recover("p1", tmp_path / "p1" / "wal", 4096)
    wal.close()
    assert [e.index for e in state.entries] == [1, 2, 3, 4, 5]


def test_a_checkpoint_that_fails_before_its_generation_exists_fails_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group registered again with another WAL while the open generation lists its old one:
    ``register`` takes a checkpoint at once, since recovery would cut the group's directory
    back to the old WAL's position. If that checkpoint fails before its generation is created
    (here the file cannot be created), the new WAL must not fsync its writes itself and
    acknowledge them: the journal fails (it used to stay usable, and those writes were cut
    away at the next start)."""
    journal = NodeJournal.open(tmp_path / "journal")
    old, _ = journal.recover("p0", tmp_path / "p0" / "wal", 4096)
    journal.register("p0", old)
    for i in range(1, 4):
        journal.save("p0", old, HardState(1, "n1", i - 1), entries(i, i))
    old.close()
    new, _ = journal.recover("p0", tmp_path / "p0" / "wal", 4096)
    real_open = os.open

    def no_generation(path: str | Path, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".jnl"):
            raise OSError(24, "EMFILE (injected)")
        return real_open(path, flags, mode)

    with monkeypatch.context() as m:
        m.setattr(os, "open", no_generation)
        with pytest.raises(OSError):
            journal.register("p0", new, checkpoint=False)
    acked = 3
    with contextlib.suppress(OSError):
        journal.save("p0", new, HardState(1, "n1", 3), entries(4, 4))
        acked = 4
    new.close()
    wal, state = NodeJournal.open(tmp_path / "journal").recover("p0", tmp_path / "p0" / "wal", 4096)
    wal.close()
    assert [e.index for e in state.entries][:acked] == list(range(1, acked + 1))
    assert acked == 3  # refused
