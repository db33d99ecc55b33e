"""Values that cross the consensus core's boundary: log entries, persistent state, messages.

Everything here is an immutable value, so the core, the simulator, the WAL and the transport can
share them without copying. Node ids are strings (``"n1"``); indexes and terms are ints starting
at 1 (0 means "nothing").

    entry = Entry(index=7, term=2, kind=EntryKind.NORMAL, data=b"...")
    msg = AppendEntries(group="p0", src="n1", dst="n2", term=2, prev_index=6, prev_term=2,
                        entries=(entry,), commit=6)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class EntryKind(Enum):
    NORMAL = 0  # an application command (opaque bytes)
    CONFIG = 1  # a membership change: data is the encoded new Membership
    NOOP = 2  # appended by a new leader so that it can commit entries of earlier terms


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """The voting members of a group, and which of them keep only a log (no applied state).

    Log replicas (DESIGN.md: "Log replicas") vote and count towards the write quorum exactly like
    full replicas; the distinction matters only to the application, which skips applying entries
    on them, and to leadership, which a log replica never seeks (it could not serve reads).
    """

    voters: frozenset[str]
    log_only: frozenset[str] = frozenset()

    def encode(self) -> bytes:
        voters = ",".join(sorted(self.voters))
        log_only = ",".join(sorted(self.log_only))
        return f"{voters};{log_only}".encode()

    @staticmethod
    def decode(data: bytes) -> Membership:
        voters, _, log_only = data.decode().partition(";")
        return Membership(
            voters=frozenset(v for v in voters.split(",") if v),
            log_only=frozenset(v for v in log_only.split(",") if v),
        )

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    membership: Membership = field(default_factory=lambda: Membership(frozenset()))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state as of ``meta.index``: opaque bytes to the core."""

    meta: SnapshotMeta
    data: bytes = b""


# --- messages between replicas of one group -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    group: str
    src: str
    dst: str
    term: int
    # The sender's incarnation of ``group`` (``Raft.incarnation``): a group id named again
    # (a table deleted and created under the same name) is another group, and replicas of
    # different incarnations never take each other's messages. 0: not known (a group created
    # before incarnations existed, or by a caller that sends none); it matches only 0.
    incarnation: int = field(default=0, kw_only=True)


@dataclass(frozen=True, slots=True)
class RequestVote(Message):
    last_index: int
    last_term: int
    # Pre-vote (Raft thesis §9.6): "would you vote for me at this term?" without anyone changing
    # term, so a node cut off from the group cannot disrupt it when it comes back.
    pre: bool = False
    # Set when the current leader hands leadership over on purpose; lets the candidate
    # override the voters' leader stickiness (which otherwise protects the leader's lease).
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    # Echoed back so the leader can tell which round of heartbeats an ack belongs to (lease).
    seq: int = 0
    # To a log replica only (0 to others: "not known"): the highest index every full voter
    # is known to hold, from the same acknowledgements the commit index counts. A log replica
    # compacts nothing above it: there its log may be the only second copy of committed
    # entries (``Raft.full_voters_hold``; cluster/storage/compaction.py). Leaders of wire
    # protocol 1 never send it: 0, their log replicas compact nothing (the safe default).
    held: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    success: bool
    # On success: the highest index known to match the leader's log.
    # On failure: a hint where the leader should retry (follower's last index, or conflict).
    match_index: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    snapshot: Snapshot
    seq: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Leader -> chosen successor: start an election immediately (leadership transfer)."""


AnyMessage = (
    RequestVote | VoteResponse | AppendEntries | AppendResponse | InstallSnapshot | TimeoutNow
)
