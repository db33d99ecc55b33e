"""A storage node's durable record of DeleteTable's drops: group -> the newest incarnation
dropped here (``StorageNode.create_group`` refuses that group at or below it, for ever).

An append-only log, ``deleted.log`` beside ``groups.json``, one line per drop:

    "orders.p0": 1733490000123\t5e0f33a1\n      (a JSON object's member, tab, its CRC-32)

Each drop appends its line and fsyncs it before the drop is acknowledged (``add``, blocking:
the node runs it off the event loop). Was (session 14): the whole record as JSON rewritten
and fsynced on the event loop at every drop, 18 MB and 0.41 s of json.dumps per drop at 100k
deleted 4-partition tables.

Reading (``open``, at the start):
- a final piece without its newline is an append a crash cut short: never acknowledged (the
  drop answers after the fsync of the whole line), ignored. So is a final line that fails its
  check and holds a NUL byte (a torn append may leave zeros where its first bytes were; no
  line ``add`` writes holds one: JSON escapes it): an acknowledged line was fsynced whole
  before the next append began, so only the last line can be torn. The file is then
  rewritten without it, so that later appends never follow a torn line;
- any other line that is not of this form, or fails its CRC, is corruption: the start stops
  (``RecordCorruption`` naming the file and line). Read as empty it would forget the tables
  deleted here. So is a whole last line without a NUL that fails its check: no append could
  tear it so; it is an acknowledged drop damaged since (review15a, session 15);
- ``deleted.json`` (the whole-JSON record of 6aee88e..c1e7229^) is merged in at every start
  (the greater incarnation wins) and never written nor deleted: it stays as the record was at
  the upgrade, so that code of 6aee88e..c1e7229^ run again (a rollback) still refuses every
  table deleted before the upgrade (README: upgrade notes). Drops recorded after the upgrade
  are only in the log: such a rollback forgets them.

Compaction: an entry never goes (the deleted table's leftover leader may ask to create its
group at any time, even after a newer table of the name came and went here), so a rewrite only
removes lines superseded by a newer incarnation of the same group. The log is rewritten (atomic
and durable: ``replace_durably``) once it holds ``COMPACT_RATIO`` times as many lines as live
entries plus ``COMPACT_SLACK``: amortised O(1) per drop. Unique names (no group deleted twice)
never compact: the log is the live map.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from .layout import RecordCorruption, deleted_file, deleted_log, read_record, replace_durably

log = logging.getLogger(__name__)

COMPACT_RATIO = 4
COMPACT_SLACK = 1024
EXPECTED = '"group": incarnation TAB crc32 lines'


def fsync(fd: int) -> None:
    """``os.fsync`` (a seam: tests make it fail)."""
    os.fsync(fd)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _line(group: str, incarnation: int) -> str:
    payload = f"{json.dumps(group)}: {incarnation}"  # ASCII: JSON escapes the rest
    return f"{payload}\t{zlib.crc32(payload.encode()):08x}\n"


def _parse(line: bytes) -> tuple[str, int] | None:
    """The (group, incarnation) of one complete line (without its newline); None: not one."""
    payload, tab, crc = line.rpartition(b"\t")
    try:
        if not tab or len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
            return None
        entry = json.loads(b"{%s}" % payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if len(entry) != 1:
        return None
    ((group, incarnation),) = entry.items()
    return (group, incarnation) if _is_int(incarnation) else None


def _read(path: Path) -> tuple[dict[str, int], int, bool]:
    """The entries of the log at ``path``, its number of lines, and whether its last line was
    torn (ignored)."""
    data = path.read_bytes()
    body, newline, tail = data.rpartition(b"\n")  # tail: a last line without its newline
    entries = _read_fast(body) if newline else {}
    if entries is None:
        return _read_slow(path, data)
    if tail:
        _torn(path)
    return entries, body.count(b"\n") + bool(newline), bool(tail)


def _read_fast(body: bytes) -> dict[str, int] | None:
    """The entries of ``body`` (whole lines, the last one's newline cut) when every line is
    sound, in C loops (a per-line loop in Python took 2-5 s at 400k lines); else None.

    A raw tab is only ever the separator (JSON escapes one in a name), so the fields alternate
    payload, CRC; the payloads joined are one JSON object. A group's lines come in increasing
    incarnations (``add`` appends only a newer one; a rewrite writes one line per group), and
    JSON's last duplicate wins: the group's last line, its newest incarnation, is its entry."""
    fields = body.replace(b"\t", b"\n").split(b"\n")
    payloads, crcs = fields[0::2], fields[1::2]
    if len(payloads) != len(crcs):
        return None
    expected = b"%08x\n" * len(crcs) % tuple(map(zlib.crc32, payloads))
    if expected[:-1] != b"\n".join(crcs):
        return None
    try:
        entries = json.loads(b"{" + b",".join(payloads) + b"}")
    except (ValueError, UnicodeDecodeError):  # a payload that is not one "group": incarnation
        return None
    if not all(type(incarnation) is int for incarnation in entries.values()):
        return None
    return dict(entries)


def _read_slow(path: Path, data: bytes) -> tuple[dict[str, int], int, bool]:
    """``_read`` line by line: the record has a torn last line, or is corrupt (which line)."""
    entries: dict[str, int] = {}
    pieces = data.split(b"\n")
    tail = pieces.pop()  # b"": the file ends with a newline
    lines = len(pieces)
    torn = bool(tail)
    for number, line in enumerate(pieces, 1):
        entry = _parse(line)
        if entry is None:
            # The last line: an append cut short (see the module's doc) leaves zeros where
            # its first bytes were. A whole line without any is no torn append: an
            # acknowledged drop damaged since; forgotten, its table could come back here.
            # Trade-off: a torn append that exposed stale non-zero blocks (a data=writeback
            # file system) now stops the start too, for a person to look at, rather than
            # risk forgetting an acknowledged drop.
            if number == lines and not torn and b"\0" in line:
                torn = True
                continue
            raise RecordCorruption(
                f"{path}: line {number} is corrupt: {line!r:.200}; expected {EXPECTED}"
            )
        group, incarnation = entry
        if incarnation > entries.get(group, -1):
            entries[group] = incarnation
    if torn:
        _torn(path)
    return entries, lines, torn


def _torn(path: Path) -> None:
    log.warning("%s: the last line is torn (an append a crash cut short, never acknowledged): "
                "ignored", path)  # fmt: skip


class DeletedRecord:
    """group -> the newest incarnation DeleteTable dropped on this node, durable.

    ``is_deleted`` is for the event loop; ``open``, ``add`` and ``close`` block (file I/O and
    fsync): the node calls them off the loop, one at a time (under its group lock)."""

    def __init__(self, path: Path, entries: dict[str, int] | None = None, lines: int = 0) -> None:
        self.path = path
        self._entries: dict[str, int] = dict(entries or {})
        self._lines = lines  # lines in the file (superseded ones included)
        self._fd: int | None = None
        # A failed append may have left part of its line: the next add rewrites the file whole
        # rather than append after it (a torn line in the middle would stop the next start).
        self._suspect = False

    @classmethod
    def open(cls, node_dir: Path) -> DeletedRecord:
        """The record of ``node_dir`` (empty when DeleteTable never dropped anything here).
        Raises ``RecordCorruption`` naming the file when it is not what ``add`` writes."""
        path = deleted_log(node_dir)
        entries: dict[str, int] = {}
        lines, rewrite = 0, False
        if path.exists():
            entries, lines, rewrite = _read(path)
        legacy = deleted_file(node_dir)
        merged = 0
        if legacy.exists():  # kept, read-only: the record at the upgrade (module's doc)
            old = read_record(legacy, "group -> int (incarnation)", _is_int)
            for group, incarnation in old.items():
                if int(incarnation) > entries.get(group, -1):
                    entries[group] = int(incarnation)
                    merged += 1
        record = cls(path, entries, lines)
        if rewrite or merged:
            record._rewrite()
        if merged:
            log.info("%s: %d groups merged into %s", legacy, merged, path)
        return record

    def is_deleted(self, group: str, incarnation: int) -> bool:
        """Did DeleteTable drop ``group``'s table of ``incarnation`` here? The newest
        incarnation dropped stands for every older one."""
        return incarnation <= self._entries.get(group, -1)

    def entries(self) -> dict[str, int]:
        """A copy of the record: group -> the newest incarnation dropped."""
        return dict(self._entries)

    def add(self, group: str, incarnation: int) -> None:
        """Record the drop of ``group`` of ``incarnation``, durably: returns once its line is
        fsynced (raises, recording nothing, when it could not be). Nothing to write when the
        record already says so (a retried DeleteTable, an older table's late drop)."""
        if self.is_deleted(group, incarnation):
            return
        if self._suspect:
            self._rewrite({**self._entries, group: incarnation})
        else:
            try:
                self._append(_line(group, incarnation).encode())
            except OSError:
                self._suspect = True
                self._close_fd()
                raise
            self._lines += 1
        self._entries[group] = incarnation
        if self._lines > COMPACT_RATIO * len(self._entries) + COMPACT_SLACK:
            try:
                self._rewrite()
            except OSError as exc:  # the entry is durable in the old file or the new one
                self._suspect = True
                log.warning("%s: compaction failed (%s); retried at the next drop", self.path, exc)

    def close(self) -> None:
        self._close_fd()

    def _append(self, line: bytes) -> None:
        fd = self._fd
        if fd is None:
            fd = self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # The file's name must survive a power loss too: fsynced at the first append of
            # each opening, not only when created now (a process that crashed between the
            # creation and this fsync left a file whose name is not durable; the next one
            # found it existing and never fsynced the directory).
            _fsync_dir(self.path.parent)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        fsync(fd)

    def _rewrite(self, entries: dict[str, int] | None = None) -> None:
        """Replace the file by one line per entry of ``entries`` (default: the record's),
        atomically and durably. Compaction: superseded lines go, no entry does."""
        entries = self._entries if entries is None else entries
        self._close_fd()
        replace_durably(self.path, "".join(_line(g, i) for g, i in entries.items()))
        self._lines = len(entries)
        self._suspect = False

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)
