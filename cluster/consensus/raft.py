"""The consensus state machine of one replica of one replication group (Raft, sans-IO).

No sockets, files, clocks, threads or randomness of its own: time is counted in ticks, random
election timeouts come from the ``rng`` passed in, and every effect is handed back in a
:class:`Ready`. The driver (the asyncio storage node in production, the simulator in tests) runs
this loop, and the order matters:

    raft = Raft("n1", "p0", RaftConfig(), rng, membership=Membership(frozenset({"n1","n2","n3"})))
    raft.tick(); raft.step(msg); raft.propose(b"cmd")      # inputs
    if raft.has_ready():
        rd = raft.ready()
        persist(rd.hard_state, rd.snapshot, rd.entries)     # 1. durable (fsync) first
        send(rd.messages)                                   # 2. then talk
        apply(rd.snapshot, rd.committed)                    # 3. then apply
        raft.advance(rd)                                    # 4. and acknowledge

No input may be given between ``ready()`` and ``advance()``. One reordering is allowed: a
leader's AppendEntries, InstallSnapshot and TimeoutNow may be sent before step 1 (thesis
§10.2.1), since they promise nothing about this Ready's persistence and the leader counts its own
entries only in ``advance``; replies and votes always wait for the fsync.

Beyond textbook Raft (Ongaro's thesis), this core has:
- pre-vote (§9.6) and leader stickiness (§4.2.3): a replica that heard from a leader within the
  minimum election timeout ignores vote requests. Together they let a leader hold a **lease**:
- leader lease (§6.4.1): once a quorum acknowledged a heartbeat sent at tick t, no other leader
  can exist before t + election_ticks, so the leader serves strongly consistent reads locally
  until t + lease_ticks (lease_ticks < election_ticks leaves room for clock drift). A restarted
  replica has forgotten whom it heard from, so it refuses votes for its first election_ticks.
- check-quorum: a leader that has not heard from a quorum for election_ticks steps down.
- fast failure detection: election timeouts are random in [e, e + 2) ticks after hearing a
  leader (one election timeout, about, replaces a crashed, paused or cut-off leader; a wider
  range would only delay the first replica to time out, since two that time out together do not
  split the vote: the higher id yields), in [e, 1.5e) after a campaign that did not end the
  election (rivals drift apart); a pre-candidate repeats its pre-vote every tick (voters that
  heard the old leader a little later grant it as soon as their stickiness ends, not a
  heartbeat later); a new leader announces itself in the Ready that makes it leader.
- single-member membership changes (§4.1) that take effect when appended, and leadership
  transfer (§3.10).
- lost data: a follower that rejects entries below what it acknowledged has lost its log (a
  wiped disk, a dropped replica created again). The leader counts it from what it holds now
  (not at the old match, from which it would resend forever what the follower rejects),
  records the loss in ``status()`` and refills it (with a snapshot if the log is compacted).
  A replica that knows it starts without its state (``rejoin``) neither votes nor campaigns
  until a leader has brought it up to that leader's commit index: its vote record is gone.
- replicas without applied state (log replicas, quarantined: ``set_can_lead(False)``) do not
  campaign, except as a stand-in when a voter they refused lacks entries they hold (otherwise
  a full member and a log replica ahead of it could never elect anyone); the driver hands a
  stand-in's leadership to a full member.
- first leaders in turns (``RaftConfig.spread_first_leaders``; storage nodes): a brand-new
  group's members first campaign one after the other, rotated by the group's number, so that
  many groups' first leaders spread over the members (``_first_leader_rank``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from .log import CompactedError, RaftLog
from .messages import (
    AnyMessage,
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Membership,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    VoteResponse,
)

# A catch-up tick (``Raft.tick``) starts an election or steps a leader down only once the
# silence it reveals lasts this many times the usual timeout.
CATCH_UP_PATIENCE = 3


class RandomSource(Protocol):
    def randrange(self, start: int, stop: int) -> int: ...


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeaderError(Exception):
    """A proposal reached a replica that is not the leader; ``leader`` is the best hint."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader})")
        self.leader = leader


class ProposalRejectedError(Exception):
    """The leader cannot take this proposal now (e.g. a membership change is in flight)."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    election_ticks: int = 10  # minimum election timeout; see _random_timeout
    heartbeat_ticks: int = 2
    lease_ticks: int = 8  # must be < election_ticks: the margin absorbs clock drift
    max_entries_per_message: int = 64
    max_inflight_entries: int = 512  # pipelined but unacknowledged entries per follower
    # A brand-new group's voters first campaign one after the other, in an order rotated by
    # the group's number, so that the first leaders of many groups spread over the members
    # (see Raft._first_leader_rank). Off: the first replica to time out leads (the simulator
    # and scripted tests keep it off; storage nodes turn it on).
    spread_first_leaders: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.lease_ticks < self.election_ticks:
            raise ValueError("lease_ticks must be positive and below election_ticks")
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("heartbeat_ticks must be positive and below election_ticks")


@dataclass(slots=True)
class Ready:
    """Effects to carry out, in order: persist, send, apply. Then ``advance``."""

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None  # install (persist and load) before anything else
    entries: list[Entry] = field(default_factory=list)  # persist; may overwrite a suffix
    messages: list[AnyMessage] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)  # apply, in order
    # False when persisting this Ready promises nothing (no entries, no snapshot, term and vote
    # unchanged: at most the commit index moved, which a restart learns again from a leader):
    # its messages may leave at once and its hard state need not be fsynced before them
    # (etcd's MustSync). Entries, snapshots, terms and votes always wait for the fsync.
    must_sync: bool = True


@dataclass(frozen=True, slots=True)
class FollowerStatus:
    """What a leader knows about one voter: how far its log matches, when it last answered."""

    match: int
    silent_ticks: int  # ticks since the leader last heard from it
    lost_data: int = 0  # times it turned out to have lost entries it had acknowledged


@dataclass(frozen=True, slots=True)
class Status:
    """A read-only picture of the replica, the one way a driver looks inside the core."""

    id: str
    group: str
    role: Role
    term: int
    leader: str | None
    commit: int
    applied: int
    last_index: int
    membership: Membership
    lease_valid: bool
    snapshot: SnapshotMeta = field(default_factory=SnapshotMeta)  # where the log starts
    config_pending: bool = False  # a membership change is appended but not committed yet
    transfer_target: str | None = None  # leadership is being handed to this member
    rejoining: bool = False  # lost its state: no votes, no campaign until caught up
    # Leader only: every other voter's progress (empty on followers).
    followers: dict[str, FollowerStatus] = field(default_factory=dict)


@dataclass(slots=True)
class Progress:
    """What the leader knows about one follower."""

    next: int
    match: int = 0
    probing: bool = True  # unsure where logs diverge: one message per heartbeat until it knows
    acked_seq: int = 0  # newest heartbeat round this follower acknowledged (for the lease)
    last_active: int = 0  # leader's tick when it last heard from this follower (check-quorum)
    lost_data: int = 0  # times it rejected entries below its match (it lost its log)


class Raft:
    def __init__(
        self,
        id: str,
        group: str,
        config: RaftConfig,
        rng: RandomSource,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: list[Entry] | None = None,
        membership: Membership | None = None,
        incarnation: int = 0,
    ) -> None:
        """Start (or restart) a replica from what is on its disk.

        ``membership`` bootstraps a brand-new group (applied when the log and snapshot are
        empty); a replica joining an existing group passes none and learns it from the leader.
        ``incarnation``: with ``group``, the identity of the group (``step``).
        """
        self.id = id
        self.group = group
        self.incarnation = incarnation
        # The highest incarnation of this group a message came from, when above ours: this
        # replica belongs to a group that was deleted and named again (0: none seen).
        self.superseded_by = 0
        self.config = config
        self.rng = rng
        if snapshot is None:
            snapshot = Snapshot(SnapshotMeta(membership=membership or Membership(frozenset())))
        hard_state = hard_state or HardState()
        self.log = RaftLog(snapshot, entries or [], commit=hard_state.commit)
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.membership = self.log.membership_at(self.log.last_index())
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.messages: list[AnyMessage] = []
        self.now = 0  # ticks since start; only ever compared with itself
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # Ticks since we last heard from a leader. A restarted replica counts from 0: it may have
        # acknowledged a leader's lease just before crashing, so it must not vote too soon.
        self.leader_contact_elapsed = 0
        self.randomized_timeout = self._random_timeout()
        self.seq = 0  # heartbeat round, echoed by followers (lease)
        self.seq_sent_at: dict[int, int] = {}
        self.lease_until = -1
        self.lease_forfeited = False
        self.transfer_target: str | None = None
        # An input (``set_can_lead``): False when this replica holds no applied state (a log
        # replica, or one quarantined for corruption); it then never campaigns.
        self.can_lead = True
        # Set by ``rejoin``: the commit index to reach before voting again (-1: not known
        # until a leader tells us); None for a replica that kept its state.
        self.rejoin_until: int | None = None
        # A follower: the current leader's latest ``AppendEntries.held`` (``full_voters_hold``);
        # 0 (nothing known) until its leader says, and again whenever the leader may change.
        self.full_held = 0
        # When (``now``) we last refused a voter's (pre-)vote because its log lacks entries
        # ours holds; None once a leader is heard. See ``_stands_in``.
        self.refused_behind_at: int | None = None
        # A leader's broadcasts owed since the last ``ready`` (see ``_flush_broadcasts``).
        self._append_due = False
        # The commit index moved since followers were last sent it; told by the next append
        # or, at the latest, the next tick (see ``_maybe_commit``).
        self._commit_untold = False
        self._prev_hard_state = self._hard_state()

    # --- public inputs ---------------------------------------------------------------------

    def tick(self, catch_up: bool = False) -> None:
        """One tick of time. ``catch_up``: the driver could not tick at this tick's instant (its
        event loop stalled) and the messages that arrived meanwhile are not stepped yet. Such a
        tick counts time like any other (leases, stickiness), but a silence it reveals starts
        nothing (no campaign, no check-quorum step-down) until it lasts CATCH_UP_PATIENCE times
        as long: the next on-time tick decides, after those messages. Otherwise a stall of
        election_ticks (0.5 s) made every leader of the node step down and its followers
        campaign, all at once, whenever the machine was starved for CPU."""
        self.now += 1
        self.leader_contact_elapsed += 1
        if self.role is Role.LEADER:
            self._tick_leader(catch_up)
        else:
            self.election_elapsed += 1
            timeout = self.randomized_timeout * (CATCH_UP_PATIENCE if catch_up else 1)
            if self.election_elapsed >= timeout and self._may_campaign():
                self._campaign(pre=True)
            elif self.role is Role.PRE_CANDIDATE:
                # Voters that heard from the old leader a little later than we did ignore us
                # until their own stickiness runs out; asking again every tick (a pre-vote
                # changes nobody's state) wins within a tick of when they may vote. (Every
                # heartbeat, as before, cost a failover 50 ms more in half the cases: the
                # voter's ticks run up to one tick behind ours.)
                self._request_votes(self.term + 1, pre=True)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; returns (index, term) under which it will commit if it commits."""
        if self.role is Role.LEADER and not self.can_lead:
            # A leader without applied state (a stand-in, see ``_stands_in``, or quarantined
            # since) could never give the result; the full member it hands over to can.
            raise ProposalRejectedError("this leader holds no state: it hands leadership over")
        return self._propose_entry(EntryKind.NORMAL, data)

    def propose_membership(self, new: Membership) -> tuple[int, int]:
        """Add or remove exactly one voter (or flip one member's log-only flag)."""
        if self.log.latest_config_index() > self.log.commit:
            raise ProposalRejectedError("a membership change is still in flight")
        if not self._committed_in_current_term():
            raise ProposalRejectedError("the new leader has not committed an entry yet")
        changed = len(new.voters ^ self.membership.voters)
        if changed > 1 or (changed == 0 and new.log_only == self.membership.log_only):
            raise ProposalRejectedError("exactly one member may change at a time")
        return self._propose_entry(EntryKind.CONFIG, new.encode())

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to ``target`` as soon as its log has caught up."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if target == self.id or target not in self.membership.voters:
            return
        self.transfer_target = target
        self.election_elapsed = 0  # it has about an election timeout to finish (§3.10)
        # The successor will campaign past the voters' stickiness, so our lease guarantee is
        # void for the rest of this term, even if the transfer is abandoned (TimeoutNow may
        # still be in flight).
        self.lease_until = -1
        self.lease_forfeited = True
        self._maybe_send_timeout_now()

    def successor(self) -> str | None:
        """Whom a leader without applied state (``set_can_lead(False)``) should hand over to:
        the full voter holding the most of the log among those that answered this term within
        the last election timeout (a member cut off since would never take it); None while
        none has."""
        if self.role is not Role.LEADER:
            return None
        live = [
            (pr.match, node)
            for node, pr in self.progress.items()
            if node != self.id
            and node in self.membership.voters - self.membership.log_only
            and pr.match > 0
            and self.now - pr.last_active < self.config.election_ticks
        ]
        return max(live)[1] if live else None

    def set_can_lead(self, can_lead: bool) -> None:
        """Whether this replica may campaign (the application knows if it has usable state)."""
        self.can_lead = can_lead

    def rejoin(self) -> None:
        """This replica starts without the state it once had (its data was lost, or it is a
        new copy of a member): it may have voted in a term it no longer remembers, so it
        neither votes nor campaigns until a leader has brought its commit index up to that
        leader's. It still acknowledges entries, so the leader refills it."""
        self.rejoin_until = -1

    def full_voters_hold(self) -> int:
        """The highest index every full voter (a voter that is not log-only) is known to hold:
        below it, a log replica's own log is not needed for durability, above it, it may be
        the only second copy of committed entries (a full member that lags or is down). The
        application compacts a log replica's log only below it (correctness over disk: the
        log grows while a full member lags). A leader knows it from its followers' match (the
        acknowledgements the commit index counts) and its own stable log; a follower from
        its leader's latest AppendEntries (0 until one says, and after any change of leader)."""
        if self.role is not Role.LEADER:
            return self.full_held
        held = [
            self.log.stable if v == self.id else self.progress[v].match if v in self.progress else 0
            for v in self.membership.voters - self.membership.log_only
        ]
        return min(held, default=0)

    def log_state(self) -> tuple[HardState, SnapshotMeta, list[Entry]]:
        """Hard state, snapshot mark and every entry after it: what a stopped replica's files
        are rebuilt from (``cluster.storage.rebuild``)."""
        return self._hard_state(), self.log.snapshot.meta, list(self.log.entries)

    def membership_at(self, index: int) -> Membership:
        """The membership in effect at log ``index`` (at or after the snapshot)."""
        return self.log.membership_at(index)

    def snapshot(self) -> Snapshot:
        """The snapshot the log starts from (its data is empty on a log replica)."""
        return self.log.snapshot

    def committed_entries(self, lo: int, hi: int) -> list[Entry]:
        """Committed entries with ``lo <= index < hi`` still in the log (not compacted away)."""
        return self.log.slice(lo, min(hi, self.log.commit + 1))

    def step(self, msg: AnyMessage) -> None:
        """Take one message. Only those of this group (id AND incarnation) sent to us count:
        a group id is used again when its table is deleted and created under the same name,
        and a replica of the deleted group (on a node that was down during the delete) holds
        another log at the same indexes, often in a higher term. Were its messages taken, it
        could win the new group's election or pass its log for the leader's, and entries the
        new group committed would be lost. A message of a newer incarnation says this replica
        belongs to the deleted group: ``superseded_by`` tells the driver to retire it."""
        if msg.group != self.group or msg.dst != self.id:
            return
        if msg.incarnation != self.incarnation:
            if msg.incarnation > self.incarnation:
                self.superseded_by = max(self.superseded_by, msg.incarnation)
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and self._in_lease():
                    return  # stickiness: a live leader exists; ignore, keep our term
                if msg.pre:
                    self._handle_vote_request(msg)  # pre-votes never change our term
                    return
            elif isinstance(msg, VoteResponse) and msg.pre and msg.granted:
                pass  # a granted pre-vote carries the future term; it is not a newer leader
            else:
                # Any other message from a higher term: somebody knows more than we do.
                leader = msg.src if isinstance(msg, AppendEntries | InstallSnapshot) else None
                self._become_follower(msg.term, leader)
            if isinstance(msg, RequestVote):
                self._become_follower(msg.term, None)
        elif msg.term < self.term:
            if isinstance(msg, AppendEntries | InstallSnapshot):
                # A deposed leader, or we raised our term while cut off (§9.6 discussion): tell
                # it our term so that whichever side is stale moves on.
                self._send(
                    AppendResponse(
                        self.group,
                        self.id,
                        msg.src,
                        self.term,
                        False,
                        0,
                        incarnation=self.incarnation,
                    )
                )
            elif isinstance(msg, RequestVote) and msg.pre:
                refused = VoteResponse(
                    self.group,
                    self.id,
                    msg.src,
                    self.term,
                    False,
                    pre=True,
                    incarnation=self.incarnation,
                )
                self._send(refused)
            return

        match msg:
            case RequestVote():
                self._handle_vote_request(msg)
            case VoteResponse():
                self._handle_vote_response(msg)
            case AppendEntries():
                self._handle_append(msg)
            case AppendResponse():
                self._handle_append_response(msg)
            case InstallSnapshot():
                self._handle_snapshot(msg)
            case TimeoutNow():
                if self._may_campaign(ignore_log_only=False):
                    self._campaign(pre=False, transfer=True)

    def compact(self, index: int, data: bytes) -> None:
        """The application's state at ``index`` (<= applied) is ``data``; drop older entries."""
        if index <= self.log.snapshot.meta.index:
            return
        term = self.log.term_at(index)
        assert term is not None and index <= self.log.applied
        meta = SnapshotMeta(index, term, self.log.membership_at(index))
        self.log.compact(Snapshot(meta, data))

    # --- outputs ---------------------------------------------------------------------------

    def has_ready(self) -> bool:
        # Asked after every input of every group: compared field by field, no lists built.
        log, prev = self.log, self._prev_hard_state
        return bool(
            self.messages
            or self._append_due
            or log.has_unstable()
            or log.pending_snapshot
            or self.term != prev.term
            or self.vote != prev.vote
            or log.commit != prev.commit
            or log.has_committable()
        )

    def ready(self) -> Ready:
        self._flush_broadcasts()
        rd = Ready()
        hs, prev = self._hard_state(), self._prev_hard_state
        if hs != prev:
            rd.hard_state = hs
        if self.log.pending_snapshot is not None:
            rd.snapshot = self.log.pending_snapshot
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
        rd.entries = self.log.unstable()
        rd.messages, self.messages = self.messages, []
        rd.committed = self.log.committable()
        rd.must_sync = bool(
            rd.entries or rd.snapshot is not None or hs.term != prev.term or hs.vote != prev.vote
        )
        return rd

    def advance(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if rd.snapshot is not None and self.log.pending_snapshot is rd.snapshot:
            self.log.pending_snapshot = None
        if rd.entries:
            last = rd.entries[-1]
            self.log.mark_stable(last.index, last.term)
            if self.role is Role.LEADER:
                self._progress(self.id).match = self.log.stable
                self._maybe_commit()
        if rd.committed:
            self.log.applied = rd.committed[-1].index
            if self._removed_self_committed():
                self._become_follower(self.term, None)

    def status(self) -> Status:
        return Status(
            id=self.id,
            group=self.group,
            role=self.role,
            term=self.term,
            leader=self.leader,
            commit=self.log.commit,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            membership=self.membership,
            lease_valid=self.lease_read_index() is not None,
            snapshot=self.log.snapshot.meta,
            config_pending=self.log.latest_config_index() > self.log.commit,
            transfer_target=self.transfer_target,
            rejoining=self.rejoin_until is not None,
            followers={
                node: FollowerStatus(pr.match, self.now - pr.last_active, pr.lost_data)
                for node, pr in self.progress.items()
                if node != self.id
            },
        )

    @property
    def applied_index(self) -> int:
        """The last entry handed to the application to apply (cheap; for hot paths)."""
        return self.log.applied

    def lease_read_index(self) -> int | None:
        """If this leader may serve a strongly consistent read now, the index to wait for.

        The read is linearizable once the application has applied up to the returned index:
        the lease guarantees no other leader exists, and an entry of our own term being
        committed guarantees our commit index covers every write acknowledged before the read.
        """
        if self.role is not Role.LEADER or self.now >= self.lease_until:
            return None
        if not self._committed_in_current_term():
            return None
        return self.log.commit

    # --- elections -------------------------------------------------------------------------

    def _random_timeout(self, after_campaign: bool = False) -> int:
        """Ticks of silence before campaigning: [e, e + 2) after hearing a leader, so that the
        first replica to notice its loss campaigns as soon as the voters may grant it; after a
        campaign of our own that did not end the election, [e, 1.5e), so that two rivals whose
        campaigns collided (each asking when the other already asks) drift apart."""
        e = self.config.election_ticks
        ticks = self.rng.randrange(e, e + (max(2, e // 2) if after_campaign else 2))
        if self.config.spread_first_leaders and self.term == 0 and not after_campaign:
            ticks += 2 * e * self._first_leader_rank()
        return ticks

    def _first_leader_rank(self) -> int:
        """This replica's turn (0: first) to campaign in a brand-new group (term 0).

        The voters sorted, rotated by the group's number: the trailing digits of its id
        ("orders.p3" -> 3), or a stable checksum of the id when it has none. Without it, the
        member that started first times out first in every group and leads all of them (all
        twelve of bench/replication.py's groups on one node): every leader's work then queues
        on that one node while the others idle. With it, partition i of a table is first led
        by the i-th member in turn. Each turn is two election timeouts later than the one
        before, so a member that is down delays the first election by that much, and only
        that: liveness only; any member may still campaign and win (safety is unchanged).
        """
        voters = sorted(self.membership.voters - self.membership.log_only)  # who may lead
        if self.id not in voters:
            return 0
        digits = len(self.group) - len(self.group.rstrip("0123456789"))
        number = int(self.group[-digits:]) if digits else zlib.crc32(self.group.encode())
        return (voters.index(self.id) - number) % len(voters)

    def _in_lease(self) -> bool:
        if self.role is Role.LEADER:
            return True
        return self.leader_contact_elapsed < self.config.election_ticks

    def _may_campaign(self, ignore_log_only: bool = True) -> bool:
        if self.id not in self.membership.voters or self.rejoin_until is not None:
            return False
        # A log replica cannot serve reads, so it never seeks leadership on its own...
        if self.can_lead and not (ignore_log_only and self.id in self.membership.log_only):
            return True
        return self._stands_in()  # ... unless only it can end the election

    def _stands_in(self) -> bool:
        """A replica that may not lead (log replica, quarantined) campaigns all the same when
        it refused a voter, within the last two election timeouts, because that voter's log
        lacks entries ours holds. Without it, a group whose live voters are one full member
        and one log replica that holds more of the log (the last entries the cut-off leader
        sent reached only the log replica) would stay leaderless as long as the cut lasts: the
        full member cannot win our vote, and we would never campaign. As leader we bring the
        full member up to date; the driver hands leadership to it then (a transfer, §3.10), as
        it does for any leader without applied state. Campaigning is always safe; the rule
        only keeps a replica without state from leading when another can."""
        return (
            self.refused_behind_at is not None
            and self.now - self.refused_behind_at <= 2 * self.config.election_ticks
        )

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        self.election_elapsed = 0
        self.randomized_timeout = self._random_timeout(after_campaign=True)
        if pre:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
            term = self.term
        self.leader = None
        self.votes = {self.id: True}
        if self._tally() >= self.membership.quorum():
            self._on_election_won(pre)
            return
        self._request_votes(term, pre, transfer)

    def _request_votes(self, term: int, pre: bool, transfer: bool = False) -> None:
        """Ask every voter that has not answered yet for its (pre-)vote in ``term``."""
        for peer in sorted(self.membership.voters - {self.id} - set(self.votes)):
            self._send(
                RequestVote(
                    self.group,
                    self.id,
                    peer,
                    term,
                    self.log.last_index(),
                    self.log.last_term(),
                    pre=pre,
                    transfer=transfer,
                    incarnation=self.incarnation,
                )
            )

    def _handle_vote_request(self, msg: RequestVote) -> None:
        # Votes go to non-members too: the candidate may be a member of a newer membership.
        can_vote = (
            self.vote == msg.src
            or (self.vote is None and self.leader is None)
            or (msg.pre and msg.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(msg.last_index, msg.last_term)
        granted = can_vote and up_to_date
        if can_vote and not up_to_date and msg.src in self.membership.voters:
            self.refused_behind_at = self.now  # we may have to stand in (``_stands_in``)
        if self.rejoin_until is not None:
            granted = False  # our vote record went with our data (``rejoin``)
        if granted and msg.pre and self._yield_to_self(msg):
            granted = False
        if granted and not msg.pre:
            self.vote = msg.src
            self.election_elapsed = 0
        term = msg.term if msg.pre and granted else self.term
        reply = VoteResponse(
            self.group, self.id, msg.src, term, granted, pre=msg.pre, incarnation=self.incarnation
        )
        self._send(reply)

    def _yield_to_self(self, msg: RequestVote) -> bool:
        """Two replicas that time out together would grant each other's pre-votes, both
        campaign, and split the vote (another election timeout lost). A replica that has just
        started its own pre-vote therefore refuses a rival with an equal log and a higher id:
        exactly one of the two goes on. Refusing a pre-vote is always safe; the window is
        short, so a rival that cannot hear us still wins when it asks again."""
        return (
            self.role is Role.PRE_CANDIDATE
            and self.election_elapsed < self.config.heartbeat_ticks
            and (msg.last_index, msg.last_term) == (self.log.last_index(), self.log.last_term())
            and msg.src > self.id
        )

    def _handle_vote_response(self, msg: VoteResponse) -> None:
        expected = Role.PRE_CANDIDATE if msg.pre else Role.CANDIDATE
        if self.role is not expected or msg.src not in self.membership.voters:
            return
        self.votes[msg.src] = msg.granted
        if self._tally() >= self.membership.quorum():
            self._on_election_won(msg.pre)
        elif len(self.votes) - self._tally() >= self.membership.quorum():
            self._become_follower(self.term, None)

    def _tally(self) -> int:
        return sum(1 for node, ok in self.votes.items() if ok and node in self.membership.voters)

    def _on_election_won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False)
        else:
            self._become_leader()

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term > self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader = leader
        self.full_held = 0  # the next leader says again (``full_voters_hold``)
        self.progress = {}
        self.votes = {}
        self.lease_until = -1
        self.transfer_target = None
        self.election_elapsed = 0
        self.randomized_timeout = self._random_timeout()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self.transfer_target = None
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        self.lease_until = -1
        self.lease_forfeited = False
        self.seq_sent_at = {}
        nxt = self.log.last_index() + 1
        self.progress = {
            p: Progress(next=nxt, last_active=self.now) for p in self.membership.voters
        }
        self._progress(self.id).match = self.log.stable
        # A no-op of our own term: committing it commits everything before it (§5.4.2) and
        # tells us our commit index is current (needed before serving lease reads).
        self._propose_entry(EntryKind.NOOP, b"")
        # Announce ourselves now, not at the first heartbeat tick: followers learn the leader
        # (and stop campaigning), routers' hints turn to us, the no-op starts replicating.
        self.heartbeat_elapsed = 0
        self._broadcast(heartbeat=True)

    # --- replication (leader) --------------------------------------------------------------

    def _tick_leader(self, catch_up: bool = False) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        window = self.config.election_ticks * (CATCH_UP_PATIENCE if catch_up else 1)
        if not self._check_quorum(window):
            self._become_follower(self.term, None)
            return
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            self.transfer_target = None  # a transfer that did not finish in time is abandoned
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks or self._commit_untold:
            self.heartbeat_elapsed = 0
            self._broadcast(heartbeat=True)

    def _check_quorum(self, window: int) -> bool:
        """Has a quorum of voters been heard from within the last ``window`` ticks (§6.2)?

        Checked on every tick, so a leader cut off from a quorum steps down election_ticks
        after it last heard from one, not up to twice that (as a fixed check window would).
        """
        active = sum(
            1
            for node, pr in self.progress.items()
            if node in self.membership.voters
            and (node == self.id or self.now - pr.last_active < window)
        )
        return active >= self.membership.quorum()

    def _progress(self, node: str) -> Progress:
        if node not in self.progress:
            self.progress[node] = Progress(next=self.log.last_index() + 1, last_active=self.now)
        return self.progress[node]

    def _propose_entry(self, kind: EntryKind, data: bytes) -> tuple[int, int]:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.transfer_target is not None:
            raise ProposalRejectedError("leadership is being transferred")
        entry = Entry(self.log.last_index() + 1, self.term, kind, data)
        self.log.append([entry])
        if kind is EntryKind.CONFIG:
            self._apply_membership()
        self._append_due = True  # sent with the others proposed before the next ready()
        return entry.index, entry.term

    def _apply_membership(self) -> None:
        """Membership takes effect as soon as it is in the log (thesis §4.1)."""
        self.membership = self.log.membership_at(self.log.last_index())
        if self.role is Role.LEADER:
            for node in self.membership.voters:
                self._progress(node)
            for node in list(self.progress):
                if node not in self.membership.voters and node != self.id:
                    del self.progress[node]
            self._maybe_commit()

    def _broadcast(self, heartbeat: bool) -> None:
        if heartbeat:
            self.seq += 1
            self.seq_sent_at[self.seq] = self.now
        for peer in sorted(self.progress):
            if peer != self.id:
                self._send_append(peer, heartbeat)
        # Told: what was sent carries the commit index. A follower that was sent nothing (a
        # probe in flight, a full window) learns it at the next heartbeat at the latest.
        self._commit_untold = False
        if heartbeat:
            self._update_lease()  # a group of one holds its own lease

    def _send_append(self, peer: str, heartbeat: bool) -> None:
        """Send ``peer`` what it lacks from ``next`` on.

        While probing (after a rejection or a snapshot), one message per heartbeat or response
        and ``next`` stays put; once a success says where the logs match, entries are pipelined
        (``next`` moves ahead of ``match``) up to max_inflight_entries.
        """
        pr = self._progress(peer)
        if pr.next <= self.log.snapshot.meta.index:
            if not self.can_lead and peer not in self.membership.log_only:
                # A stand-in's snapshot holds no state: a full member that got it would become
                # a log replica too. What it lacks is only on the full members.
                return
            if heartbeat or not pr.probing:
                snap = self.log.snapshot
                if peer in self.membership.log_only:
                    # A log replica keeps only the log after the snapshot: it gets the
                    # snapshot's metadata without its data (empty data means "no state").
                    snap = Snapshot(snap.meta)
                self._send(
                    InstallSnapshot(
                        self.group,
                        self.id,
                        peer,
                        self.term,
                        snap,
                        self.seq,
                        incarnation=self.incarnation,
                    )
                )
                pr.probing = True  # until it acknowledges the snapshot
            return
        if pr.probing and not heartbeat:
            return
        entries: list[Entry] = []
        if pr.next - 1 - pr.match < self.config.max_inflight_entries:
            entries = self.log.slice(pr.next, pr.next + self.config.max_entries_per_message)
        if not entries and not heartbeat:
            return
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        assert prev_term is not None
        msg = AppendEntries(
            self.group,
            self.id,
            peer,
            self.term,
            prev,
            prev_term,
            tuple(entries),
            self.log.commit,
            self.seq,
            self.full_voters_hold() if peer in self.membership.log_only else 0,
            incarnation=self.incarnation,
        )
        self._send(msg)
        if entries and not pr.probing:
            pr.next = entries[-1].index + 1

    def _handle_append_response(self, msg: AppendResponse) -> None:
        if self.role is not Role.LEADER or msg.src not in self.progress:
            return
        pr = self._progress(msg.src)
        pr.last_active = self.now
        pr.acked_seq = max(pr.acked_seq, msg.seq)
        self._update_lease()
        if msg.success:
            pr.probing = False  # we know where the logs match: pipeline from here on
            pr.next = max(pr.next, msg.match_index + 1)
            if msg.match_index > pr.match:
                pr.match = msg.match_index
                self._maybe_commit()
                self._maybe_send_timeout_now()
            if pr.next <= self.log.last_index():
                self._send_append(msg.src, heartbeat=False)
        else:
            if msg.match_index < pr.match:
                # It no longer holds entries it acknowledged: its log was lost. Count it from
                # what it has now (commit never moves back) and refill it from there.
                pr.match = msg.match_index
                pr.lost_data += 1
            # Rewind to the follower's hint, never below what is known to match.
            pr.next = max(pr.match + 1, min(pr.next - 1, msg.match_index + 1))
            pr.probing = True
            self._send_append(msg.src, heartbeat=True)

    def _maybe_commit(self) -> None:
        matches = sorted(
            (self.progress[n].match if n in self.progress else 0) for n in self.membership.voters
        )
        if not matches:
            return
        candidate = matches[len(matches) - self.membership.quorum()]
        # Only entries of the current term commit by counting replicas (§5.4.2).
        if candidate > self.log.commit and self.log.term_at(candidate) == self.term:
            self.log.commit = candidate
            # Followers learn it from the next AppendEntries (the next proposal's), or from
            # the next tick's heartbeat (within tick_seconds): not from a round of its own.
            # Only they apply later; nothing waits on it (the leader answers its clients once
            # it applied, reads on followers are eventually consistent, a new leader commits
            # everything before its own first entry). A round per commit step cost each write,
            # with many groups, 2 more messages out and 2 back and a Ready on each follower.
            self._commit_untold = True

    def _flush_broadcasts(self) -> None:
        """Send what proposals since the last ``ready`` owe the followers: one AppendEntries
        per follower for all of them, not one per proposal (32 writes proposed together cost
        a follower 32 messages to step and answer, and the leader 32 answers). Only when
        messages leave changes, not what they say: each still carries every entry the
        follower lacks (within the in-flight window) and the commit index as of now."""
        append, self._append_due = self._append_due, False
        if append and self.role is Role.LEADER:
            self._broadcast(heartbeat=False)

    def _update_lease(self) -> None:
        voters = self.membership.voters
        seqs = sorted(
            (self.seq if n == self.id else self._progress(n).acked_seq for n in voters),
            reverse=True,
        )
        if not seqs or self.id not in voters or self.lease_forfeited:
            return
        quorum_seq = seqs[self.membership.quorum() - 1]
        sent = self.seq_sent_at.get(quorum_seq)
        if sent is not None:
            self.lease_until = max(self.lease_until, sent + self.config.lease_ticks)
        for old in [s for s in self.seq_sent_at if s < quorum_seq]:
            del self.seq_sent_at[old]

    def _committed_in_current_term(self) -> bool:
        try:
            return self.log.term_at(self.log.commit) == self.term
        except CompactedError:
            return False

    def _removed_self_committed(self) -> bool:
        """A leader removed from the group leads until that change commits, then steps down."""
        return (
            self.role is Role.LEADER
            and self.id not in self.membership.voters
            and self.log.latest_config_index() <= self.log.commit
        )

    def _maybe_send_timeout_now(self) -> None:
        target = self.transfer_target
        if target is None or self._progress(target).match < self.log.last_index():
            return
        self._send(TimeoutNow(self.group, self.id, target, self.term, incarnation=self.incarnation))

    # --- replication (follower) ------------------------------------------------------------

    def _heard_from_leader(self, leader: str) -> None:
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, leader)
        self.leader = leader
        self.election_elapsed = 0
        self.leader_contact_elapsed = 0
        self.refused_behind_at = None  # a leader exists: nobody needs a stand-in

    def _caught_up_to(self, leader_commit: int) -> None:
        """A rejoining replica learns how far it must get; once there, it votes again."""
        if self.rejoin_until is None:
            return
        self.rejoin_until = max(self.rejoin_until, leader_commit)
        if self.log.commit >= self.rejoin_until >= 0:
            self.rejoin_until = None

    def _handle_append(self, msg: AppendEntries) -> None:
        self._heard_from_leader(msg.src)
        self.full_held = msg.held  # the current leader's word, even if lower: conservative
        self._caught_up_to(msg.commit)
        self._append(msg)
        self._caught_up_to(msg.commit)

    def _append(self, msg: AppendEntries) -> None:
        reply = AppendResponse(
            self.group, self.id, msg.src, self.term, True, 0, msg.seq, incarnation=self.incarnation
        )
        if msg.prev_index < self.log.commit:
            # Already-committed prefix: skip it, it matches by definition.
            skip = self.log.commit - msg.prev_index
            entries = msg.entries[skip:]
            prev_index = self.log.commit
            prev_term = self.log.term_at(prev_index) or 0
        else:
            entries, prev_index, prev_term = msg.entries, msg.prev_index, msg.prev_term
        if not self.log.matches(prev_index, prev_term):
            if prev_index > self.log.last_index():
                hint = self.log.last_index()
            else:
                hint = max(self.log.commit, self.log.first_index_of_term(prev_index) - 1)
            self._send(_replace_reply(reply, success=False, match_index=hint))
            return
        last_new = self.log.merge(prev_index, entries)
        self._apply_membership()
        self.log.commit = max(self.log.commit, min(msg.commit, last_new))
        self._send(_replace_reply(reply, success=True, match_index=last_new))

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        self._heard_from_leader(msg.src)
        meta = msg.snapshot.meta
        if meta.index > self.log.commit and self._keeps_log_for(msg.snapshot):
            # Correctness over disk: a stateless snapshot (what a log replica gets) replaces
            # no state, and this log holds its entry with its term, so by log matching it
            # holds the leader's log up to it. Those entries may be the only second copy of
            # committed entries (a full member that lags); restoring would drop them (seed
            # 627 g1). Only the commit index moves, as an AppendEntries with that commit would.
            self.log.commit = meta.index
        elif meta.index > self.log.commit:
            self.log.restore(msg.snapshot)
            self.membership = self.log.membership_at(self.log.last_index())
        match = max(meta.index, self.log.commit)
        self._caught_up_to(meta.index)
        self._send(
            AppendResponse(
                self.group,
                self.id,
                msg.src,
                self.term,
                True,
                match,
                msg.seq,
                incarnation=self.incarnation,
            )
        )

    def _keeps_log_for(self, snapshot: Snapshot) -> bool:
        """Does a stateless snapshot only confirm entries this log holds? (Otherwise it is
        restored as before: a log that does not reach its entry, or holds another term there,
        did not acknowledge it, so the leader's commit of it counted another copy.)"""
        meta = snapshot.meta
        return (
            not snapshot.data
            and meta.index <= self.log.last_index()
            and self.log.matches(meta.index, meta.term)
        )

    # --- plumbing --------------------------------------------------------------------------

    def _send(self, msg: AnyMessage) -> None:
        self.messages.append(msg)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)


def _replace_reply(reply: AppendResponse, *, success: bool, match_index: int) -> AppendResponse:
    return AppendResponse(
        reply.group,
        reply.src,
        reply.dst,
        reply.term,
        success,
        match_index,
        reply.seq,
        incarnation=reply.incarnation,
    )
