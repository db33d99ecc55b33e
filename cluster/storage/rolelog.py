"""A replica's Raft role, term and leader, logged once per change (INFO, on at any log level).

A window in which groups had no leader must be attributable from the storage nodes' logs alone
(the k8s game day lost leaders for 40 s and the pods, logging WARNING, said nothing): who
campaigned, in which term, who won, who stepped down at the same term (check-quorum or a
transfer) and who followed a newer term. One line per change, so a quiet cluster logs nothing.

    watch = RoleWatch("p0")
    change = watch.note(raft)   # "won", "lost" (leadership) or None; logs changes
"""

from __future__ import annotations

import logging

from cluster.consensus.raft import Raft, Role

log = logging.getLogger(__name__)
# Its own level: the processes log WARNING by default, and these lines are the ones that explain
# a leaderless window afterwards. They cost one line per role, term or leader change.
log.setLevel(logging.INFO)


class RoleWatch:
    def __init__(self, group: str) -> None:
        self.group = group
        self.seen: tuple[Role, int, str | None] | None = None

    def note(self, raft: Raft) -> str | None:
        """Log the replica's state if it changed since the last call (cheap when it did not:
        called after every round of inputs); "won" when it became leader, "lost" when it
        stopped being one, else None."""
        now = (raft.role, raft.term, raft.leader)
        before, self.seen = self.seen, now
        if now == before:
            return None
        st = raft.status()
        was_leader = before is not None and before[0] is Role.LEADER
        why = ""
        if (
            before is not None
            and was_leader
            and st.role is not Role.LEADER
            and st.term == before[1]
        ):
            why = " (stepped down: check-quorum or transfer)"
        log.info(
            "%s: %s term %d leader %s (was %s) voters %s last %d commit %d%s",
            self.group,
            st.role.value,
            st.term,
            st.leader,
            "-" if before is None else f"{before[0].value} term {before[1]} leader {before[2]}",
            ",".join(sorted(st.membership.voters)),
            st.last_index,
            st.commit,
            why,
        )
        if st.role is Role.LEADER and not was_leader:
            return "won"
        return "lost" if was_leader and st.role is not Role.LEADER else None
