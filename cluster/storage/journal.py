"""The node's journal: one write-ahead log shared by every replica on the node (group commit).

Each replica keeps its own WAL segments (wal.py: what recovery, compaction, the scrub and
rebuilds read), but a registered replica writes them without fsync. What makes its records
durable is this journal: the same bytes, tagged with the group, appended to one file, and one
fsync covers every group's records that are ready (group commit: the first thread to arrive
writes and fsyncs everything queued, the threads that arrive meanwhile wait and are covered by
the next fsync). ``commit`` returns only after that fsync, so the rule stays what it was:
nothing is acknowledged, voted or answered before it is fsynced (correctness over speed).

    journal = NodeJournal.open(node_dir / "journal")   # recovery needs it before any replica
    wal, state = journal.recover(group, wal_dir)       # the group's WAL, rebuilt as journaled
    journal.register(group, wal)                       # from now on it writes through us
    journal.save(group, wal, hard_state, entries)      # appended to both; fsynced once here
    journal.forget(group)                              # closed, dropped or rebuilt

On disk: ``<generation:020d>.jnl`` files; the newest complete one counts. A generation is a
header (``b"GDNODEJL"``, u32 LE version), a CHECKPOINT record, then GROUP records, framed as in
wal.py (``u32 length | u32 crc32c | payload``). CHECKPOINT (msgpack ``{group: [seq, size]}``)
says where each registered group's WAL stood, fsynced, when the generation began; GROUP
(u16 name length, name, WAL records) is what that group appended since, in order. Recovery
cuts each WAL back to its checkpoint position (what was written after it was never fsynced
there, so it may be torn anywhere) and appends the journaled records again. A checkpoint
(every ``max_bytes`` of journal, and whenever a group is registered or forgotten) fsyncs the
registered WALs, writes a new generation and deletes the old one; releasing a WAL's old
segments takes one only when it lets a segment go (``release_before``).

Durability comes from fsync of the files themselves (the power-loss layer,
chaos/backends/lazyfs.py, keeps only what was fsynced). A group that is not registered (the
TEST-ONLY no-fsync mode runs without a journal) fsyncs its own WAL as before, and so does one
registered without a checkpoint until the next checkpoint lists it. Once any of its I/O failed
(a flush, a checkpoint or its WALs' fsyncs, the fsync of a WAL leaving, the close), the journal
refuses every write, journaled or self-fsyncing, even after ``close``, until the node restarts
(``_check_self_syncing``: correctness over availability).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import crc32c
import msgpack

from cluster.consensus.messages import Entry, HardState, SnapshotMeta

from .layout import WAL_SUFFIX
from .layout import fsync_dir as _fsync_dir  # a seam: tests make it fail
from .wal import (
    HEADER_SIZE,
    JOURNAL_CHECKPOINT,
    JOURNAL_GROUP,
    WalCorruptionError,
    WalState,
    WriteAheadLog,
    _read_records,
    truncate_to,
)

log = logging.getLogger(__name__)

MAGIC = b"GDNODEJL"
VERSION = 1
SUFFIX = ".jnl"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # journal size that triggers a checkpoint
_HEADER = struct.Struct("<8sI")
_FRAME = struct.Struct("<II")
_NAME = struct.Struct("<H")
CHECKPOINT, GROUP = JOURNAL_CHECKPOINT, JOURNAL_GROUP  # record types (not the WAL's)


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload


def _generation_path(directory: Path, gen: int) -> Path:
    return directory / f"{gen:020d}{SUFFIX}"


class NodeJournal:
    """One per storage node; thread-safe (replicas call it from their own I/O threads)."""

    def __init__(self, directory: Path, gen: int, max_bytes: int) -> None:
        self._dir = directory
        self._gen = gen
        self._max_bytes = max_bytes
        self._fd = -1
        self._size = 0
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._queue: list[bytes] = []
        self._queued = 0  # records ever queued
        self._durable = 0  # records ever fsynced
        self._syncing = False
        self._failed: OSError | None = None
        # Told the first failure, at once (the node stops: fail-stop, node.py). Called under
        # the lock, from whichever thread failed: it must not block nor call the journal.
        self.on_failure: Callable[[OSError], None] | None = None
        self._wals: dict[str, WriteAheadLog] = {}  # registered: the next checkpoint lists them
        # What the open generation's checkpoint lists: only these WALs' records may go to the
        # journal (recovery refuses records of a group it does not list). A WAL registered
        # since, without a checkpoint, fsyncs itself until the next one (``_journaled``).
        self._listed: dict[str, WriteAheadLog] = {}
        self._floors: dict[str, int] = {}  # group -> WAL segment its recovery starts from
        self._floor_marks: dict[str, int] = {}  # group -> its WAL's snapshot index there
        # What the newest generation on disk holds, until ``recover`` consumed it.
        self._positions: dict[str, tuple[int, int]] = {}
        self._records: dict[str, list[bytes]] = {}
        self.commits = 0  # fsyncs of the journal (metrics: records / commits = batching)
        self.records = 0

    def stats(self) -> dict[str, int]:
        """Group commit at work: journal fsyncs, and the group records they covered."""
        return {"fsyncs": self.commits, "records": self.records, "groups": len(self._wals)}

    # --- recovery ----------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> NodeJournal:
        """Read the newest complete generation (repairing a torn tail) and keep its records for
        ``recover``. The journal takes appends only after ``checkpoint``."""
        directory.mkdir(parents=True, exist_ok=True)
        gens = sorted(int(p.stem) for p in directory.glob("*" + SUFFIX) if p.stem.isdigit())
        journal = cls(directory, gens[-1] if gens else 0, max_bytes)
        for gen in reversed(gens):
            path = _generation_path(directory, gen)
            data = path.read_bytes()
            if len(data) < HEADER_SIZE or data.count(0) == len(data):
                log.warning("%s: removing a generation torn at creation", path)
                path.unlink()
                continue
            magic, version = _HEADER.unpack_from(data)
            if magic != MAGIC or version != VERSION:
                raise WalCorruptionError(path, 0, f"bad journal header {data[:HEADER_SIZE]!r}")
            records, end = _read_records(path, data, is_last=True)
            if not records or records[0][1][0] != CHECKPOINT:
                log.warning("%s: removing a generation without its checkpoint", path)
                path.unlink()
                continue
            if end < len(data):
                log.warning("%s: truncating torn tail at offset %d", path, end)
                with path.open("r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            journal._load(path, records)
            journal._gen = gen
            break
        _fsync_dir(directory)
        return journal

    def _load(self, path: Path, records: list[tuple[int, bytes]]) -> None:
        for offset, payload in records:
            try:
                if payload[0] == CHECKPOINT:
                    table = msgpack.unpackb(payload[1:], raw=False)
                    self._positions = {str(g): (int(s), int(n)) for g, (s, n) in table.items()}
                    self._records = {g: [] for g in self._positions}
                elif payload[0] == GROUP:
                    (n,) = _NAME.unpack_from(payload, 1)
                    group = payload[1 + _NAME.size : 1 + _NAME.size + n].decode()
                    if group not in self._records:
                        raise ValueError(f"records of {group!r}, which is not checkpointed")
                    self._records[group].append(payload[1 + _NAME.size + n :])
                else:
                    raise ValueError(f"unknown record type {payload[0]}")
            except (ValueError, TypeError, UnicodeDecodeError, struct.error) as exc:
                raise WalCorruptionError(path, offset, f"bad journal record: {exc!r}") from exc

    def recover(
        self, group: str, directory: Path, segment_bytes: int
    ) -> tuple[WriteAheadLog, WalState]:
        """Open ``group``'s WAL as the journal says it is: cut back to its checkpoint position,
        then the journaled records appended again and fsynced. A group the journal does not
        know (or whose files are gone: it rejoins empty) opens as it is on disk."""
        position = self._positions.pop(group, None)
        records = self._records.pop(group, [])
        if position is not None and any(directory.glob("*" + WAL_SUFFIX)):
            cut = truncate_to(directory, *position)
            if cut or records:
                log.info("%s: WAL from the journal: %d bytes cut, %d records replayed",
                         group, cut, len(records))  # fmt: skip
            wal, _ = WriteAheadLog.open(directory, segment_bytes)
            try:
                for batch in records:
                    wal.replay(batch)
                wal.sync()
            except ValueError as exc:
                raise WalCorruptionError(directory, 0, f"journal replay failed: {exc}") from exc
            finally:
                wal.close()
        return WriteAheadLog.open(directory, segment_bytes)

    # --- membership ----------------------------------------------------------------------------

    def register(self, group: str, wal: WriteAheadLog, *, checkpoint: bool = True) -> None:
        """From now on ``group``'s records are made durable here. With ``checkpoint`` False the
        group stays self-syncing until the next ``checkpoint`` (batch registration), unless
        the open generation lists ``group`` (another WAL of it, or this one registered again):
        then the checkpoint is taken now, whatever ``checkpoint`` says."""
        with self._lock:
            self._wals[group] = wal
            # Where the last checkpoint put another WAL of this group says nothing about this
            # one: until the next checkpoint, ``release_before`` takes one first.
            self._floors.pop(group, None)
            self._floor_marks.pop(group, None)
            # The open generation lists this group at a position of the WAL it listed:
            # recovery would cut the group's directory back there and replay the journal, so
            # neither the journal (records of a WAL it does not list) nor the WAL's own fsync
            # (cut away) would keep this WAL's writes. Only a checkpoint that lists this WAL
            # makes them durable: taken now (correctness over the caller's batching).
            if checkpoint or (self._fd >= 0 and group in self._listed):
                self._checkpoint_locked()

    def forget(self, group: str) -> None:
        """``group``'s WAL is closed (fsynced) and may be replaced or deleted: it leaves the
        journal (a checkpoint without it), so recovery never replays stale records into it."""
        with self._lock:
            wal = self._wals.get(group)
            if wal is None:
                return
            if self._fd >= 0:
                # Its records leave the journal with the checkpoint below. Should this fsync
                # fail, the journal fails: the group stays registered and no checkpoint drops
                # the journal's copy of its records, which its WAL may have lost (was: it
                # left first, and the next checkpoint dropped them).
                self._failing(wal.sync)
            del self._wals[group]
            if self._fd >= 0:
                self._checkpoint_locked()

    def checkpoint(self) -> None:
        """Fsync every registered WAL and start a new generation that points at them."""
        with self._lock:
            self._checkpoint_locked()

    # --- writes ----------------------------------------------------------------------------------

    def save(
        self,
        group: str,
        wal: WriteAheadLog,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        *,
        wait: bool = True,
    ) -> None:
        """``wal.save`` made durable: returns once the records are fsynced (here, or in the WAL
        itself for a group that is not registered). ``wait`` False (only for records that a
        ``sync`` makes durable later, readyio.py): the records are queued for the next fsync,
        in order, and this returns at once."""
        if not wait:
            self._write_later(group, wal, lambda sync: wal.save(hard_state, entries, sync=sync))
            return
        self._write(group, wal, lambda sync: wal.save(hard_state, entries, sync=sync))

    def sync(self, wals: Sequence[tuple[str, WriteAheadLog]]) -> None:
        """Make durable everything saved so far with ``wait=False`` into ``wals``: one fsync of
        the journal for the registered groups, and the WAL's own for any that is not."""
        with self._lock:
            for group, wal in wals:
                if not self._journaled(group, wal):
                    self._check_self_syncing()
                    wal.sync()  # not journaled: its records went to its WAL unsynced
            if self._fd >= 0:
                self._wait_durable_locked(self._queued)

    def mark_snapshot(self, group: str, wal: WriteAheadLog, meta: SnapshotMeta) -> None:
        """``wal.mark_snapshot``, durable as ``save`` is."""
        self._write(group, wal, lambda sync: wal.mark_snapshot(meta, sync=sync))

    def release_before(self, group: str, wal: WriteAheadLog, index: int) -> int:
        """``wal.release_before`` as recovery allows it. Recovery cuts a WAL back to where it
        stood at the last checkpoint and opens it there, then replays the journal: a segment
        may go only if it lies before the segment recovery starts from, and if all its entries
        lie at or below the snapshot mark the WAL held at that point (else the WAL opened there
        would start after a gap: refused as corruption, correctness over speed).

        A checkpoint moves that point to now, but costs an fsync of every registered WAL and of
        a new generation (4-11 ms on the node's one I/O thread at bench/replication.py's half
        load; it was taken at every compaction, ~1/s per group). Segments go a whole segment
        at a time, so most compactions free none: the checkpoint is taken only when it lets a
        segment go that may not go without it; otherwise what may go now goes."""
        with self._lock:
            if self._wals.get(group) is not wal:
                return wal.release_before(index)
            if self._fd < 0:
                # No generation of this run is open: the node is starting (node.start takes
                # the first checkpoint) or the journal closed after a failure. The newest
                # generation on disk then still lists this WAL at an older checkpoint, and
                # recovery would cut it back there and replay from it, so a segment released
                # now may be one it needs (the node would refuse to start). Release nothing
                # until a checkpoint of this run: correctness over disk space.
                return 0
            # A checkpoint only when it lets go what may not go without it.
            needs_checkpoint = group not in self._floors or (
                wal.releasable(index) > wal.releasable(*self._allowed(group, index))
            )
            if needs_checkpoint:
                self._checkpoint_locked()
            return wal.release_before(*self._allowed(group, index))

    def _allowed(self, group: str, index: int) -> tuple[int, int]:
        """``release_before``'s arguments (index, keep_from) that recovery from the last
        checkpoint allows: segments before the one it starts from, none above its mark."""
        return min(index, self._floor_marks[group] + 1), self._floors[group]

    def _write(self, group: str, wal: WriteAheadLog, append: Callable[[bool], bytes]) -> None:
        with self._lock:
            if not self._journaled(group, wal):
                self._check_self_syncing()
                append(True)  # not journaled: the WAL fsyncs itself
                return
            self._wait_durable_locked(self._enqueue_locked(group, append))

    def _journaled(self, group: str, wal: WriteAheadLog) -> bool:
        """Under the lock: ``wal``'s records go to the journal (else the WAL fsyncs itself).
        Only while a generation of this run is open and its checkpoint lists this very WAL:
        recovery refuses a generation holding records of a group its checkpoint does not list
        (correctness: a group registered since, without a checkpoint, fsyncs itself)."""
        return self._fd >= 0 and self._listed.get(group) is wal and self._wals.get(group) is wal

    def _wait_durable_locked(self, mine: int) -> None:
        """Until the records queued up to number ``mine`` are fsynced (group commit: flush
        what is queued, or wait for the flush that is running)."""
        while self._durable < mine:
            self._check_usable()
            if self._syncing:
                self._synced.wait()
                continue
            self._flush_locked(may_checkpoint=True)

    def _write_later(self, group: str, wal: WriteAheadLog, append: Callable[[bool], bytes]) -> None:
        """Queue the records for the next fsync (whoever's it is) without waiting for it."""
        with self._lock:
            if not self._journaled(group, wal):
                self._check_self_syncing()
                append(False)  # not journaled: the WAL's next fsync covers it
                return
            self._enqueue_locked(group, append)

    def _enqueue_locked(self, group: str, append: Callable[[bool], bytes]) -> int:
        """Append to the WAL (unsynced) and queue the same records here; the number the
        records' fsync will reach (``_durable``)."""
        self._check_usable()
        records = append(False)
        if not records:
            return self._durable
        name = group.encode()
        self._queue.append(_frame(bytes((GROUP,)) + _NAME.pack(len(name)) + name + records))
        self._queued += 1
        return self._queued

    def _flush_locked(self, may_checkpoint: bool = False) -> None:
        """Write and fsync everything queued (the lock is released during the I/O)."""
        batch, self._queue = self._queue, []
        upto = self._queued
        self._syncing = True
        self._lock.release()
        try:
            buf = b"".join(batch)
            view = memoryview(buf)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except OSError as exc:  # never retried: after a failed fsync the pages may be lost
            self._fail(exc)
            raise
        finally:
            self._lock.acquire()
            self._syncing = False
            self._synced.notify_all()
        self._size += len(buf)
        self._durable = upto
        self.commits += 1
        self.records += len(batch)
        if may_checkpoint and self._size >= self._max_bytes:
            self._checkpoint_locked()

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise OSError("node journal failed earlier; restart the node") from self._failed

    def _failing(self, op: Callable[[], None]) -> None:
        """Run ``op``; should it raise, the journal fails (``_check_usable``), then it raises."""
        try:
            op()
        except BaseException as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException, what: str = "") -> None:
        """Fail the journal (it refuses every write from now on) and tell ``on_failure``,
        once: only the first failure counts."""
        if self._failed is None:
            self._failed = exc if isinstance(exc, OSError) else OSError(f"{what}{exc!r}")
            if self.on_failure is not None:
                self.on_failure(self._failed)

    def _check_self_syncing(self) -> None:
        """Under the lock, before a WAL that is not journaled fsyncs itself (a group registered
        since the open generation, any group once the journal is closed, one not registered
        yet): refused once this run's journal failed, open or closed, whatever the group.

        After a failure nobody knows which generation the next start picks, nor which WALs it
        lists: the open one, or one a failed checkpoint left behind (it may list a group
        registered since the open one). A close after a failure writes no last generation
        (close), so the newest one on disk still lists every WAL it knew. Recovery cuts a
        listed WAL back to its checkpoint position and replays only the journal: a record
        the WAL fsynced itself after that position is cut away, so its own fsync would not
        keep a write it acknowledged. node.stop closes the journal BEFORE the replicas and
        client connections stay open meanwhile, so a replica may still persist, count its own
        copy and answer after ``close`` (a leader whose trip ran late, with one follower's
        ack, would leave the write on one node of three). So the write is refused: the
        replica's trip fails, so no reply or vote that waited for it leaves, a leader does not
        count its own copy, nothing is applied or answered, until the node restarts from what
        is on disk (correctness over availability; a failed journal already refuses its
        journaled writes, ``_check_usable``)."""
        self._check_usable()

    def _checkpoint_locked(self) -> None:
        while self._syncing:  # let the running flush finish (it released the lock)
            self._synced.wait()
        self._check_usable()
        positions: dict[str, list[int]] = {}
        gen = self._gen + 1
        path = _generation_path(self._dir, gen)
        fd = -1
        try:
            if self._queue:
                self._flush_locked()
            for group, wal in self._wals.items():
                wal.sync()
                positions[group] = list(wal.position())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            table = bytes(msgpack.packb(positions, use_bin_type=True))
            buf = _HEADER.pack(MAGIC, VERSION) + _frame(bytes((CHECKPOINT,)) + table)
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            _fsync_dir(self._dir)
        except BaseException as exc:
            # Any failure here fails the journal: it refuses every further write, as after a
            # failed flush, and the node restarts from what is on disk (correctness over
            # availability).
            # - Once the new generation's file exists, it may be on disk, whole or torn,
            #   durable or not, with or without its directory entry: the next start may pick
            #   it (cut every WAL back to ``positions``, replay nothing) or the open one. Both
            #   keep what was acknowledged up to here (the WALs were fsynced up to
            #   ``positions`` above), but a write acknowledged from now on through the open
            #   generation, or through the own fsync of a group registered since it, would be
            #   cut away if this one counts. The file goes too, best effort: either outcome is
            #   safe, as nothing is acknowledged after it.
            # - Before (a WAL's fsync, the file's creation) the open generation still counts,
            #   but a WAL whose fsync failed fails every later checkpoint anyway, and a group
            #   registered again (``register`` takes this checkpoint at once: the open
            #   generation lists its old WAL) would fsync its new WAL itself, which recovery
            #   cuts away.
            self._fail(exc, "checkpoint: ")
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
                    _fsync_dir(self._dir)
            raise
        old_fd, old_gen = self._fd, self._gen
        self._fd, self._gen, self._size = fd, gen, len(buf)
        self._listed = dict(self._wals)
        self._floors = {g: p[0] for g, p in positions.items()}
        self._floor_marks = {g: wal.snapshot_index() for g, wal in self._wals.items()}
        if old_fd >= 0:
            os.close(old_fd)
        for stale in self._dir.glob("*" + SUFFIX):
            if stale.stem.isdigit() and int(stale.stem) <= old_gen:
                stale.unlink()
        _fsync_dir(self._dir)

    def close(self) -> None:
        """A clean stop: every WAL fsynced and a last generation that points at none of them,
        so they stand alone again (later appends fsync themselves). Idempotent. A failed
        journal writes no last generation and keeps refusing every write."""
        with self._lock:
            if self._fd < 0:
                return
            while self._syncing:
                self._synced.wait()
            try:
                if self._failed is None:
                    self._failing(self._close_locked)
            finally:
                # After a failure no last generation counts for sure: the newest one on disk
                # may still list the WALs at their checkpoint positions, so they stay
                # registered, and release_before (fd -1) then releases nothing that recovery
                # would need; their writes are refused (``_check_self_syncing``).
                fd, self._fd = self._fd, -1
                os.close(fd)

    def _close_locked(self) -> None:
        """A close that fails here, before its last generation (which lists no WAL) counts,
        fails the journal: the newest generation on disk may still list every WAL, so the
        writes they make after ``close`` are refused (``_check_self_syncing``). (It used to
        stay usable: after a WAL's fsync failed in ``close``, the other WALs' writes fsynced
        themselves, were acknowledged, and the next start cut them away.)"""
        if self._queue:
            self._flush_locked()
        for wal in self._wals.values():
            wal.sync()
        wals, self._wals = self._wals, {}
        try:
            self._checkpoint_locked()
        except BaseException:
            self._wals = wals  # failed: an older generation may still count
            raise
