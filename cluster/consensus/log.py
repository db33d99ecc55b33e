"""The in-memory view of one replica's Raft log: a snapshot followed by entries.

It tracks three marks: ``stable`` (entries up to here are on disk), ``commit`` and ``applied``.
Entries above ``stable`` are "unstable": handed to the application to persist in the next
``Ready``. The log never applies an entry that is not stable, so a crash can only lose what was
never acknowledged.

    log = RaftLog(Snapshot(SnapshotMeta()), entries=[])
    log.append([Entry(1, 1)])
    log.unstable()      # [Entry(1, 1)]  -> persist, then log.mark_stable(1)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from .messages import Entry, EntryKind, Membership, Snapshot


class CompactedError(LookupError):
    """The requested index is at or before the snapshot: only the snapshot can serve it."""


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry], commit: int = 0) -> None:
        self.snapshot = snapshot
        self.entries: list[Entry] = [e for e in entries if e.index > snapshot.meta.index]
        for prev, nxt in zip(self.entries, self.entries[1:], strict=False):
            assert nxt.index == prev.index + 1, "log entries must be contiguous"
        if self.entries:
            assert self.entries[0].index == snapshot.meta.index + 1, "gap after snapshot"
        self.stable = self.last_index()  # whatever we were given came from disk
        self.commit = max(min(commit, self.last_index()), snapshot.meta.index)
        self.applied = snapshot.meta.index
        # A snapshot received from the leader that the application has not installed yet.
        self.pending_snapshot: Snapshot | None = None
        # Indexes of the CONFIG entries in ``entries``, ascending: membership lookups happen
        # on every append, and scanning a log of thousands of entries each time is costly.
        self._configs: list[int] = []
        self._index_configs()

    def _index_configs(self) -> None:
        self._configs = [e.index for e in self.entries if e.kind is EntryKind.CONFIG]

    def _add_configs(self, entries: Sequence[Entry]) -> None:
        self._configs.extend(e.index for e in entries if e.kind is EntryKind.CONFIG)

    # --- queries ---------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.snapshot.meta.index + 1

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot.meta.index

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.meta.term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when the log does not reach it."""
        if index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        if index < self.snapshot.meta.index:
            raise CompactedError(index)
        if index > self.last_index():
            return None
        return self.entries[index - self.first_index()].term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi."""
        if lo <= self.snapshot.meta.index:
            raise CompactedError(lo)
        base = self.first_index()
        return self.entries[lo - base : hi - base]

    def matches(self, index: int, term: int) -> bool:
        try:
            return self.term_at(index) == term
        except CompactedError:
            # Everything in the snapshot is committed, and committed entries match the leader.
            return True

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: may a candidate with this log tail get our vote?"""
        return (last_term, last_index) >= (self.last_term(), self.last_index())

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term of ``index``."""
        term = self.term_at(index)
        while index > self.first_index() and self.term_at(index - 1) == term:
            index -= 1
        return index

    def membership_at(self, index: int) -> Membership:
        """The membership in force at ``index``: the latest config entry at or before it."""
        at = bisect_right(self._configs, index)
        if at == 0:
            return self.snapshot.meta.membership
        return Membership.decode(self.entries[self._configs[at - 1] - self.first_index()].data)

    def latest_config_index(self) -> int:
        return self._configs[-1] if self._configs else self.snapshot.meta.index

    # --- changes ---------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that directly follow the last one (leader path)."""
        if not entries:
            return
        assert entries[0].index == self.last_index() + 1
        self.entries.extend(entries)
        self._add_configs(entries)

    def merge(self, prev_index: int, entries: Sequence[Entry]) -> int:
        """Follower path: merge entries that follow ``prev_index`` (already known to match).

        Only a real conflict (same index, different term) truncates: a stale or duplicated
        message that is a prefix of what we have changes nothing. Returns the last index that is
        now known to match the leader's log.
        """
        for entry in entries:
            if entry.index <= self.snapshot.meta.index:
                continue
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                assert entry.index > self.commit, "a committed entry can never conflict"
                del self.entries[entry.index - self.first_index() :]
                del self._configs[bisect_right(self._configs, entry.index - 1) :]
                self.stable = min(self.stable, entry.index - 1)
            added = [e for e in entries if e.index >= entry.index]
            self.entries.extend(added)
            self._add_configs(added)
            break
        return prev_index + len(entries)

    def has_unstable(self) -> bool:
        """``bool(unstable())`` without building the list (``Raft.has_ready`` runs often)."""
        return self.stable < self.last_index()

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable + 1 - self.first_index() :] if self.entries else []

    def mark_stable(self, index: int, term: int) -> None:
        # Only if the entry is still the one that was persisted (it may have been replaced).
        if index > self.stable and self.matches(index, term):
            self.stable = index

    def has_committable(self) -> bool:
        """``bool(committable())`` without building the list."""
        return min(self.commit, self.stable) > self.applied

    def committable(self) -> list[Entry]:
        """Committed, persisted entries not yet handed out for applying."""
        hi = min(self.commit, self.stable)
        if hi <= self.applied:
            return []
        return self.slice(self.applied + 1, hi + 1)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log's prefix (or all of it) with a snapshot from the leader."""
        meta = snapshot.meta
        if self.matches(meta.index, meta.term) and meta.index <= self.last_index():
            self.entries = [e for e in self.entries if e.index > meta.index]
        else:
            self.entries = []
            self.stable = meta.index
        self.stable = max(self.stable, meta.index)
        self.snapshot = snapshot
        self.commit = max(self.commit, meta.index)
        self.pending_snapshot = snapshot
        self._index_configs()

    def compact(self, snapshot: Snapshot) -> None:
        """The application holds its state up to ``snapshot.meta.index``; drop older entries."""
        assert snapshot.meta.index <= self.applied
        if snapshot.meta.index <= self.snapshot.meta.index:
            return
        self.entries = [e for e in self.entries if e.index > snapshot.meta.index]
        self.snapshot = snapshot
        self._configs = [i for i in self._configs if i > snapshot.meta.index]
