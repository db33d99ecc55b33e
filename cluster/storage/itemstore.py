"""Applied state of one replica: DynamoDB items in SQLite (a B-tree), with the applied index.

Items are kept whole, as DynamoDB typed JSON, under their table name and encoded key values.
Key values are encoded so that comparing the bytes orders them the way DynamoDB orders them
(strings by UTF-8 bytes, binary by bytes, numbers numerically), which makes range queries on the
sort key plain B-tree range scans (keycodec.py). Every change arrives through ``apply_batch``
together with the log index it comes from, in one transaction, so the applied index always
matches the data.

    store = ItemStore(Path("data/n1/p0/items.sqlite"))
    pk = encode_key_value({"S": "user#1"})
    store.apply_batch(7, 2, [PutItem("users", pk, b"", {"id": {"S": "user#1"}})])
    store.get("users", pk, b"")  # -> {"id": {"S": "user#1"}}
    store.applied()  # -> AppliedMark(index=7, term=2, membership=None)

Every row carries a CRC-32C of its key and item, checked whenever a row is read, so a bit flipped
on disk is an error (``ItemCorruption``) rather than a wrong answer; ``open_snapshot`` verifies
the whole file through a connection of its own (scrub).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import msgpack

# The key encoding lives in keycodec.py; callers know it as the store's.
from .keycodec import MAX_DIGITS as MAX_DIGITS
from .keycodec import MAX_EXPONENT as MAX_EXPONENT
from .keycodec import MIN_EXPONENT as MIN_EXPONENT
from .keycodec import decode_key_value as decode_key_value
from .keycodec import encode_key_value as encode_key_value
from .keycodec import prefix_upper_bound as prefix_upper_bound

Item = dict[str, Any]  # DynamoDB typed JSON: {"id": {"S": "a"}, "n": {"N": "5"}}

# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppliedMark:
    """The last log entry applied (0, 0 before any) and the membership recorded last."""

    index: int
    term: int
    membership: bytes | None = None


@dataclass(frozen=True, slots=True)
class PutItem:
    tbl: str
    pk: bytes
    sk: bytes  # b"" for a table without a sort key
    item: Item


@dataclass(frozen=True, slots=True)
class DeleteItem:
    tbl: str
    pk: bytes
    sk: bytes


@dataclass(frozen=True, slots=True)
class DeleteTable:
    tbl: str


StoreOp = PutItem | DeleteItem | DeleteTable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    tbl TEXT NOT NULL, pk BLOB NOT NULL, sk BLOB NOT NULL, item TEXT NOT NULL, crc INTEGER,
    PRIMARY KEY (tbl, pk, sk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB);
"""
_DUMP_VERSION = 1
_PUT = "INSERT OR REPLACE INTO items (tbl, pk, sk, item, crc) VALUES (?, ?, ?, ?, ?)"
_WRITE_MARK = "INSERT OR REPLACE INTO meta VALUES (?, ?), (?, ?)"
_WRITE_MARK_MEMBERS = "INSERT OR REPLACE INTO meta VALUES (?, ?), (?, ?), (?, ?)"


class ItemCorruption(Exception):
    """A row read from disk does not match its checksum: this replica's data is damaged."""


_LEN = struct.Struct(">I")


def row_crc(tbl: str, pk: bytes, sk: bytes, item: str) -> int:
    """CRC-32C of one row (NULL in rows written before checksums existed: not checked)."""
    t, i = tbl.encode(), item.encode()
    # One CRC over the length-prefixed fields: the same value as chaining one CRC per field.
    p = _LEN.pack  # one %-format, not a tuple and a join: every applied item is checksummed
    row = b"%b%b%b%b%b%b%b%b" % (p(len(t)), t, p(len(pk)), pk, p(len(sk)), sk, p(len(i)), i)
    return int(crc32c.crc32c(row))


def _checked(tbl: str, pk: bytes, sk: bytes, item: str, crc: int | None) -> Item:
    if crc is not None and row_crc(tbl, pk, sk, item) != crc:
        raise ItemCorruption(f"row ({tbl!r}, {pk!r}, {sk!r}) fails its checksum")
    try:
        return _load(item)
    except ValueError as exc:
        raise ItemCorruption(f"row ({tbl!r}, {pk!r}, {sk!r}) is not JSON: {exc}") from exc


def _canonical_encoder() -> Callable[[Item], str]:
    """``json.dumps(item, sort_keys=True, separators=(",", ":"))``, without building an encoder
    per call: the C encoder that ``JSONEncoder.encode`` builds for each call, built once
    (every replica encodes every item it applies: 3 us of ~10 per call went to the building).
    Without circular-reference markers (items are decoded data, never circular), so it keeps
    no state between calls and may be shared by threads. Same text: the same encoder, with
    the arguments ``encode`` gives it."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)  # not in the stubs: CPython's C part
    if make is None:  # a Python without the C accelerator
        return encoder.encode
    encode = make(
        None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",",
        True, False, True,
    )  # fmt: skip

    def canonical(item: Item) -> str:
        return "".join(encode(item, 0))

    return canonical


_CANONICAL = _canonical_encoder()


def canonical_json(item: Item) -> str:
    """The one text form of an item that equal items share (sorted keys, no spaces)."""
    return _CANONICAL(item)


def synchronous_level(path: Path) -> str:
    """FULL: ``make_durable`` fsyncs (see ItemStore). Only the TEST-ONLY "no-fsync" mode
    (cluster/storage/__main__.py) replaces this function (with OFF: nothing is ever fsynced)."""
    return "FULL"


class ItemStore:
    """The items and applied index of one replica in one SQLite file. Use from one thread at
    a time (a storage node's: readyio.IOThread's lock)."""

    def __init__(self, path: Path) -> None:
        # Transactions are explicit. The connection may be used by the node's I/O thread or by
        # its event loop while it holds that thread's lock (readyio.py), never by both at once.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # Commits are not fsynced one by one (synchronous=NORMAL: a power loss keeps a
        # consistent store, possibly without its last applies). That is safe because the
        # replica's WAL holds every entry above the store's durable applied index: the WAL
        # only drops entries below a snapshot mark, and ``make_durable`` runs before every
        # mark (replica.py, rebuild.py); recovery re-applies the rest from the WAL.
        (mode,) = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise RuntimeError(f"{path}: SQLite refused WAL journal mode ({mode})")
        self._durable = synchronous_level(path) != "OFF"
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if self._durable else 'OFF'}")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
        if "crc" not in columns:  # a store from before row checksums
            self._db.execute("ALTER TABLE items ADD COLUMN crc INTEGER")
        self.path = path
        # The applied mark as last committed through this connection (the only writer of the
        # file), so that applying does not read it back from SQLite twice per Ready. Set only
        # after a COMMIT succeeded and dropped on any failed transaction (the next read asks
        # SQLite again): a commit whose outcome is unknown must not leave a stale mark that
        # would let an entry be applied twice (correctness over speed).
        self._mark: AppliedMark | None = None
        # Whether a table holds any item, as far as known (absent: ask SQLite once). Every
        # write and transactional read looks up the item's transaction lock (intents.py), in a
        # lock table that is nearly always empty: known empty, that is no SQL at all. Only a
        # probe of SQLite ever records False; a put records True before it is written, and a
        # delete forgets what was known (correctness: a stale False would hide a lock).
        self._has_rows: dict[str, bool] = {}

    def close(self) -> None:
        self._db.close()

    def has_rows(self, tbl: str) -> bool:
        """Whether table ``tbl`` holds any item (what ``get`` would need SQLite to answer)."""
        known = self._has_rows.get(tbl)
        if known is None:
            row = self._db.execute("SELECT 1 FROM items WHERE tbl = ? LIMIT 1", (tbl,)).fetchone()
            known = self._has_rows[tbl] = row is not None
        return known

    def applied(self) -> AppliedMark:
        if self._mark is None:
            self._mark = self._read_applied()
        return self._mark

    def get(self, tbl: str, pk: bytes, sk: bytes) -> Item | None:
        if self._has_rows.get(tbl) is False:  # known empty (has_rows): e.g. a lock table
            return None
        row = self._db.execute(
            "SELECT item, crc FROM items WHERE tbl = ? AND pk = ? AND sk = ?", (tbl, pk, sk)
        ).fetchone()
        return None if row is None else _checked(tbl, pk, sk, row[0], row[1])

    def query(
        self,
        tbl: str,
        pk: bytes,
        *,
        lo: tuple[bytes, bool] | None = None,
        hi: tuple[bytes, bool] | None = None,
        forward: bool = True,
        limit: int | None = None,
        start_after: bytes | None = None,
    ) -> list[tuple[bytes, Item]]:
        """``(sk, item)`` of partition ``pk`` with ``lo <= sk <= hi``, in sk order.

        Each bound is ``(sk, inclusive)``. ``forward=False`` walks down from ``hi``;
        ``start_after`` (exclusive) continues a page in the walking direction.
        """
        sql = "SELECT sk, item, crc FROM items WHERE tbl = ? AND pk = ?"
        args: list[object] = [tbl, pk]
        for bound, op in ((lo, ">"), (hi, "<")):
            if bound is not None:
                sql += f" AND sk {op}{'=' if bound[1] else ''} ?"
                args.append(bound[0])
        if start_after is not None:
            sql += " AND sk > ?" if forward else " AND sk < ?"
            args.append(start_after)
        sql += f" ORDER BY sk {'ASC' if forward else 'DESC'} LIMIT ?"
        args.append(-1 if limit is None else limit)
        return [
            (bytes(sk), _checked(tbl, pk, bytes(sk), item, crc))
            for sk, item, crc in self._db.execute(sql, args)
        ]

    def scan(
        self, tbl: str, *, start_after: tuple[bytes, bytes] | None = None, limit: int | None = None
    ) -> list[tuple[bytes, bytes, Item]]:
        """``(pk, sk, item)`` of table ``tbl`` in (pk, sk) order, after ``start_after``."""
        sql = "SELECT pk, sk, item, crc FROM items WHERE tbl = ?"
        args: list[object] = [tbl]
        if start_after is not None:
            sql += " AND (pk, sk) > (?, ?)"
            args += start_after
        sql += " ORDER BY pk, sk LIMIT ?"
        args.append(-1 if limit is None else limit)
        return [
            (bytes(pk), bytes(sk), _checked(tbl, bytes(pk), bytes(sk), i, crc))
            for pk, sk, i, crc in self._db.execute(sql, args)
        ]

    def count(self, tbl: str | None = None) -> int:
        """Number of items, in one table or in all."""
        if tbl is None:
            (n,) = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
        else:
            (n,) = self._db.execute("SELECT COUNT(*) FROM items WHERE tbl = ?", (tbl,)).fetchone()
        return int(n)

    def apply_batch(
        self, index: int, term: int, ops: Sequence[StoreOp], membership: bytes | None = None
    ) -> None:
        """Apply ``ops`` of log entry ``index`` and record it as applied, atomically and durably.

        ``index`` must be above the applied index (ValueError otherwise, and nothing changes),
        so a replayed entry is never applied twice. ``membership``, when given, is recorded as
        the current one; otherwise the recorded membership stays.
        """
        current = self.applied()
        if index <= current.index:
            raise ValueError(f"entry {index} is not after the applied index {current.index}")
        if membership is None:
            membership = current.membership
        mark = AppliedMark(index, term, membership)
        has_rows = self._has_rows
        puts: list[tuple[str, bytes, bytes, str, int]] = []  # a run of puts: one executemany
        with self._transaction() as db:
            for op in ops:
                if isinstance(op, PutItem):
                    has_rows[op.tbl] = True  # before it is written: never claims "empty" wrongly
                    text = canonical_json(op.item)
                    puts.append((op.tbl, op.pk, op.sk, text, row_crc(op.tbl, op.pk, op.sk, text)))
                    continue
                if puts:  # written before the next op, in order
                    db.executemany(_PUT, puts)
                    puts = []
                if isinstance(op, DeleteItem):
                    has_rows.pop(op.tbl, None)  # may be empty now: the next has_rows asks
                    db.execute(
                        "DELETE FROM items WHERE tbl = ? AND pk = ? AND sk = ?",
                        (op.tbl, op.pk, op.sk),
                    )
                elif isinstance(op, DeleteTable):
                    has_rows.pop(op.tbl, None)
                    db.execute("DELETE FROM items WHERE tbl = ?", (op.tbl,))
                else:
                    raise TypeError(f"not a store operation: {op!r}")
            if puts:
                db.executemany(_PUT, puts)
            self._write_applied(mark)
        self._mark = mark

    def digest(self) -> str:
        """Hex SHA-256 of every item in key order: replicas with equal data have equal digests.

        The applied index is not part of it; compare digests taken at the same index.
        """
        return _digest_rows(self._db)[0]

    def make_durable(self) -> None:
        """Fsync everything committed so far: after this, a power loss keeps every apply.

        One commit at synchronous=FULL fsyncs SQLite's write-ahead log, which holds (or has
        checkpointed, fsynced) every earlier commit."""
        if not self._durable:
            return
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._transaction():
                self._write_applied(self.applied())
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def checkpoint(self) -> None:
        """Copy SQLite's own write-ahead log into the database file (as far as readers allow)."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def open_snapshot(self) -> StoreSnapshot:
        """A read-only view of the store as it is now, on a connection of its own.

        It reads the file afresh (nothing from this connection's page cache), so damage on disk
        shows; it may be used from another thread while this store goes on applying.
        """
        return StoreSnapshot(self.path)

    def pin_view(self) -> DumpView:
        """A read transaction on a connection of its own, pinned to the store as it is now
        (its applied mark included): ``DumpView.dump`` reads it from another thread, later,
        while this store goes on applying, and gets exactly this point in time."""
        return DumpView(self.path)

    def dump(self) -> bytes:
        """All items and the applied mark, as one msgpack document (a snapshot's data): what
        a view pinned now dumps, so that the format has one writer (``DumpView.dump``)."""
        return self.pin_view().dump()

    def restore(self, data: bytes) -> None:
        """Replace the whole content (items and applied mark) with a ``dump``, atomically."""
        doc = msgpack.unpackb(data, raw=False)
        if not isinstance(doc, dict) or doc.get("version") != _DUMP_VERSION:
            raise ValueError("not an item store dump")
        index, term, membership = doc["applied"]
        rows = [
            (str(t), bytes(p), bytes(s), str(i), row_crc(str(t), bytes(p), bytes(s), str(i)))
            for t, p, s, i in doc["rows"]
        ]
        mark = AppliedMark(int(index), int(term), None if membership is None else bytes(membership))
        self._has_rows.clear()  # whatever it held is replaced (also if this fails half-way)
        with self._transaction() as db:
            db.execute("DELETE FROM items")
            db.execute("DELETE FROM meta")
            db.executemany(
                "INSERT INTO items (tbl, pk, sk, item, crc) VALUES (?, ?, ?, ?, ?)", rows
            )
            self._write_applied(mark)
        self._mark = mark

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        self._db.execute(f"BEGIN {mode}")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._mark = None  # whatever SQLite holds now, the next applied() reads it
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _read_applied(self) -> AppliedMark:
        meta = dict(self._db.execute("SELECT k, v FROM meta").fetchall())
        membership = meta.get("membership")
        return AppliedMark(
            int(meta.get("applied_index", 0)),
            int(meta.get("applied_term", 0)),
            None if membership is None else bytes(membership),
        )

    def _write_applied(self, mark: AppliedMark) -> None:
        values = ("applied_index", mark.index, "applied_term", mark.term)
        if mark.membership is None:  # one statement, not executemany: once per applied Ready
            self._db.execute(_WRITE_MARK, values)
        else:
            self._db.execute(_WRITE_MARK_MEMBERS, (*values, "membership", mark.membership))


class DumpView:
    """A pinned read transaction on a separate, read-only connection; ``dump`` reads it once.

    SQLite's WAL mode gives the reader the database as of its first read: later commits of
    the store are invisible to it, so the dump is one consistent point in time, the one whose
    applied mark ``applied`` holds (read in the same transaction). Compaction dumps through a
    view in a thread of its own, so that the node's I/O thread never stalls for a whole-store
    read (6.6 ms at 5k items, 30 ms at 20k): it only opens the view.
    """

    CHUNK = 512  # rows fetched between GIL pauses (see dump)

    def __init__(self, path: Path) -> None:
        self.rows = 0  # items the dump held, once done (compaction.py paces dumps by it)
        self._db = _connect_read_only(path)
        try:
            self._db.execute("BEGIN")
            meta = dict(self._db.execute("SELECT k, v FROM meta").fetchall())  # pins it
        except BaseException:
            self._db.close()
            raise
        membership = meta.get("membership")
        self.applied = AppliedMark(
            int(meta.get("applied_index", 0)),
            int(meta.get("applied_term", 0)),
            None if membership is None else bytes(membership),
        )

    def dump(self, pause: float = 0.0) -> bytes:
        """What ``ItemStore.dump`` returns for the pinned point in time; closes the view.

        ``pause``: seconds to sleep (GIL released) after every ``CHUNK`` rows, so that a dump
        in a background thread leaves the node's event loop and I/O thread their turns
        instead of holding the GIL for up to a switch interval at a time."""
        try:
            packer = msgpack.Packer()
            (count,) = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
            mark = self.applied
            parts = [
                packer.pack_map_header(3),
                packer.pack("version"),
                packer.pack(_DUMP_VERSION),
                packer.pack("applied"),
                packer.pack([mark.index, mark.term, mark.membership]),
                packer.pack("rows"),
                packer.pack_array_header(count),
            ]
            cursor = self._db.execute("SELECT tbl, pk, sk, item FROM items ORDER BY tbl, pk, sk")
            seen = 0
            while rows := cursor.fetchmany(self.CHUNK):
                parts.extend(map(packer.pack, rows))  # a row packs as [tbl, pk, sk, item]
                seen += len(rows)
                if pause:
                    time.sleep(pause)
            if seen != count:  # cannot happen in one read transaction; never send a bad dump
                raise RuntimeError(f"dump read {seen} rows of {count}")
            self.rows = count
            return b"".join(parts)
        finally:
            self.close()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        self._db.close()


@dataclass(frozen=True, slots=True)
class Verification:
    """What a full read of a store found: the digest, rows read, and any damage."""

    digest: str
    items: int
    problems: tuple[str, ...]


class StoreSnapshot:
    """A pinned read transaction on a separate connection; ``verify`` reads every row."""

    def __init__(self, path: Path) -> None:
        self._db = _connect_read_only(path)
        try:
            self._db.execute("BEGIN")
            self._db.execute("SELECT COUNT(*) FROM meta").fetchone()  # pins the snapshot
            self.applied = int(
                dict(self._db.execute("SELECT k, v FROM meta").fetchall()).get("applied_index", 0)
            )
        except sqlite3.DatabaseError:
            self.applied = -1  # unreadable: verify() reports it

    def verify(self, max_problems: int = 20) -> Verification:
        problems: list[str] = []
        try:
            for (line,) in self._db.execute("PRAGMA quick_check"):
                if line != "ok" and len(problems) < max_problems:
                    problems.append(f"sqlite quick_check: {line}")
            digest, items, bad = _digest_rows(self._db, check=True, max_bad=max_problems)
            problems += bad
        except sqlite3.DatabaseError as exc:
            problems.append(f"sqlite: {exc}")
            digest, items = "", 0
        return Verification(digest, items, tuple(problems[:max_problems]))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        self._db.close()


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path``, usable from another thread. The path goes into a
    percent-encoded file URI: written into the URI as it is, a ``?`` or ``#`` in a directory's
    name would end the path there (and a ``%`` be decoded)."""
    uri = f"{path.absolute().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _digest_rows(
    db: sqlite3.Connection, check: bool = False, max_bad: int = 20
) -> tuple[str, int, list[str]]:
    h = hashlib.sha256()
    n = 0
    bad: list[str] = []
    for tbl, pk, sk, item, crc in db.execute(
        "SELECT tbl, pk, sk, item, crc FROM items ORDER BY tbl, pk, sk"
    ):
        n += 1
        for field in (tbl.encode(), bytes(pk), bytes(sk), item.encode()):
            h.update(struct.pack(">I", len(field)))
            h.update(field)
        damaged = check and crc is not None and row_crc(tbl, bytes(pk), bytes(sk), item) != crc
        if damaged and len(bad) < max_bad:
            bad.append(f"row ({tbl!r}, {bytes(pk)!r}, {bytes(sk)!r}) fails its checksum")
    return h.hexdigest(), n, bad


def _load(text: str) -> Item:
    item: Item = json.loads(text)
    return item
