"""Read marks: how a replica proves that items did not change between two reads of them.

TransactGetItems (``cluster/router/txncoord.py``) reads its items optimistically, as DynamoDB's
read-only transactions do: a first consistent read of every group *marks* the items it reads
for the reader, a second one *checks* the marks. Every write this replica applies to an item
(a put, a delete, an update, a transaction's intent placed on it or resolved) drops every mark
on that item, so a mark still there at the check proves that no write to the item was applied
between the two reads. Marks live in memory only: a replica that restarts, installs a snapshot
or is another node (a new leader) has none, and a check there fails, which makes the reader read
again; never a wrong answer. Readers take no Raft step and never block a writer.

Only the replica's I/O thread touches a ReadMarks (reads run there, and so does applying), so
marking, applying and checking are serialized without a lock.

    marks = ReadMarks()
    marks.mark("r1", [("t", b"a", b"")], now=10.0)
    marks.written([("t", b"a", b"")])
    marks.check("r1", [("t", b"a", b"")])    # [False]: a write came in between
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .intents import LOCK_PREFIX

ItemKey = tuple[str, bytes, bytes]

MARK_TTL = 30.0
"""Seconds after which a reader that never checked (its router died) loses its marks."""


class ReadMarks:
    def __init__(self, ttl: float = MARK_TTL) -> None:
        self.ttl = ttl
        self._marks: dict[ItemKey, set[str]] = {}  # item -> readers holding a mark on it
        self._readers: dict[str, tuple[float, list[ItemKey]]] = {}  # reader -> (when, keys)

    def __len__(self) -> int:
        return len(self._readers)

    def mark(self, reader: str, keys: Sequence[ItemKey], now: float) -> None:
        """Mark ``keys`` for ``reader`` (after reading them, in the same I/O-thread call)."""
        self.expire(now)
        self._readers[reader] = (now, list(keys))
        for key in keys:
            self._marks.setdefault(key, set()).add(reader)

    def check(self, reader: str, keys: Sequence[ItemKey]) -> list[bool]:
        """Whether each of ``keys`` still holds ``reader``'s mark; the reader's marks go."""
        held = [reader in self._marks.get(key, ()) for key in keys]
        self._forget(reader)
        return held

    def written(self, keys: Iterable[ItemKey]) -> None:
        """Items written by an applied batch (intent rows count for their items)."""
        if not self._marks:  # nearly always: marks live only between a transaction's reads
            return
        for tbl, pk, sk in keys:
            item = (tbl.removeprefix(LOCK_PREFIX), pk, sk)
            self._marks.pop(item, None)

    def dropped_table(self, tbl: str) -> None:
        for key in [k for k in self._marks if k[0] == tbl]:
            del self._marks[key]

    def clear(self) -> None:
        """The store was replaced (a snapshot installed): no mark proves anything now."""
        self._marks.clear()
        self._readers.clear()

    def expire(self, now: float) -> None:
        for reader in [r for r, (at, _) in self._readers.items() if now - at > self.ttl]:
            self._forget(reader)

    def _forget(self, reader: str) -> None:
        _, keys = self._readers.pop(reader, (0.0, []))
        for key in keys:
            readers = self._marks.get(key)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._marks[key]
