"""Write-ahead log of one replica: checksummed records in append-only segment files.

It holds the replica's raft entries, hard state (term, vote, commit) and snapshot marks. Nothing
counts as persisted until ``save`` / ``mark_snapshot`` has returned, fsynced. ``open`` replays the
directory, repairs the torn tail a crash may leave, and refuses (``WalCorruptionError``) damage
that no crash explains.

    wal, state = WriteAheadLog.open(Path("data/n1/p0/wal"))
    wal.save(HardState(term=2, vote="n1", commit=6), [Entry(index=7, term=2, data=b"put a")])
    wal.mark_snapshot(SnapshotMeta(index=6, term=2, membership=members))  # applied store has <= 6
    wal.release_before(7)  # old segments holding only entries <= 6 may now go
    wal.close()

On disk: segments ``<seq:020d>.wal``, seq = 1, 2, 3, ... (released ones go from the front). A
segment is a header (``b"GDWALSEG"``, u32 LE version), then records ``u32 LE length | u32 LE
crc32c(payload) | payload``; payload = type byte + msgpack body: ENTRY ``[index, term, kind,
data]``, HARD_STATE ``[term, vote | None, commit]``, SNAPSHOT_MARK ``[index, term, membership]``.
Each segment starts with the hard state and latest snapshot mark as of its creation, so it and
its successors replay correctly without their predecessors: that lets old segments go.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import crc32c
import msgpack

from cluster.consensus.messages import Entry, EntryKind, HardState, Membership, SnapshotMeta
from cluster.storage.layout import WAL_SUFFIX, wal_segment
from cluster.storage.layout import fsync_dir as _fsync_dir  # a seam: tests make it fail

log = logging.getLogger(__name__)

MAGIC = b"GDWALSEG"
VERSION = 1
DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
_HEADER = struct.Struct("<8sI")
_FRAME = struct.Struct("<II")  # payload length, crc32c of payload
HEADER_SIZE = _HEADER.size


ENTRY, HARD_STATE, SNAPSHOT_MARK = 1, 2, 3  # record types
JOURNAL_CHECKPOINT, JOURNAL_GROUP = 11, 12  # the node journal's (journal.py), framed alike
# Types an intact record may have: a bad record followed by one of these is damage, not a tear.
_RECORD_TYPES = frozenset({ENTRY, HARD_STATE, SNAPSHOT_MARK, JOURNAL_CHECKPOINT, JOURNAL_GROUP})


class WalCorruptionError(Exception):
    """The WAL is damaged in a way no crash explains. Never skipped: a human must look."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: byte offset {offset}: {reason}")
        self.path, self.offset, self.reason = path, offset, reason


@dataclass(frozen=True, slots=True)
class WalState:
    """What ``WriteAheadLog.open`` recovered.

    ``entries`` is the raft log after the latest snapshot (contiguous, starting at
    ``snapshot.index + 1``, or at 1 without a snapshot). ``truncated_bytes`` counts the bytes of
    torn tail (and torn segment creation) that recovery cut off; 0 after a clean shutdown.
    """

    hard_state: HardState
    snapshot: SnapshotMeta | None
    entries: list[Entry]
    truncated_bytes: int = 0


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    max_index: int = 0  # highest entry index recorded in it; 0 when it holds no entry
    self_contained: bool = False  # starts with the state as of its creation (see module doc)
    records: int = 0  # intact records found by replay


@dataclass(slots=True)
class _Replay:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta | None = None
    entries: list[Entry] = field(default_factory=list)
    truncated_bytes: int = 0


class WriteAheadLog:
    """Appends records for one replica; obtain one with ``WriteAheadLog.open``.

    Not thread-safe. After an I/O error the instance refuses further writes (the state of the
    file is unknown, and retrying an fsync can falsely report success): reopen to recover.
    """

    def __init__(self, directory: Path, segment_bytes: int, segments: list[_Segment]) -> None:
        self._dir = directory
        self._segment_bytes = segment_bytes
        self._segments = segments
        self._hard_state = HardState()
        self._snapshot: SnapshotMeta | None = None
        self._last_index = 0  # last log index, or the snapshot index when the log is empty
        self._fd = -1
        self._size = 0
        self._unsynced = False
        self._failed: OSError | None = None

    @classmethod
    def open(
        cls, directory: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> tuple[WriteAheadLog, WalState]:
        """Create ``directory`` if needed, replay every segment, and open the last for appends.

        Replay: an ENTRY with index i discards every entry with index >= i, then is appended
        (raft's log overwrite); the latest HARD_STATE wins; a SNAPSHOT_MARK drops the entries at
        or below its index. A torn tail of the last segment is truncated and counted in
        ``truncated_bytes``. Raises ``WalCorruptionError`` for anything else that is damaged: a
        bad record followed by data in the last segment, any bad record or header in an earlier
        segment, a missing segment, or a log that does not continue its snapshot.
        """
        _make_durably(directory)
        seqs = sorted(int(p.stem) for p in directory.glob("*" + WAL_SUFFIX) if p.stem.isdigit())
        for prev, seq in pairwise(seqs):
            if seq != prev + 1:
                raise WalCorruptionError(_path(directory, seq), 0, f"segment {prev + 1} is missing")
        rep = _Replay()
        segments: list[_Segment] = []
        for seq in seqs:
            seg = _Segment(seq, _path(directory, seq))
            data = seg.path.read_bytes()
            if not _check_header(seg.path, data, is_last=seq == seqs[-1]):
                log.warning("%s: removing torn segment (%d bytes)", seg.path, len(data))
                rep.truncated_bytes += len(data)
                seg.path.unlink()
                _fsync_dir(directory)
                continue
            records, good_end = _read_records(seg.path, data, is_last=seq == seqs[-1])
            if good_end < len(data):
                log.warning("%s: truncating torn tail at offset %d", seg.path, good_end)
                rep.truncated_bytes += len(data) - good_end
                with seg.path.open("r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
            _replay_segment(seg, records, rep)
            segments.append(seg)
        snap_index = rep.snapshot.index if rep.snapshot else 0
        if rep.entries and rep.entries[0].index != snap_index + 1:
            reason = f"log starts at {rep.entries[0].index} after snapshot {snap_index}"
            raise WalCorruptionError(segments[0].path, HEADER_SIZE, reason)
        wal = cls(directory, segment_bytes, segments)
        wal._hard_state, wal._snapshot = rep.hard_state, rep.snapshot
        wal._last_index = rep.entries[-1].index if rep.entries else snap_index
        try:
            if not segments:
                wal._create_segment(seqs[0] if seqs else 1)
            else:
                active = segments[-1]
                wal._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
                wal._size = active.path.stat().st_size
                if active.records == 0:  # torn right after creation: restore the state prefix
                    wal._write(wal._state_prefix())
                    active.self_contained = True
                # What replay read may not be durable: a process that died (not the machine)
                # leaves its unsynced appends in the page cache, and replay reads them like
                # the rest. Whoever opens the WAL takes what it returns as persisted (a Raft
                # core counts those entries as its own copy, a follower acknowledges them
                # again without a new fsync; the node journal's next checkpoint lists this
                # size), so it is made durable here, before anything builds on it
                # (correctness over one fsync per open). Earlier segments were fsynced before
                # the next one was created.
                wal._unsynced = True
                wal._sync()
                _fsync_dir(directory)
        except BaseException:
            wal.close()
            raise
        return wal, WalState(rep.hard_state, rep.snapshot, rep.entries, rep.truncated_bytes)

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = True
    ) -> bytes:
        """Append ``entries`` (then ``hard_state``, when given) and, with ``sync``, fsync.

        Once this returns with ``sync=True``, the records and everything appended before them
        survive a crash. Entries must continue the log: each index above the snapshot index and
        at most one past the previous entry (a lower index overwrites, as in raft); otherwise
        ``ValueError`` and nothing is written. Returns the records appended (for the node's
        journal, journal.py, which makes them durable when ``sync`` is False).
        """
        self._check_usable()
        snap_index = self._snapshot.index if self._snapshot else 0
        last = self._last_index
        for e in entries:
            if e.index <= snap_index:
                raise ValueError(f"entry {e.index} is at or below the snapshot at {snap_index}")
            if e.index > last + 1:
                raise ValueError(f"entry {e.index} would leave a gap after index {last}")
            last = e.index
        buf = b"".join(_encode(e) for e in entries)
        if hard_state is not None:  # after the entries, so a surviving commit never outruns them
            buf += _encode(hard_state)
        if buf:
            self._append(buf)
            if entries:
                self._last_index = last
                active = self._segments[-1]
                active.max_index = max(active.max_index, max(e.index for e in entries))
            if hard_state is not None:
                self._hard_state = hard_state
        if sync:
            self._sync()
        return buf

    def mark_snapshot(self, meta: SnapshotMeta, *, sync: bool = True) -> bytes:
        """Record (fsynced) that the applied store durably holds the state up to ``meta.index``.

        Entries at or below ``meta.index`` are no longer returned by ``open``; entries above it
        are kept only when the entry at ``meta.index`` has ``meta.term`` (the log continues the
        snapshot); otherwise the whole old log is dropped, as Raft §7 requires.
        ``meta.index`` must not be below the previous mark's (``ValueError``). ``sync`` and the
        return value are as in ``save``.
        """
        self._check_usable()
        if self._snapshot is not None and meta.index < self._snapshot.index:
            raise ValueError(f"snapshot {meta.index} is older than {self._snapshot.index}")
        buf = _encode(meta)
        self._append(buf)
        if sync:
            self._sync()
        self._snapshot = meta
        self._last_index = max(self._last_index, meta.index)
        return buf

    def replay(self, records: bytes) -> None:
        """Append ``records`` (what ``save`` / ``mark_snapshot`` returned, concatenated) as
        those calls did, without fsync: the node journal's recovery (journal.py). Raises
        ``ValueError`` when they are damaged or do not continue this log."""
        entries: list[Entry] = []
        pos = 0
        while pos < len(records):
            if len(records) - pos < _FRAME.size:
                raise ValueError(f"journal records cut short at {pos}")
            problem = _record_problem(records, pos)
            if problem is not None:
                raise ValueError(f"journal record at {pos}: {problem}")
            length = _FRAME.unpack_from(records, pos)[0]
            start = pos + _FRAME.size
            record = _decode(records[start : start + length])
            pos = start + length
            if isinstance(record, Entry):
                entries.append(record)
            elif isinstance(record, HardState):
                self.save(record, entries, sync=False)
                entries = []
            else:
                self.save(None, entries, sync=False)
                entries = []
                self.mark_snapshot(record, sync=False)
        self.save(None, entries, sync=False)

    def sync(self) -> None:
        """Fsync what was appended with ``sync=False``."""
        self._check_usable()
        self._sync()

    def position(self) -> tuple[int, int]:
        """(sequence number, size) of the active segment: where the next record goes."""
        return self._segments[-1].seq, self._size

    def release_before(self, index: int, keep_from: int | None = None) -> int:
        """Delete the oldest closed segments whose entries all lie below ``index``.

        Only a run of oldest segments that is followed by a self-contained segment goes, so replay
        never loses a hard state, a snapshot mark or an overwrite; the active segment stays.
        ``index`` may be at most the snapshot index + 1 (``ValueError`` otherwise). Segments
        numbered ``keep_from`` or higher stay (the node journal's recovery starts from one).
        Returns the number of segments deleted.
        """
        self._check_usable()
        snap_index = self.snapshot_index()
        if index > snap_index + 1:
            raise ValueError(f"cannot release before {index}: snapshot is at {snap_index}")
        cut = self.releasable(index, keep_from)
        for seg in self._segments[:cut]:  # oldest first, durably, so a crash leaves a suffix
            seg.path.unlink()
            _fsync_dir(self._dir)
        del self._segments[:cut]
        return cut

    def releasable(self, index: int, keep_from: int | None = None) -> int:
        """How many segments ``release_before(index, keep_from)`` would delete (none yet)."""
        cut = 0
        for i, seg in enumerate(self._segments[:-1]):
            if seg.max_index >= index or (keep_from is not None and seg.seq >= keep_from):
                break
            if self._segments[i + 1].self_contained:
                cut = i + 1
        return cut

    def snapshot_index(self) -> int:
        """The index of the latest snapshot mark appended, 0 without one."""
        return self._snapshot.index if self._snapshot else 0

    def segment_paths(self) -> list[Path]:
        """The segment files, oldest first; the last one takes the appends."""
        return [seg.path for seg in self._segments]

    def close(self) -> None:
        """Fsync anything written with ``sync=False`` and close. Idempotent."""
        fd, self._fd = self._fd, -1
        try:
            if fd >= 0 and self._failed is None and self._unsynced:
                os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)

    # --- internals -------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise OSError("write-ahead log failed earlier; reopen it") from self._failed
        if self._fd < 0:
            raise ValueError("write-ahead log is closed")

    @contextmanager
    def _failing_on_io_error(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:  # never retry: after a failed fsync the pages may be lost
            self._failed = exc
            raise

    def _append(self, buf: bytes) -> None:
        with self._failing_on_io_error():
            if self._size >= self._segment_bytes:
                self._sync()
                os.close(self._fd)
                self._fd = -1
                self._create_segment(self._segments[-1].seq + 1)
            self._write(buf)

    def _state_prefix(self) -> bytes:
        prefix = _encode(self._hard_state)
        if self._snapshot is not None:
            prefix += _encode(self._snapshot)
        return prefix

    def _create_segment(self, seq: int) -> None:
        path = _path(self._dir, seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._size = 0
        self._segments.append(_Segment(seq, path, self_contained=True))
        self._write(_HEADER.pack(MAGIC, VERSION) + self._state_prefix())
        self._sync()
        _fsync_dir(self._dir)

    def _write(self, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            view = view[os.write(self._fd, view) :]
        self._size += len(buf)
        self._unsynced = True

    def _sync(self) -> None:
        if self._unsynced:
            with self._failing_on_io_error():
                os.fsync(self._fd)
            self._unsynced = False


def truncate_to(directory: Path, seq: int, size: int) -> int:
    """Cut the WAL in ``directory`` back to segment ``seq`` of ``size`` bytes, durably: later
    segments go, that one is truncated. Returns the bytes removed.

    The node journal's recovery (journal.py): everything the WAL held beyond that point was
    also journaled, and its copy here was never fsynced, so it may be torn anywhere.
    """
    removed = 0
    for path in sorted(directory.glob("*" + WAL_SUFFIX)):
        if not path.stem.isdigit() or int(path.stem) < seq:
            continue
        length = path.stat().st_size
        if int(path.stem) > seq:
            removed += length
            path.unlink()
        elif length > size:
            removed += length - size
            with path.open("r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        elif length < size:
            raise WalCorruptionError(path, length, f"shorter than its journaled {size} bytes")
    if not wal_segment(directory, seq).exists():
        raise WalCorruptionError(wal_segment(directory, seq), 0, "journaled segment is missing")
    _fsync_dir(directory)
    return removed


# --- records -------------------------------------------------------------------------------


def _path(directory: Path, seq: int) -> Path:
    return wal_segment(directory, seq)


def _make_durably(directory: Path) -> None:
    """``directory`` and any missing parent made, each new entry fsynced into its parent: the
    segments' own fsyncs (and wal/'s, of their entries) do not make wal/ itself durable, and a
    power loss must not take a WAL that acknowledged entries with it (ext4 happens to commit
    the entry with the file's fsync; POSIX does not promise it)."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        _fsync_dir(made.parent)


def _frame(rtype: int, body: list[Any]) -> bytes:
    payload = bytes((rtype,)) + bytes(msgpack.packb(body, use_bin_type=True))
    return _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload


def _encode(r: Entry | HardState | SnapshotMeta) -> bytes:
    if isinstance(r, Entry):
        return _frame(ENTRY, [r.index, r.term, r.kind.value, r.data])
    if isinstance(r, HardState):
        return _frame(HARD_STATE, [r.term, r.vote, r.commit])
    return _frame(SNAPSHOT_MARK, [r.index, r.term, r.membership.encode()])


def _is_int(*values: object) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _decode(payload: bytes) -> Entry | HardState | SnapshotMeta:
    """Decode a payload whose checksum matched; ValueError/TypeError if it is malformed."""
    rtype, body = payload[0], msgpack.unpackb(payload[1:], raw=False)
    if rtype == ENTRY:
        index, term, kind, data = body
        if _is_int(index, term, kind) and isinstance(data, bytes):
            return Entry(index, term, EntryKind(kind), data)
    elif rtype == HARD_STATE:
        term, vote, commit = body
        if _is_int(term, commit) and (vote is None or isinstance(vote, str)):
            return HardState(term, vote, commit)
    elif rtype == SNAPSHOT_MARK:
        index, term, membership = body
        if _is_int(index, term) and isinstance(membership, bytes):
            return SnapshotMeta(index, term, Membership.decode(membership))
    raise ValueError(f"malformed record of type {rtype}")


# --- recovery ------------------------------------------------------------------------------


def _check_header(path: Path, data: bytes, *, is_last: bool) -> bool:
    """True if the header is good; False for a torn creation (a last segment shorter than a
    header, or all zero bytes); raises for anything else."""
    if len(data) < HEADER_SIZE or data.count(0) == len(data):
        if is_last:
            return False
        raise WalCorruptionError(path, 0, f"segment header missing ({len(data)} bytes)")
    magic, version = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise WalCorruptionError(path, 0, f"bad segment header {data[:HEADER_SIZE]!r}")
    return True


def _record_problem(data: bytes, pos: int) -> str | None:
    """Why the record framed at ``pos`` is not intact, or None if it is."""
    if len(data) - pos < _FRAME.size:
        return "incomplete record frame"
    length, crc = _FRAME.unpack_from(data, pos)
    if length == 0:
        return "zero record length"
    start = pos + _FRAME.size
    if start + length > len(data):
        return f"record length {length} runs past the end of the file"
    if crc32c.crc32c(data[start : start + length]) != crc:
        return "checksum mismatch"
    return None


def _is_torn_tail(data: bytes, pos: int) -> bool:
    """Whether the bad record at ``pos`` (in the last segment) is an unfinished last write.

    Yes if only zero bytes follow the last good record, if the frame is incomplete, or if the
    record fails its checksum and only zero bytes (or none) follow it. A length running past EOF
    is torn too, unless an intact record starts somewhere after ``pos``: a bit flip in a length
    field produces that and a torn write cannot, and we must not cut acknowledged records.
    """
    if data.count(0, pos) == len(data) - pos or len(data) - pos < _FRAME.size:
        return True
    record_end: int = pos + _FRAME.size + _FRAME.unpack_from(data, pos)[0]
    if record_end <= len(data):
        return data.count(0, record_end) == len(data) - record_end
    return not any(
        _record_problem(data, at) is None and data[at + _FRAME.size] in _RECORD_TYPES
        for at in range(pos + 1, len(data) - _FRAME.size)
    )


def _read_records(path: Path, data: bytes, *, is_last: bool) -> tuple[list[tuple[int, bytes]], int]:
    """The (offset, payload) of every intact record, and the offset where they end."""
    records: list[tuple[int, bytes]] = []
    pos = HEADER_SIZE
    while pos < len(data):
        problem = _record_problem(data, pos)
        if problem is not None:
            if is_last and _is_torn_tail(data, pos):
                break
            raise WalCorruptionError(path, pos, problem)
        start = pos + _FRAME.size
        length = _FRAME.unpack_from(data, pos)[0]
        records.append((pos, data[start : start + length]))
        pos = start + length
    return records, pos


def _replay_segment(seg: _Segment, records: list[tuple[int, bytes]], rep: _Replay) -> None:
    prior_snapshot = rep.snapshot
    leading_mark = False
    seen_entry = False
    for n, (offset, payload) in enumerate(records):
        try:
            record = _decode(payload)
        except Exception as exc:  # the checksum matched, so any decoding failure is corruption
            raise WalCorruptionError(seg.path, offset, f"undecodable record: {exc!r}") from exc
        if isinstance(record, Entry):
            _replay_entry(seg.path, offset, record, rep)
            seg.max_index = max(seg.max_index, record.index)
            seen_entry = True
        elif isinstance(record, HardState):
            rep.hard_state = record
            seg.self_contained |= n == 0
        else:
            rep.snapshot = record
            rep.entries = _entries_after_snapshot(rep.entries, record)
            leading_mark |= not seen_entry
    seg.records = len(records)
    seg.self_contained &= prior_snapshot is None or leading_mark


def _entries_after_snapshot(entries: list[Entry], mark: SnapshotMeta) -> list[Entry]:
    """Raft §7: keep the entries after a snapshot only if the log continues it.

    A compaction mark sits on an entry we hold (same index and term), or before the first
    entry when older ones were released. A snapshot installed from the leader because our log
    diverged sits on nothing we hold: the whole old log is discarded.

    "Before the first entry" is not only "right before": a mark recorded when the log had
    already grown into a later segment (a compaction's mark, written once its dump is done,
    or a new segment's copy of the latest mark) sits below that segment's first entry once
    the segments before it are released. Dropping the log there lost acknowledged entries on
    the next start (a clean one too) when segments hold fewer entries than a compaction
    interval (large items). Keeping it cannot keep a diverged log alive: segments go only
    after a compaction mark (replica.release_wal), which sits on an entry of the live log; so
    if this mark was installed over a diverged log, the release came later (marks only grow),
    after entries appended since this mark, and those (starting at or below the kept first
    entry) overwrite the kept ones in replay, or a later installed snapshot drops them.
    """
    if entries and entries[0].index > mark.index:
        return entries
    for e in entries:
        if e.index == mark.index:
            return [x for x in entries if x.index > mark.index] if e.term == mark.term else []
    return []


def _replay_entry(path: Path, offset: int, e: Entry, rep: _Replay) -> None:
    snap_index = rep.snapshot.index if rep.snapshot else 0
    if e.index <= snap_index:
        raise WalCorruptionError(path, offset, f"entry {e.index} at or below snapshot {snap_index}")
    if rep.entries:  # when empty (older segments released), any index may start the log
        last = rep.entries[-1].index
        if e.index > last + 1:
            raise WalCorruptionError(path, offset, f"entry {e.index} leaves a gap after {last}")
        del rep.entries[max(e.index - rep.entries[0].index, 0) :]
    rep.entries.append(e)
