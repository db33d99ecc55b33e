"""The admin service: failure detection and replica placement, run inside every storage node.

Each node probes every storage peer (the ``status`` op, through the same links as its Raft
traffic) and, for every group it leads, asks the planner for the next step and carries it out:
create or drop a replica on a node, change the membership one member at a time, turn a log
replica into a full one, record the members in the partition map. Leadership makes it highly
available: when a leader dies, the group's next leader takes over its group's healing.

    admin = Admin(node, HealingSettings(grace_seconds=3.0), node_azs, meta_home)
    node.add_service(admin)  # the node starts it; it serves GET /admin/events and /admin/state
    await admin.start()      # probes, plans, acts; serves GET /admin/events and /admin/state
    ...
    await admin.stop()

Every step is an event (``events.py``) with a timestamp, e.g. for kill -9 of ``sn-c1``:
node_suspected (c1) -> member_removed (c1) -> log_replica_added (c2) -> full_replica_building
(c2) -> full_replica_ready (c2) -> map_updated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cluster.consensus.messages import Membership
from cluster.consensus.raft import Role
from cluster.metadata.partitionmap import META_GROUP, PartitionMap
from cluster.metadata.store import MetadataStore, MetadataUnavailable
from cluster.storage.client import ASK_FAILURES, GroupClient, NodeClient, NodeUnavailable
from cluster.storage.host import NodeHost, Route
from cluster.storage.replica import (
    NotLeader,
    OutcomeUnknown,
    ProposalRejected,
    Replica,
    ReplicaMode,
)

from . import planner
from .events import EventCollector, EventKind, EventLog
from .mapupdate import MapUpdateFailed, live_group, map_differs, update_partition
from .scrubber import Scrubber
from .settings import HealingSettings

log = logging.getLogger(__name__)


class ActionFailed(Exception):
    pass


@dataclass
class _Peer:
    """What probes found out about one storage node."""

    id: str
    az: str
    up: bool = True  # optimistic until the first probe says otherwise
    last_ok: float = field(default_factory=time.monotonic)
    down_since: float | None = None
    suspected: bool = False  # a NODE_SUSPECTED event was recorded for this outage
    groups: dict[str, str] = field(default_factory=dict)  # group -> replica mode

    def view(self, now: float) -> planner.NodeView:
        down_for = 0.0 if self.up or self.down_since is None else now - self.down_since
        return planner.NodeView(
            self.id, self.az, self.up, down_for, dict(self.groups), len(self.groups)
        )


class Admin:
    def __init__(
        self,
        node: NodeHost,
        settings: HealingSettings,
        node_azs: Mapping[str, str],
        meta_home: tuple[str, ...] = (),
    ) -> None:
        """``node_azs``: every storage node's AZ; ``meta_home``: the metadata group's fixed
        nodes (where routers look for it)."""
        self.node = node
        self.settings = settings
        self.me = node.node_id
        self.node_azs = dict(node_azs)
        self.events = EventLog(self.me, node.data_dir / "healing-events.jsonl")
        node.registry.register(EventCollector(self.events))
        # Peers through their dial addresses (the mesh), and this node itself: it may be the
        # metadata group's leader.
        self.client = GroupClient({**node.peers, self.me: node.listen})
        self.peers = {p: _Peer(p, self.node_azs.get(p, "?")) for p in node.peers}
        self.probes: dict[str, NodeClient] = {}  # peer -> the connection its probes use
        self.home = frozenset(meta_home) if meta_home else None
        self.busy: set[str] = set()
        self.backoff: dict[str, float] = {}  # group -> no new action before this time
        self.map: PartitionMap | None = None
        self.map_read_at = 0.0
        self.lost_at: dict[str, float] = {}  # group -> when its last removed member went down
        self.log_added: dict[tuple[str, str], float] = {}  # (group, node) -> when added
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._map_task: asyncio.Task[None] | None = None  # the partition map being read
        self.next_scrub: dict[str, float] = {}  # group -> when to scrub it next
        self.quarantined: set[str] = set()  # local groups whose quarantine was recorded
        self.losses: dict[tuple[str, str], int] = {}  # (group, member) -> lost_data seen
        self.refilling: dict[tuple[str, str], float] = {}  # (group, member) -> loss noticed
        self.scrubber = Scrubber(self)

    def routes(self) -> list[Route]:
        return [
            ("GET", "/admin/events", self._http_events),
            ("GET", "/admin/state", self._http_state),
            ("POST", "/admin/scrub", self._http_scrub),
        ]

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="healing-admin")

    async def stop(self) -> None:
        for task in [self._loop, self._map_task, *self.tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.client.close()
        for client in self.probes.values():
            await client.close()

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._probe_all()
                self._note_quarantines()
                self._note_lost_data()
                self._plan_all()
                self._maybe_refresh_map()
            except asyncio.CancelledError:
                raise
            except Exception:  # the admin must outlive any one bad round
                log.exception("healing round failed")
            await asyncio.sleep(self.settings.probe_seconds)

    def _led(self) -> list[Replica]:
        return [
            r
            for r in self.node.replicas.values()
            if r.raft.role is Role.LEADER and r.mode is ReplicaMode.FULL
        ]

    async def _probe_all(self) -> None:
        await asyncio.gather(*(self._probe(p) for p in self.peers.values()))
        now = time.monotonic()
        led = self._led()
        for peer in self.peers.values():
            if peer.up or peer.down_since is None or peer.suspected:
                continue
            groups = sorted(r.group for r in led if peer.id in r.raft.status().membership.voters)
            if groups and now - peer.down_since >= min(1.0, self.settings.grace_seconds / 2):
                peer.suspected = True
                self.events.record(
                    EventKind.NODE_SUSPECTED,
                    node=peer.id,
                    groups=groups,
                    down_seconds=round(now - peer.down_since, 3),
                )

    async def _probe(self, peer: _Peer) -> None:
        """A status probe on the connection kept for this peer (not one per probe: 60/s in the
        mesh for 6 nodes). A failed probe drops it: a power-cycled peer may be back elsewhere."""
        timeout = self.settings.probe_timeout
        client = self.probes.get(peer.id)
        if client is None:
            client = self.probes[peer.id] = NodeClient(self.node.peers[peer.id], timeout)
        try:
            reply = await client.call("status", deadline=timeout)
            groups = {str(r["group"]): str(r.get("mode", "full")) for r in reply["replicas"]}
        except ASK_FAILURES:
            if self.probes.get(peer.id) is client:
                del self.probes[peer.id]
            await client.close()
            if peer.up:
                peer.up = False
                peer.down_since = peer.last_ok
            return
        now = time.monotonic()
        if not peer.up and peer.suspected:
            self.events.record(
                EventKind.NODE_RECOVERED,
                node=peer.id,
                down_seconds=round(now - (peer.down_since or now), 3),
            )
        peer.up, peer.last_ok, peer.down_since, peer.suspected = True, now, None, False
        peer.groups = groups

    def node_views(self) -> dict[str, planner.NodeView]:
        now = time.monotonic()
        views = {p.id: p.view(now) for p in self.peers.values()}
        mine = {g: r.mode.value for g, r in self.node.replicas.items()}
        az = self.node_azs.get(self.me, "?")
        views[self.me] = planner.NodeView(self.me, az, True, 0.0, mine, len(mine))
        return views

    def group_view(self, replica: Replica) -> planner.GroupView:
        st = replica.raft.status()
        tick = self.node.tick_seconds
        voters = st.membership.voters
        silent = {m: f.silent_ticks * tick for m, f in st.followers.items() if m in voters}
        for m in voters - set(st.followers) - {self.me}:
            silent[m] = float("inf")
        return planner.GroupView(
            replica.group,
            self.me,
            voters,
            st.membership.log_only,
            silent,
            self.home if replica.group == META_GROUP else None,
            {
                m: time.monotonic() - self.log_added[(replica.group, m)]
                for m in st.membership.log_only
                if (replica.group, m) in self.log_added
            },
        )

    def _plan_all(self) -> None:
        now = time.monotonic()
        nodes = self.node_views()
        for replica in self._led():
            group = replica.group
            if group in self.busy or self.backoff.get(group, 0.0) > now:
                continue
            if replica.raft.status().config_pending:
                continue  # a membership change is still committing
            view = self.group_view(replica)
            action = planner.plan(
                view, nodes, self.settings.grace_seconds, self.settings.full_after_seconds
            )
            creates = isinstance(action, planner.AddLogReplica | planner.RecreateReplica)
            if creates and not live_group(self.map, group, self.node.incarnation_of(group)):
                action = None  # a deleted table's group: never made whole again
            if action is not None:
                action_coro = self._execute(replica, view, action)
            elif self._map_differs(view):
                action_coro = self._update_map(view)
            elif self._scrub_due(group, now):
                action_coro = self._scrub_quietly(replica)
            else:
                continue
            self.busy.add(group)
            task = asyncio.create_task(action_coro, name=f"heal-{group}")
            self.tasks.add(task)
            task.add_done_callback(self._done_callback(group))

    def _scrub_due(self, group: str, now: float) -> bool:
        every = self.settings.scrub_seconds
        if every <= 0:
            return False
        due = self.next_scrub.setdefault(group, now + every)
        if now < due:
            return False
        self.next_scrub[group] = now + every
        return True

    async def _scrub_quietly(self, replica: Replica) -> None:
        await self.scrubber.scrub(replica)  # its events say what it found

    def _note_quarantines(self) -> None:
        """Record, once, every local replica that quarantined itself (bad data found)."""
        for group, replica in self.node.replicas.items():
            if replica.mode is ReplicaMode.QUARANTINED:
                if group not in self.quarantined:
                    self.quarantined.add(group)
                    reason = replica.quarantine_reason or "unknown"
                    self.events.record(EventKind.REPLICA_QUARANTINED, group, self.me, reason=reason)
            else:
                self.quarantined.discard(group)

    def _note_lost_data(self) -> None:
        """Record members that lost what they had acknowledged (the Raft core noticed it and
        refills them), and when each holds everything committed again."""
        now = time.monotonic()
        for replica in self._led():
            st = replica.raft.status()
            for member, follower in st.followers.items():
                key = (replica.group, member)
                if follower.lost_data > self.losses.get(key, 0):
                    self.refilling.setdefault(key, now)
                    kind = EventKind.REPLICA_LOST_DATA
                    self.events.record(kind, replica.group, member, commit=st.commit)
                self.losses[key] = follower.lost_data
                since = self.refilling.get(key)
                if since is not None and follower.match >= st.commit:
                    del self.refilling[key]
                    self.events.record(
                        EventKind.REPLICA_REFILLED,
                        replica.group,
                        member,
                        match=follower.match,
                        seconds=round(now - since, 3),
                    )

    def note_mode(self, node: str, group: str, mode: ReplicaMode) -> None:
        """What a step just did to a node's replica, before the next probe says so."""
        if node in self.peers:
            self.peers[node].groups[group] = mode.value

    def _done_callback(self, group: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            self.busy.discard(group)

        return done

    # --- carrying out a step -------------------------------------------------------------------

    async def _execute(
        self, replica: Replica, view: planner.GroupView, action: planner.Action
    ) -> None:
        group = replica.group
        started = time.monotonic()
        try:
            match action:
                case planner.RemoveMember():
                    await self._remove(replica, view, action)
                case planner.AddLogReplica():
                    await self._add_log_replica(replica, view, action)
                case planner.BuildFullReplica():
                    await self._build_full(replica, view, action)
                case planner.RecreateReplica():
                    await self._recreate(replica, view, action)
                case planner.DropOrphan():  # (not dropped: a newer table's replica there)
                    if await self._drop_group(action.node, group, 10.0):
                        self.events.record(EventKind.ORPHAN_DROPPED, group, action.node)
                case planner.TransferLeadership():
                    replica.transfer_leadership(action.node)
                    self.events.record(
                        EventKind.LEADERSHIP_TRANSFERRED, group, action.node, reason=action.reason
                    )
                    await asyncio.sleep(1.0)  # let it happen before planning again
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.events.record(
                EventKind.ACTION_FAILED,
                group,
                action.node,
                action=type(action).__name__,
                error=f"{type(exc).__name__}: {exc}",
                seconds=round(time.monotonic() - started, 3),
            )
            self.backoff[group] = time.monotonic() + 2.0

    async def _change(self, replica: Replica, new: Membership) -> None:
        try:
            await replica.change_membership(new, self.settings.change_timeout)
        except (NotLeader, ProposalRejected, OutcomeUnknown) as exc:
            raise ActionFailed(f"membership change to {sorted(new.voters)}: {exc}") from exc

    async def _remove(
        self, replica: Replica, view: planner.GroupView, action: planner.RemoveMember
    ) -> None:
        gone = action.node
        await self._change(replica, Membership(view.voters - {gone}, view.log_only - {gone}))
        peer = self.peers.get(gone)
        if peer is not None and peer.down_since is not None:
            self.lost_at[replica.group] = peer.down_since
        self.events.record(
            EventKind.MEMBER_REMOVED,
            replica.group,
            gone,
            reason=action.reason,
            members=sorted(view.voters - {gone}),
            down_seconds=None
            if peer is None or peer.down_since is None
            else round(time.monotonic() - peer.down_since, 3),
        )
        if peer is not None and peer.up:  # best effort: a dead node's copy goes when it is back
            with contextlib.suppress(ActionFailed):
                await self._drop_group(gone, replica.group, 5.0)

    async def _add_log_replica(
        self, replica: Replica, view: planner.GroupView, action: planner.AddLogReplica
    ) -> None:
        group, target = replica.group, action.node
        started = time.monotonic()
        # A copy left from an earlier membership must not be reused: it starts afresh.
        await self._drop_group(target, group, 10.0)
        await self._create_group(target, group, view, log_only=True)
        if target in self.peers:
            self.peers[target].groups[group] = ReplicaMode.LOG.value
        await self._change(replica, Membership(view.voters | {target}, view.log_only | {target}))
        self.log_added[(group, target)] = time.monotonic()
        self.events.record(
            EventKind.LOG_REPLICA_ADDED,
            group,
            target,
            reason=action.reason,
            members=sorted(view.voters | {target}),
            seconds=round(time.monotonic() - started, 3),
            since_member_lost=self._since_lost(replica.group),
        )

    async def _build_full(
        self, replica: Replica, view: planner.GroupView, action: planner.BuildFullReplica
    ) -> None:
        group, target = replica.group, action.node
        peer = self.peers.get(target)
        mode = None if peer is None else peer.groups.get(group)
        started = time.monotonic()
        detail: dict[str, Any] = {}
        if mode != ReplicaMode.FULL.value:
            self.events.record(EventKind.FULL_REPLICA_BUILDING, group, target, mode=mode)
            full = [
                m
                for m in sorted(view.voters - view.log_only - {target})
                if m == self.me or self._mode_on(m, group) == ReplicaMode.FULL.value
            ]
            sources = [self.me] + [m for m in full if m != self.me]
            detail = await self.call(
                target,
                "rebuild",
                self.settings.rebuild_timeout,
                group=group,
                sources=sources,
                set_aside=mode == ReplicaMode.QUARANTINED.value,
            )
            if peer is not None:
                peer.groups[group] = ReplicaMode.FULL.value
        if target in view.log_only:
            await self._change(replica, Membership(view.voters, view.log_only - {target}))
        self.log_added.pop((group, target), None)
        kind = (
            EventKind.REPLICA_REPAIRED
            if mode == ReplicaMode.QUARANTINED.value
            else EventKind.FULL_REPLICA_READY
        )
        self.events.record(
            kind,
            group,
            target,
            seconds=round(time.monotonic() - started, 3),
            snapshot_index=detail.get("index"),
            bytes=detail.get("bytes"),
        )

    async def _recreate(
        self, replica: Replica, view: planner.GroupView, action: planner.RecreateReplica
    ) -> None:
        group, target = replica.group, action.node
        # rejoin: no votes until the leader has refilled it (Raft.rejoin)
        await self._create_group(target, group, view, log_only=target in view.log_only, rejoin=True)
        self.events.record(EventKind.REPLICA_RECREATED, group, target, reason=action.reason)

    async def _create_group(
        self, target: str, group: str, view: planner.GroupView, **options: bool
    ) -> None:
        """Have ``target`` create a replica of ``group`` with its members, rate and incarnation."""
        rate, provisioned = self.node.rate_of(group)
        fields: dict[str, Any] = {"group": group, "members": sorted(view.voters), "rate": rate}
        fields |= {"provisioned": provisioned, "incarnation": self.node.incarnation_of(group)}
        await self.call(target, "create_group", 10.0, **fields, **options)

    async def _drop_group(self, target: str, group: str, deadline: float) -> bool:
        """Have ``target`` drop its copy of ``group``, unless of a newer table (incarnation)."""
        return bool((await self.call(target, "drop_group", deadline, group=group)).get("dropped"))

    def _mode_on(self, node: str, group: str) -> str | None:
        peer = self.peers.get(node)
        return None if peer is None else peer.groups.get(group)

    def _since_lost(self, group: str) -> float | None:
        """Seconds since the member this group lost last stopped answering (None: none)."""
        lost = self.lost_at.pop(group, None)
        return None if lost is None else round(time.monotonic() - lost, 3)

    async def call(self, node: str, op: str, deadline: float, **fields: Any) -> dict[str, Any]:
        if "group" in fields:  # only a replica of our table answers (StorageNode.replica)
            fields.setdefault("incarnation", self.node.incarnation_of(str(fields["group"])))
        try:
            reply = await self.client.client(node).call(op, deadline=deadline, **fields)
        except (NodeUnavailable, TimeoutError) as exc:
            raise ActionFailed(f"{node} {op}: {exc or 'timed out'}") from exc
        if "error" in reply:
            raise ActionFailed(f"{node} {op}: {reply.get('error')}: {reply.get('message')}")
        return reply

    # --- the partition map ---------------------------------------------------------------------

    def _maybe_refresh_map(self) -> None:
        """Read the map again in a task of its own, if due and none runs: with meta cut off a
        read takes its whole deadline, and the loop that awaited it planned nothing (8 s, not 3)."""
        due = time.monotonic() - self.map_read_at >= self.settings.map_seconds
        if self.home is None or not due or not (self._map_task is None or self._map_task.done()):
            return
        if any(r.group != META_GROUP for r in self._led()):
            self.map_read_at = time.monotonic()
            self._map_task = asyncio.create_task(self._refresh_map(), name="heal-map")

    async def _refresh_map(self) -> None:
        try:
            self.map = await MetadataStore(self.client, tuple(self.home or ())).read_map()
        except (MetadataUnavailable, KeyError, ValueError) as exc:
            log.info("partition map unavailable: %s", exc)
        except Exception:  # the loop's catch-all used to log these
            log.exception("reading the partition map failed")

    def _map_differs(self, view: planner.GroupView) -> bool:
        """Does the map list other replicas than this whole group's members?"""
        if self.map is None or len(view.voters) != planner.TARGET_MEMBERS:
            return False  # (the meta group is in no map: map_differs says no)
        return map_differs(self.map, view, self.node.incarnation_of(view.group))

    async def _update_map(self, view: planner.GroupView) -> None:
        group = view.group
        if self.map is None or self.home is None:
            return
        try:
            partition = self.map.group(group)
        except KeyError:
            return
        try:
            changed = await update_partition(
                self.client,
                tuple(self.home),
                group,
                partition.table,
                sorted(view.voters),
                self.node_azs,
                incarnation=self.node.incarnation_of(group),
            )
        except MapUpdateFailed as exc:
            log.info("%s: partition map not updated: %s", group, exc)
            self.backoff[group] = time.monotonic() + 1.0
            return
        self.map_read_at = 0.0  # read it again soon
        if changed:
            self.events.record(
                EventKind.MAP_UPDATED,
                group,
                None,
                replicas=sorted(view.voters),
                was=sorted(partition.replicas),
            )

    # --- ops and HTTP --------------------------------------------------------------------------

    async def _http_scrub(self, request: web.Request) -> web.Response:
        """Scrub now every group led here (or those matching ``?group=``: an id or a table)."""
        want = request.query.get("group")
        results = []
        for replica in self._led():
            group = replica.group
            if want and group != want and not group.startswith(want + ".p"):
                continue
            for _ in range(600):  # wait (bounded) for the group's current step to end
                if group not in self.busy:
                    break
                await asyncio.sleep(0.1)
            self.busy.add(group)
            try:
                results.append(await self.scrubber.scrub(replica))
            finally:
                self.busy.discard(group)
        return web.json_response({"node": self.me, "results": results})

    async def _http_events(self, request: web.Request) -> web.Response:
        after = float(request.query.get("since", "0"))
        kind = request.query.get("kind")
        events = [e.to_dict() for e in self.events.since(after, kind)]
        return web.json_response({"node": self.me, "events": events})

    async def _http_state(self, _: web.Request) -> web.Response:
        nodes = self.node_views()
        body = {
            "node": self.me,
            "nodes": {
                n: {"az": v.az, "up": v.up, "down_for": v.down_for, "groups": dict(v.groups)}
                for n, v in nodes.items()
            },
            "leads": {
                r.group: {
                    "voters": sorted(r.raft.status().membership.voters),
                    "log_only": sorted(r.raft.status().membership.log_only),
                    "silent_for": {
                        m: round(s, 3) if s != float("inf") else None
                        for m, s in self.group_view(r).silent_for.items()
                    },
                }
                for r in self._led()
            },
            "busy": sorted(self.busy),
        }
        return web.json_response(body)
