"""The WAL archive: every group's committed log, in checksummed segments, kept off the nodes.

Leaders append their groups' newly committed entries to an archive store every second or so;
from the archive alone a *reference replica* of a partition can be rebuilt (offline, by applying
the archived log with the same state machine), and scrub compares it with the live replicas
(DESIGN.md "Continuous verification"). The store interface is three calls, so an S3-compatible
bucket can stand in for the directory used here:

    archive = DirectoryArchive(Path(".gameday/cluster/archive"))
    archive.put("orders.p0/00000000000000000001-00000000000000000100.seg", data)
    ref = rebuild_reference(archive, "orders.p0", Path("/tmp/ref"))   # -> Reference(index, ...)

    python -m cluster.storage.archive --archive DIR --group orders.p0 --out /tmp/ref

Keys, per group ``g``:

- ``g/<lo:020d>-<hi:020d>.seg``: committed entries lo..hi. ``GDARCSEG`` + u32 LE version, then
  records ``u32 LE length | u32 LE crc32c(payload) | payload`` (payload: msgpack ``[index, term,
  kind, data]``), then ``GDARCEND`` + SHA-256 of everything before it.
- ``g/<index:020d>.base``: a snapshot (``ItemStore.dump``) at ``index``, written when a leader's
  log no longer holds the entries after the archive's end (the archive then continues from it).
  ``GDARCBAS`` + u32 version, one record as above (msgpack ``[index, term, data]``), trailer.

Segments written by two leaders may overlap: committed entries are the same whoever writes
them, so an overlap that disagrees is corruption, like a bad checksum.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import logging
import os
import re
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import crc32c
import msgpack

from cluster.consensus.messages import Entry, EntryKind
from cluster.consensus.raft import Role
from cluster.tasks import cancel_and_wait

from .itemstore import ItemStore
from .layout import items_file
from .replica import Replica, ReplicaMode
from .statemachine import StateMachine

log = logging.getLogger(__name__)

VERSION = 1
_SEG, _BASE, _END = b"GDARCSEG", b"GDARCBAS", b"GDARCEND"
_HEADER = struct.Struct("<8sI")
_FRAME = struct.Struct("<II")
_SEG_KEY = re.compile(r"(\d{20})-(\d{20})\.seg")
_BASE_KEY = re.compile(r"(\d{20})\.base")
MAX_ENTRIES_PER_SEGMENT = 5000


class ArchiveStore(Protocol):
    """Where archived files go: a directory here; an S3 bucket would implement the same."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably and atomically (all or nothing)."""
        ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, sorted."""
        ...


class DirectoryArchive:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if ".." in key.split("/") or key.startswith("/"):
            raise ValueError(f"bad archive key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def list(self, prefix: str) -> list[str]:
        directory, _, start = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return []
        names = [p.name for p in base.iterdir() if p.is_file() and not p.name.startswith(".")]
        keys = [f"{directory}/{n}" if directory else n for n in names if n.startswith(start)]
        return sorted(keys)


class ArchiveCorruption(Exception):
    """An archived file fails its checksum, or archived entries disagree."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


class ArchiveGap(Exception):
    """The archive does not (yet) hold the log up to the index asked for."""


# --- file formats --------------------------------------------------------------------------


def _record(body: object) -> bytes:
    payload = bytes(msgpack.packb(body, use_bin_type=True))
    return _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload


def _seal(data: bytes) -> bytes:
    return data + _END + hashlib.sha256(data).digest()


def _unseal(key: str, data: bytes, magic: bytes) -> bytes:
    """Check header and trailer; return the records between them."""
    trailer = len(_END) + 32
    if len(data) < _HEADER.size + trailer:
        raise ArchiveCorruption(key, f"truncated ({len(data)} bytes)")
    body, end, digest = data[:-trailer], data[-trailer:-32], data[-32:]
    if end != _END or hashlib.sha256(body).digest() != digest:
        raise ArchiveCorruption(key, "checksum mismatch (SHA-256 trailer)")
    found, version = _HEADER.unpack_from(body)
    if found != magic or version != VERSION:
        raise ArchiveCorruption(key, f"bad header {body[: _HEADER.size]!r}")
    return body[_HEADER.size :]


def _records(key: str, data: bytes) -> Iterable[Any]:
    pos = 0
    while pos < len(data):
        if len(data) - pos < _FRAME.size:
            raise ArchiveCorruption(key, f"incomplete record at {pos}")
        length, crc = _FRAME.unpack_from(data, pos)
        payload = data[pos + _FRAME.size : pos + _FRAME.size + length]
        if len(payload) != length or crc32c.crc32c(payload) != crc:
            raise ArchiveCorruption(key, f"record at {pos}: checksum mismatch")
        yield msgpack.unpackb(payload, raw=False)
        pos += _FRAME.size + length


def encode_segment(entries: Sequence[Entry]) -> bytes:
    body = _HEADER.pack(_SEG, VERSION) + b"".join(
        _record([e.index, e.term, e.kind.value, e.data]) for e in entries
    )
    return _seal(body)


def decode_segment(key: str, data: bytes) -> list[Entry]:
    entries = []
    try:
        for index, term, kind, payload in _records(key, _unseal(key, data, _SEG)):
            entries.append(Entry(int(index), int(term), EntryKind(kind), bytes(payload)))
    except (ValueError, TypeError) as exc:
        raise ArchiveCorruption(key, f"undecodable record: {exc!r}") from exc
    for prev, nxt in itertools.pairwise(entries):
        if nxt.index != prev.index + 1:
            raise ArchiveCorruption(key, f"entry {nxt.index} does not follow {prev.index}")
    return entries


def encode_base(index: int, term: int, dump: bytes) -> bytes:
    return _seal(_HEADER.pack(_BASE, VERSION) + _record([index, term, dump]))


def decode_base(key: str, data: bytes) -> tuple[int, int, bytes]:
    try:
        ((index, term, dump),) = list(_records(key, _unseal(key, data, _BASE)))
        return int(index), int(term), bytes(dump)
    except (ValueError, TypeError) as exc:
        raise ArchiveCorruption(key, f"undecodable base: {exc!r}") from exc


def segment_key(group: str, lo: int, hi: int) -> str:
    return f"{group}/{lo:020d}-{hi:020d}.seg"


def base_key(group: str, index: int) -> str:
    return f"{group}/{index:020d}.base"


@dataclass(frozen=True, slots=True)
class Listing:
    segments: list[tuple[int, int, str]]  # (lo, hi, key), by lo
    bases: list[tuple[int, str]]  # (index, key), by index

    def end(self) -> int:
        """The highest index the archive holds contiguously from its latest usable start."""
        start = self.start_for(None)
        if start is None:
            return 0
        upto = start[0]
        for lo, hi, _ in self.segments:
            if lo <= upto + 1:
                upto = max(upto, hi)
        return upto

    def start_for(self, upto: int | None) -> tuple[int, str | None] | None:
        """Where a rebuild up to ``upto`` starts: (base index, base key) or (0, None).

        The latest base at or below ``upto`` from which segments reach on contiguously (to
        ``upto``, or as far as they go); None when nothing usable is archived.
        """
        starts: list[tuple[int, str | None]] = [(i, k) for i, k in self.bases]
        starts = [(0, None), *starts]
        best = None
        for index, key in starts:
            if upto is not None and index > upto:
                continue
            reach = index
            for lo, hi, _ in self.segments:
                if lo <= reach + 1:
                    reach = max(reach, hi)
            if upto is None or reach >= upto:
                best = (index, key)
        return best


def list_group(store: ArchiveStore, group: str) -> Listing:
    segments, bases = [], []
    for key in store.list(f"{group}/"):
        name = key.rpartition("/")[2]
        if m := _SEG_KEY.fullmatch(name):
            segments.append((int(m[1]), int(m[2]), key))
        elif m := _BASE_KEY.fullmatch(name):
            bases.append((int(m[1]), key))
    return Listing(sorted(segments), sorted(bases))


# --- reference replicas --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    group: str
    index: int  # applied up to here
    digest: str  # ItemStore.digest of the rebuilt data
    items: int
    segments: int  # archive files read


def archived_entries(
    store: ArchiveStore, group: str, upto: int | None = None, after: int | None = None
) -> tuple[int, bytes | None, list[Entry], int]:
    """(base index, base dump or None, entries after it up to ``upto``, files read).

    With ``after``, no base: the entries after that index (an incremental update).
    """
    listing = list_group(store, group)
    start = listing.start_for(upto) if after is None else (after, None)
    if start is None:
        raise ArchiveGap(f"{group}: the archive does not reach index {upto}")
    base_index, key = start
    dump = None
    files = 0
    if key is not None:
        index, _term, dump = decode_base(key, store.get(key))
        files += 1
        if index != base_index:
            raise ArchiveCorruption(key, f"holds index {index}, its name says {base_index}")
    by_index: dict[int, Entry] = {}
    for lo, hi, seg in listing.segments:
        if hi <= base_index or (upto is not None and lo > upto):
            continue
        entries = decode_segment(seg, store.get(seg))
        files += 1
        if not entries or (entries[0].index, entries[-1].index) != (lo, hi):
            raise ArchiveCorruption(seg, "entries do not match the segment's name")
        for e in entries:
            known = by_index.get(e.index)
            if known is not None and known != e:
                raise ArchiveCorruption(seg, f"entry {e.index} differs from another copy")
            by_index[e.index] = e
    out = []
    index = base_index + 1
    while index in by_index and (upto is None or index <= upto):
        out.append(by_index[index])
        index += 1
    if upto is not None and index <= upto:
        raise ArchiveGap(f"{group}: the archive stops at {index - 1}, before {upto}")
    return base_index, dump, out, files


def rebuild_reference(
    store: ArchiveStore,
    group: str,
    dest: Path,
    upto: int | None = None,
    batch: int = 1000,
    incremental: bool = False,
) -> Reference:
    """Rebuild ``group``'s data from the archive alone into ``dest/items.sqlite``.

    Applies the archived log (after the latest usable base snapshot) up to ``upto`` (default:
    as far as the archive goes) with the replicas' own state machine. ``incremental`` goes on
    from a reference already in ``dest`` when it is not past ``upto`` (scrubs ask for growing
    indexes), and starts afresh when that is not possible.
    """
    if incremental and items_file(dest).exists():
        ref = _update_reference(store, group, dest, upto, batch)
        if ref is not None:
            return ref
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    base_index, dump, entries, files = archived_entries(store, group, upto)
    items = ItemStore(items_file(dest))
    try:
        if dump is not None:
            items.restore(dump)
            # A snapshot may hold state past its index (compaction waits for the archive):
            # entries it already holds are not applied twice.
            applied = items.applied().index
            entries = [e for e in entries if e.index > applied]
            base_index = max(base_index, applied)
        return _replayed(items, group, entries, base_index, files, batch)
    finally:
        items.close()


def _replayed(
    items: ItemStore,
    group: str,
    entries: list[Entry],
    base_index: int,
    files: int,
    batch: int,
) -> Reference:
    """``entries`` applied to ``items`` through the state machine, ``batch`` at a time: the
    reference replica as of the last one (``base_index`` when there are none)."""
    machine = StateMachine(items)
    for i in range(0, len(entries), batch):
        machine.apply(entries[i : i + batch])
    index = entries[-1].index if entries else base_index
    return Reference(group, index, items.digest(), items.count(), files)


def _update_reference(
    store: ArchiveStore, group: str, dest: Path, upto: int | None, batch: int
) -> Reference | None:
    items = ItemStore(items_file(dest))
    try:
        applied = items.applied().index
        if upto is not None and applied > upto:
            return None
        try:
            _, _, entries, files = archived_entries(store, group, upto, after=applied)
        except ArchiveGap:
            return None
        return _replayed(items, group, entries, applied, files, batch)
    finally:
        items.close()


# --- the archiver (in every storage node) --------------------------------------------------


class Archiver:
    """Archives the committed log of every group this node leads, continuously.

    Also tells every local replica how far the archive reaches (``compact_floor``), so that a
    leader never compacts away entries that are not archived yet.
    """

    def __init__(
        self,
        store: ArchiveStore,
        replicas: Callable[[], dict[str, Replica]],
        interval: float = 1.0,
        listing_every: int = 5,
        min_entries: int = 256,
        max_delay: float = 10.0,
    ) -> None:
        self.store = store
        self.replicas = replicas
        self.interval = interval
        self.listing_every = listing_every
        self.ends: dict[str, int] = {}  # group -> archived contiguously up to
        # Few, larger files: a group's new entries are written once there are min_entries of
        # them or the oldest has waited max_delay seconds (or when a scrub asks).
        self.min_entries = min_entries
        self.max_delay = max_delay
        self.written_at: dict[str, float] = {}
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0
        self._lock = asyncio.Lock()

    def routes(self) -> list[Any]:
        return []  # no HTTP routes of its own

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="archiver")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self.archive_once(refresh=self._rounds % self.listing_every == 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("archiving failed")
            self._rounds += 1
            await asyncio.sleep(self.interval)

    async def archive_once(self, refresh: bool = False, group: str | None = None) -> None:
        """Archive what the groups led here committed since the last round."""
        async with self._lock:
            for name, replica in list(self.replicas().items()):
                if group is not None and name != group:
                    continue
                if refresh or name not in self.ends:
                    listing = await asyncio.to_thread(list_group, self.store, name)
                    self.ends[name] = max(self.ends.get(name, 0), listing.end())
                leads = replica.raft.status().role is Role.LEADER
                if leads and replica.mode is ReplicaMode.FULL:
                    await self._archive_group(name, replica, force=group is not None)
                replica.compact_floor = self.ends.get(name, 0)

    async def _archive_group(self, group: str, replica: Replica, force: bool = False) -> None:
        raft = replica.raft
        end = self.ends.get(group, 0)
        commit = raft.status().commit
        now = time.monotonic()
        waited = now - self.written_at.setdefault(group, now)
        if not force and commit - end < self.min_entries and waited < self.max_delay:
            return
        self.written_at[group] = now
        while end < commit:
            snapshot = raft.snapshot()
            if end < snapshot.meta.index:
                if not snapshot.data:
                    return  # no state to archive from (cannot happen on a full leader)
                meta = snapshot.meta
                data = encode_base(meta.index, meta.term, snapshot.data)
                await asyncio.to_thread(self.store.put, base_key(group, meta.index), data)
                end = meta.index
                self.ends[group] = end
                continue
            hi = min(commit, end + MAX_ENTRIES_PER_SEGMENT)
            entries = raft.committed_entries(end + 1, hi + 1)
            if not entries:
                return
            data = encode_segment(entries)
            key = segment_key(group, entries[0].index, entries[-1].index)
            await asyncio.to_thread(self.store.put, key, data)
            end = entries[-1].index
            self.ends[group] = end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.storage.archive",
        description="Rebuild a reference replica of one group from the WAL archive alone.",
    )
    parser.add_argument("--archive", type=Path, required=True, help="the archive directory")
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for items.sqlite")
    parser.add_argument("--upto", type=int, help="last log index to apply (default: all)")
    args = parser.parse_args(argv)
    try:
        ref = rebuild_reference(DirectoryArchive(args.archive), args.group, args.out, args.upto)
    except (ArchiveCorruption, ArchiveGap) as exc:
        print(f"cannot rebuild: {exc}", file=sys.stderr)
        return 1
    print(
        f"{ref.group}: applied up to {ref.index} from {ref.segments} archive file(s); "
        f"{ref.items} items; digest {ref.digest}; in {items_file(args.out)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
