"""The leader's side of a scrub round (DESIGN.md "Continuous verification").

The leader proposes a scrub mark (``ScrubCommand``): every replica verifies itself when it
applies it, at the same log index (``Replica._on_scrub``). The leader collects the reports,
rebuilds a reference replica from the WAL archive up to that index, and lets ``scrub.judge``
name the bad replicas. Each bad replica raises an alarm event naming it, is quarantined (no
reads, no leadership) and rebuilt from a healthy replica (``cluster.storage.rebuild``); a bad
leader first hands leadership over, and its successor rebuilds it.

    outcome = await Scrubber(admin).scrub(replica)
    outcome["verdict"]      # "ok", "repaired", "incomplete" or "alarm"
    outcome["replicas"]     # per node: digest, items, problems, "ok" / "bad" / "no report"

A member that sent no report (its node is down or silent, it no longer hosts the group, it
was refilled past the mark) makes the round "incomplete", never "ok": nothing vouches for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from cluster.storage.archive import ArchiveCorruption, ArchiveGap, rebuild_reference
from cluster.storage.client import ASK_FAILURES, ask
from cluster.storage.commands import ScrubCommand, encode_command
from cluster.storage.host import NodeHost
from cluster.storage.replica import (
    NotLeader,
    OutcomeUnknown,
    ProposalRejected,
    Replica,
    ReplicaMode,
)
from cluster.storage.scrub import ReplicaReport, Verdict, judge

from .events import EventKind, EventLog
from .settings import HealingSettings

_UNREACHABLE = object()  # a member's node did not answer the report request
REPORT_TIMEOUT = 60.0  # a replica verifies its whole data file: allow for big ones
SILENT_TIMEOUT = 10.0  # a member whose node does not answer at all this long is given up


class ScrubHost(Protocol):
    """What a scrub needs of the healing admin that runs it (admin.Admin)."""

    node: NodeHost
    me: str
    settings: HealingSettings
    events: EventLog

    async def call(self, node: str, op: str, deadline: float, **fields: Any) -> dict[str, Any]: ...

    def note_mode(self, node: str, group: str, mode: ReplicaMode) -> None: ...


class Scrubber:
    def __init__(self, admin: ScrubHost) -> None:
        self.admin = admin
        self.node = admin.node
        self.me = admin.me

    async def scrub(self, replica: Replica) -> dict[str, Any]:
        group = replica.group
        started = time.monotonic()
        scrub_id = f"{self.me}-{time.time_ns()}"
        outcome: dict[str, Any] = {"group": group, "leader": self.me, "scrub_id": scrub_id}
        try:
            await replica.propose(encode_command(ScrubCommand(scrub_id)), 5.0)
        except (NotLeader, ProposalRejected, OutcomeUnknown) as exc:
            return outcome | {"verdict": "skipped", "error": str(exc)}
        members = sorted(replica.raft.status().membership.voters)
        # The mark is applied here by now: it is at or below this index.
        mark_at_most = replica.raft.applied_index
        reports, silent = await self._collect(replica, members, scrub_id, mark_at_most)
        mine = reports.get(self.me)
        index = mine.index if mine is not None else replica.raft.applied_index
        reference, ref_info = await self._reference(group, index)
        verdict = judge(reports, reference)
        outcome |= {
            "index": index,
            "replicas": {
                m: (
                    {"verdict": "no report", "why": silent.get(m, "no report")}
                    if m not in reports
                    else reports[m].to_wire()
                    | {"verdict": "bad" if m in verdict.bad else "ok", "why": verdict.bad.get(m)}
                )
                for m in members
            },
            "reference": ref_info | {"matches": verdict.reference_ok},
            "agreed": verdict.agreed,
        }
        verdict_text = await self._act(replica, index, verdict, ref_info, members, silent)
        outcome["verdict"] = verdict_text
        outcome["seconds"] = round(time.monotonic() - started, 3)
        return outcome

    async def _collect(
        self, replica: Replica, members: list[str], scrub_id: str, mark_at_most: int
    ) -> tuple[dict[str, ReplicaReport], dict[str, str]]:
        """Each member's report, and why each member without one sent none."""
        reports: dict[str, ReplicaReport] = {}
        silent: dict[str, str] = {}
        unanswered: dict[str, float] = {}  # member -> since when its node has not answered
        pending = set(members)
        started = time.monotonic()
        while pending:
            now = time.monotonic()
            for m in sorted(pending):
                answer = await self._report(replica, m, scrub_id, mark_at_most)
                if isinstance(answer, ReplicaReport):
                    reports[m] = answer
                elif isinstance(answer, str):
                    silent[m] = answer
                elif answer is _UNREACHABLE:
                    since = unanswered.setdefault(m, now)
                    if now - since < SILENT_TIMEOUT:
                        continue
                    silent[m] = f"its node did not answer for {SILENT_TIMEOUT:g}s"
                else:
                    unanswered.pop(m, None)
                    if now - started < REPORT_TIMEOUT:
                        continue
                    silent[m] = f"no report within {REPORT_TIMEOUT:g}s"
                pending.discard(m)
            if pending:
                await asyncio.sleep(0.1)
        return reports, silent

    async def _report(
        self, replica: Replica, member: str, scrub_id: str, mark_at_most: int
    ) -> ReplicaReport | str | object | None:
        """A member's report; a reason (str) when it will never send one; ``_UNREACHABLE``;
        or None while it is still verifying."""
        if member == self.me:
            return replica.scrub_reports.get(scrub_id)
        address = self.node.peers.get(member)
        if address is None:
            return "unknown node"
        # Named: a replica there of another table (a deleted one's) sends no report.
        request: dict[str, Any] = {"op": "scrub_report", "group": replica.group, "id": scrub_id}
        request["incarnation"] = replica.incarnation
        try:
            reply = await ask(address, request, 2.0)
        except ASK_FAILURES:
            return _UNREACHABLE
        if reply.get("error") in ("NoSuchGroup", "NotLeader"):  # NotLeader: another table's
            return "its node does not host the group"
        body = reply.get("report")
        if body is not None:
            return ReplicaReport.from_wire(body)
        applied = reply.get("applied")
        past = isinstance(applied, int) and applied >= mark_at_most
        if reply.get("pending") is False and past:  # past the mark, yet it never verified
            return "applied past the scrub mark without verifying (refilled, restarted)"
        return None

    async def _reference(self, group: str, index: int) -> tuple[str | None, dict[str, Any]]:
        archiver = self.node.archiver
        if archiver is None:
            return None, {"status": "no archive"}
        await archiver.archive_once(group=group)
        dest = self.node.data_dir / "reference" / group
        try:
            ref = await asyncio.to_thread(
                rebuild_reference, archiver.store, group, dest, index, incremental=True
            )
        except ArchiveGap as exc:  # e.g. archiving started after the group: nothing to say
            return None, {"status": "incomplete", "error": str(exc)}
        except ArchiveCorruption as exc:
            self.admin.events.record(
                EventKind.SCRUB_ALARM, group, None, target="archive", index=index, reason=str(exc)
            )
            return None, {"status": "damaged", "error": str(exc)}
        return ref.digest, {
            "status": "rebuilt",
            "digest": ref.digest,
            "items": ref.items,
            "files": ref.segments,
        }

    async def _act(
        self,
        replica: Replica,
        index: int,
        verdict: Verdict,
        ref_info: dict[str, Any],
        members: list[str],
        silent: dict[str, str],
    ) -> str:
        events, group = self.admin.events, replica.group
        for node, why in sorted(silent.items()):
            events.record(EventKind.SCRUB_INCOMPLETE, group, node, index=index, reason=why)
        if verdict.undecided:
            events.record(EventKind.SCRUB_ALARM, group, None, index=index, reason="no majority")
            return "alarm"
        if verdict.reference_ok is False:
            events.record(
                EventKind.SCRUB_ALARM,
                group,
                None,
                target="reference",
                index=index,
                reason=f"the archive's reference {ref_info.get('digest', '')[:12]} differs "
                f"from the replicas' {str(verdict.agreed)[:12]}",
            )
        if not verdict.bad:
            if verdict.reference_ok is False:
                return "alarm"
            if silent:
                return "incomplete"  # nothing vouches for the silent members
            events.record(
                EventKind.SCRUB_PASSED,
                group,
                None,
                index=index,
                digest=verdict.agreed,
                reference=verdict.reference_ok,
            )
            return "ok"
        healthy = [m for m in members if m not in verdict.bad]
        for bad, why in sorted(verdict.bad.items()):
            events.record(EventKind.SCRUB_ALARM, group, bad, index=index, reason=why)
            await self._quarantine(replica, bad, why)
            events.record(EventKind.REPLICA_QUARANTINED, group, bad, index=index, reason=why)
        for bad in sorted(verdict.bad):
            if bad == self.me:
                continue  # our successor rebuilds us (the planner sees us quarantined)
            await self._repair(replica, bad, healthy)
        return "incomplete" if silent else "repaired"

    async def _quarantine(self, replica: Replica, node: str, reason: str) -> None:
        if node == self.me:
            replica.quarantine(reason)
            return
        await self.admin.call(node, "quarantine", 5.0, group=replica.group, reason=reason)

    async def _repair(self, replica: Replica, node: str, healthy: list[str]) -> None:
        group = replica.group
        started = time.monotonic()
        sources = [self.me] if self.me in healthy else []
        sources += [m for m in healthy if m != self.me]
        detail = await self.admin.call(
            node,
            "rebuild",
            self.admin.settings.rebuild_timeout,
            group=group,
            sources=sources,
            set_aside=True,
        )
        self.admin.note_mode(node, group, ReplicaMode.FULL)
        self.admin.events.record(
            EventKind.REPLICA_REPAIRED,
            group,
            node,
            seconds=round(time.monotonic() - started, 3),
            snapshot_index=detail.get("index"),
            source=detail.get("source"),
        )
