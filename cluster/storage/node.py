"""The storage node process: many replicas, one peer port, one client port, admin HTTP.

A node hosts one replica per replication group it belongs to. All groups share the node's
outbound peer links and its listening port (messages carry their group). Clients (request
routers, tests, benchmarks) use the same port with a ``client`` hello and request/response
frames; the admin HTTP endpoint (health, replicas, digests, Prometheus metrics) listens on the
node's own address only.

    node = StorageNode(NodeConfig(node_id="n1", listen="127.0.1.1:7100", admin="127.0.1.1:7180",
                                  data_dir=Path("data/n1"), peers={"n2": "127.0.1.2:7100"},
                                  groups={"p0": ("n1", "n2", "n3")}))
    await node.start(); ...; await node.stop()

It restarts from ``data_dir`` after ``kill -9`` with every acknowledged write: a write is
acknowledged only after a quorum fsynced it and this node applied it. A node's replicas share
one journal (journal.py): one fsync makes every group's ready WAL records durable.

The admin endpoint is in adminhttp.py and the read operations in reads.py; this module keeps the
node's lifecycle, its groups (create, drop, rebuild, reconcile) and the request dispatch (just
about 670 lines: splitting the group management off would split the one lock that guards it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from cluster.admission.partition import PartitionAdmission
from cluster.auth import http_headers
from cluster.consensus.messages import Membership
from cluster.consensus.raft import RaftConfig
from cluster.requestmetrics import RequestMetrics
from cluster.tasks import uninterrupted

from . import reads
from .adminhttp import ReplicaCollector, start_admin
from .archive import Archiver, DirectoryArchive
from .coalesce import Coalescer
from .commands import ApplyResult
from .deletedrecord import DeletedRecord
from .handshake import receive_hello
from .host import NodeService
from .journal import NodeJournal
from .layout import (
    DROPPED_PREFIX,
    REBUILD_PREFIX,
    WAL_SUFFIX,
    clear_rejoining,
    deleted_log,
    fsync_dir,
    groups_file,
    journal_dir,
    mark_rejoining,
    read_record,
    rejoin_marker,
    remove_leftovers,
    replace_durably,
    replica_dir,
    restore_swapped,
    swapped_dir,
    trash_of,
    wal_dir,
)
from .reads import RequestError
from .readyio import ReadyIO
from .rebuild import Staged, check_compatible, finish_rebuild, rebuild_from, stage_store
from .replica import (
    NotLeader,
    OutcomeUnknown,
    ProposalRejected,
    Replica,
    ReplicaMode,
    ReplicaSettings,
)
from .tickclock import TickSchedule
from .transport import PeerLinks, split_address
from .wire import FrameError, decode_frame_messages, encode_frame, read_frame

log = logging.getLogger(__name__)
UNLIMITED_RATE = 40_000.0  # units/s for groups without a rate (on-demand, metadata)
GROUP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    listen: str
    admin: str
    data_dir: Path
    peers: dict[str, str] = field(default_factory=dict)  # node id -> address to dial
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # bootstrap membership
    tick_seconds: float = 0.05
    raft: RaftConfig = field(default_factory=lambda: RaftConfig(spread_first_leaders=True))
    compact_every: int = 2000
    # MemDS servers to reconcile hosted groups against (the partition map): a node that was
    # down when a table was created joins its groups when it comes back.
    memds_urls: tuple[str, ...] = ()
    reconcile_seconds: float = 5.0
    unsafe_ack_before_commit: bool = False  # TEST-ONLY: see ClusterConfig.unsafe
    archive_dir: Path | None = None  # the WAL archive (a directory standing in for S3)
    archive_seconds: float = 1.0  # how often leaders archive newly committed entries
    # One journal shared by every group makes their WAL records durable with one fsync
    # (journal.py). Off: each group's WAL fsyncs by itself (the TEST-ONLY no-fsync mode).
    journal: bool = True

    def unsafe_modes(self) -> list[str]:
        """The TEST-ONLY broken modes this node runs with (announced in /health and the log)."""
        return ["ack-before-commit"] if self.unsafe_ack_before_commit else []


class StopFailed(Exception):
    """``StorageNode.stop`` closed every part, but some failed to (each logged once)."""

    def __init__(self, node_id: str, failures: list[tuple[str, Exception]]) -> None:
        part, first = failures[0]
        more = f" ({len(failures) - 1} more failed: see the log)" if len(failures) > 1 else ""
        super().__init__(f"node {node_id}: closing {part} failed: {_said(first)}{more}")
        self.failures = failures


class NodeFailed(Exception):
    """The node failed while it ran and must stop (fail-stop: ``StorageNode.failed``)."""


def _is_entry(value: Any) -> bool:
    """A groups.json entry: its members at least (rate, provisioned, incarnation: optional)."""
    return isinstance(value, dict) and isinstance(value.get("members"), list)


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _close_part(
    part: str, closing: Awaitable[None], failures: list[tuple[str, Exception]]
) -> None:
    """Await one part's close; should it fail, log it (one line) and note it in ``failures``.
    A cancelled stop (its caller's timeout) is not a failure: it ends the stop as before."""
    try:
        await closing
    except Exception as exc:
        log.error("closing %s failed: %s", part, _said(exc))
        failures.append((part, exc))


class StorageNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.settings = ReplicaSettings(
            raft=config.raft,
            tick_seconds=config.tick_seconds,
            compact_every=config.compact_every,
            unsafe_ack_before_commit=config.unsafe_ack_before_commit,
        )
        self.links = PeerLinks(config.node_id, config.peers)
        self.replicas: dict[str, Replica] = {}
        # Replicas rejoining whose marker (layout.rejoin_marker) goes once they caught up.
        self._rejoining: dict[str, Replica] = {}
        self._clearing: set[asyncio.Task[None]] = set()
        self.started_at = time.monotonic()
        self.ticks = TickSchedule(config.tick_seconds, self.started_at)  # see _tick_due
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "storage_requests", "Client requests", ["op", "outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "storage_request_seconds", "Client request latency", ["op"], registry=self.registry
        )
        self.registry.register(ReplicaCollector(self))
        self.calls = RequestMetrics(self.requests, self.latency, _HANDLERS)
        self._server: asyncio.Server | None = None
        # Connections accepted and still open: a stop hangs up on them, as a process that
        # ends does (server.close() only stops listening; peers kept sending to a stopped
        # node that still read their frames, in the same process).
        self._accepted: set[asyncio.StreamWriter] = set()
        self._admin: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._group_lock = asyncio.Lock()
        self._rebuild_locks: dict[str, asyncio.Lock] = {}  # one rebuild of a group at a time
        self._rebuilds: set[asyncio.Task[int]] = set()
        self._stopping = False
        # Partition-level admission; groups without a configured rate get a generous default.
        self.admission = PartitionAdmission(UNLIMITED_RATE, None, time.monotonic())
        self.limits: dict[str, tuple[float, bool]] = {}  # group -> (rate, provisioned)
        # Groups dropped on request (DeleteTable, healing) and not created again since: the
        # reconcile loop does not put them back from a map that still places them (see
        # ``create_group``'s ``from_map``). Only an explicit create_group hosts them again.
        # group -> the incarnation the drop named (None: any): only a create_group of a newer
        # table's group passes (a lagging map still shows the dropped one: session 13).
        self._dropped: dict[str, int | None] = {}
        # group -> the newest incarnation DeleteTable's drop named: that table is gone, its
        # group is never created here again, by anyone (a leftover leader's healing rebuilt
        # it: session 14). Durable (deleted.log, ``_record_deleted``): a leftover leader
        # outlives a restart of this node, and asks again after it. Read at the start.
        self._deleted = DeletedRecord(deleted_log(self.config.data_dir))
        # group -> the incarnation of the table its replica here belongs to (TableSpec's; 0:
        # unknown, a group created before incarnations existed or without one).
        self.incarnations: dict[str, int] = {}
        # group -> the newest incarnation a peer's message showed, above the one hosted here:
        # the replica here was retired (``_retire``); the reconcile never puts back an older.
        self._superseded: dict[str, int] = {}
        self._retirements: dict[str, asyncio.Task[None]] = {}
        self._reconcile_now = asyncio.Event()  # set: run a reconcile round without waiting
        self.foreign_messages = 0  # Raft messages dropped: another incarnation of their group
        # Groups whose replica this node started with and that are not known to be of the
        # live table yet: no create_group or map (MemDS's, the reconcile's) said so. They
        # serve nothing as it is (``_readable``): a node down while the table was deleted and
        # created again would serve the deleted one's items. A peer's message does not tell:
        # two replicas left from the deleted table share its incarnation (session 13).
        self._unconfirmed: set[str] = set()
        # Services running inside the node (the archiver, healing's admin: see host.py).
        self.services: list[NodeService] = []
        self.archiver: Archiver | None = None
        self.refused = 0  # connections closed for want of the cluster's key
        self.journal: NodeJournal | None = None
        self.ready_io = ReadyIO(self.links)  # the node's one I/O thread: Readies in batches
        # Set when the node must stop (``_fail_stop``); ``failure`` says why.
        self.failed = asyncio.Event()
        self.failure: NodeFailed | None = None

    # --- what services see (host.NodeHost) -----------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def listen(self) -> str:
        return self.config.listen

    @property
    def admin_address(self) -> str:
        return self.config.admin

    def unsafe_modes(self) -> list[str]:
        return self.config.unsafe_modes()

    @property
    def peers(self) -> Mapping[str, str]:
        return self.config.peers

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def tick_seconds(self) -> float:
        return self.config.tick_seconds

    def rate_of(self, group: str) -> tuple[float | None, bool]:
        rate, provisioned = self.limits.get(group, (None, False))
        return rate, provisioned

    def incarnation_of(self, group: str) -> int:
        return self.incarnations.get(group, 0)

    def add_service(self, service: NodeService) -> None:
        """Run ``service`` inside this node (before ``start``): see ``host.py``."""
        self.services.append(service)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config.journal:
            self.journal = await asyncio.to_thread(
                NodeJournal.open, journal_dir(self.config.data_dir)
            )
            loop = asyncio.get_running_loop()

            def journal_failed(exc: OSError) -> None:  # any thread, under the journal's lock
                with contextlib.suppress(RuntimeError):  # the loop closed: the process ends
                    loop.call_soon_threadsafe(self._fail_stop, "journal", exc)

            self.journal.on_failure = journal_failed
        self._deleted = await asyncio.to_thread(DeletedRecord.open, self.config.data_dir)
        groups = dict(self._load_groups())
        for group in sorted(groups):
            if group not in self.config.groups and self._is_deleted(
                group, self.incarnations.get(group, 0)
            ):
                await self._discard_deleted(group)
                del groups[group]
        hosted = set(groups)
        # What a crash left of replicas being deleted, of rebuilds' staging and of their old
        # replicas once swapped: nothing reads it (a group whose files were renamed away
        # rejoins empty). quarantine/ stays (people's).
        keep = hosted | set(self.config.groups)
        # A crash inside a rebuild's swap: the old replica, whole, goes back (the rebuild never
        # happened) rather than the group rejoin empty, forgetting its vote and entries.
        for group in await asyncio.to_thread(restore_swapped, self.config.data_dir, keep):
            log.warning("%s: a rebuild's swap was cut short: the old replica put back", group)
        for path in await asyncio.to_thread(remove_leftovers, self.config.data_dir, keep):
            log.warning("deleted %s (left by a crash)", path)
        for group, members in self.config.groups.items():
            groups.setdefault(group, tuple(members))
        for group, members in sorted(groups.items()):
            # A group this node hosted whose files are gone (wiped while it was down) comes
            # back empty: it rejoins (no votes until caught up) rather than posing as a copy.
            # So does one whose WAL is gone from its directory (opened before, the WAL was
            # made: its term and vote are lost). One that restarts while it still rejoins finds
            # its marker (``_open_replica``).
            path = replica_dir(self.config.data_dir, group)
            # (A healthy replica's WAL always holds a segment: Replica.open writes one; the
            # journal too drops its records of a WAL with none.)
            lost = group in hosted and not any(wal_dir(path).glob("*" + WAL_SUFFIX))
            if lost:
                log.warning("%s: replica files missing; rejoining the group empty", group)
            replica = await self._open_replica(
                group,
                frozenset(members),
                rejoin=lost,
                starting=True,
                incarnation=self.incarnations.get(group, 0),
            )
            # A group from the config (the metadata group) is never deleted nor created again:
            # nothing to confirm, and nothing would (it is in no map; nobody creates it). As
            # unconfirmed, no rebuild could read it, nor heal it after an outage (review s13).
            others = replica.raft.status().membership.voters - {self.config.node_id}
            if others and group not in self.config.groups:
                self._unconfirmed.add(group)  # (a group of its own has nobody to hear from)
        if self.journal is not None:  # before any message leaves: nothing was promised yet
            await asyncio.to_thread(self.journal.checkpoint)
        self._save_groups()
        self.links.start()
        if self.config.archive_dir is not None:
            store = DirectoryArchive(self.config.archive_dir)
            self.archiver = Archiver(store, lambda: self.replicas, self.config.archive_seconds)
            self.services.insert(0, self.archiver)
        for mode in self.config.unsafe_modes():
            log.warning("node %s runs the TEST-ONLY broken mode %s", self.config.node_id, mode)
        for service in self.services:
            await service.start()
        host, port = split_address(self.config.listen)
        # Ticks stand for instants from here on: the replicas opened above (a restarted one
        # refuses votes for its first election_ticks) get no burst for the time start took.
        self.ticks = TickSchedule(self.config.tick_seconds, time.monotonic())
        self._server = await asyncio.start_server(self._on_connection, host, port)
        self._admin = await start_admin(self)
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="ticks"))
        if self.config.memds_urls:
            self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        log.info("node %s up: %d replicas, listening on %s", self.config.node_id,
                 len(self.replicas), self.config.listen)  # fmt: skip

    async def stop(self) -> None:
        for service in reversed(self.services):
            await service.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
        for writer in list(self._accepted):
            writer.close()
        if self._admin is not None:
            await self._admin.cleanup()
        for rebuild in self._rebuilds:  # one swapping files ends first (uninterrupted)
            rebuild.cancel()
        await asyncio.gather(*self._rebuilds, return_exceptions=True)
        for clearing in self._clearing:  # a marker left: the next start rejoins again (safe)
            clearing.cancel()
        await asyncio.gather(*self._clearing, return_exceptions=True)
        await asyncio.gather(*self._retirements.values(), return_exceptions=True)  # brief
        # Every part closes, in this order, whatever an earlier one raised: a replica whose
        # loop ended on a failed journal used to abort the stop, leaving the other replicas'
        # WALs and stores and the I/O thread open. Each failure is logged once; the first is
        # raised (StopFailed) once all are closed. Nothing durable changes: a part that fails
        # to close is what its own close makes of it, as before.
        failures: list[tuple[str, Exception]] = []
        async with self._group_lock:  # no group is created, dropped or swapped while closing
            self._stopping = True
            await _close_part("peer links", self.links.stop(), failures)
            if self.journal is not None:  # a clean stop: the WALs stand alone again
                await _close_part("journal", asyncio.to_thread(self.journal.close), failures)
            for group, replica in list(self.replicas.items()):
                await _close_part(group, replica.close(), failures)
            await _close_part("I/O thread", asyncio.to_thread(self.ready_io.close), failures)
            self._deleted.close()
        if failures:
            raise StopFailed(self.config.node_id, failures) from failures[0][1]

    def _fail_stop(self, part: str, exc: BaseException) -> None:
        """``part`` failed for good: the journal (it refuses every write from then on), or a
        replica's loop (its group is never served again by this process). The node stops:
        ``failed`` is set, and ``python -m cluster.storage`` then stops it (``stop``: what can
        be closed is closed; the failed journal acknowledges nothing more) and exits with one
        line, status 1. Fail-stop: a process that cannot write durably must not look alive.
        Kept running, it would still answer status with frozen roles and peers would still
        reach it, so healing (which replaces unreachable members) would never replace its
        replicas, and groups it led could stay unavailable. Once it is gone, it is a down node
        like any other: its supervisor (a Kubernetes pod's restart; the game day's heal on
        the local and docker backends) starts it again and its WAL replay recovers it, or
        healing replaces its replicas meanwhile."""
        if self.failure is not None or self._stopping:  # a stop's failures: StopFailed
            return
        said = f"node {self.config.node_id}: {part} failed: {_said(exc)}"
        log.critical("%s; stopping the node (fail-stop)", said)
        self.failure = NodeFailed(f"{said}; stopped (fail-stop): restart it to recover")
        self.failed.set()

    def _check_running(self) -> None:
        """Under the group lock: groups change only while the node runs (not once stopped)."""
        if self._stopping:
            raise RequestError("Unavailable", f"node {self.config.node_id} is stopping")

    async def _open_replica(
        self,
        group: str,
        members: frozenset[str] | None,
        mode: ReplicaMode | None = None,
        rejoin: bool = False,
        starting: bool = False,
        incarnation: int = 0,
    ) -> Replica:
        """Open (or create) the replica of ``group``. ``rejoin``: it starts without the state
        it once had (dropped, wiped): no votes, no campaign until caught up (Raft.rejoin).
        ``starting``: the node's start checkpoints the journal once for all its replicas.
        ``incarnation``: the group's (``self.incarnations``), part of its Raft identity.

        A rejoin is recorded durably in the replica's directory before it opens (it writes no
        term nor vote before), and forgotten once it caught up with that state on disk
        (``_clear_caught_up``): a replica marked so rejoins at every open until then (a
        restart, a rebuild's reopen), not only at the one that found its files lost."""
        path = replica_dir(self.config.data_dir, group)
        if rejoin:
            await asyncio.to_thread(mark_rejoining, path)
        elif rejoin_marker(path).exists():
            log.warning("%s: reopened before it caught up: rejoining again", group)
            rejoin = True
        replica = await Replica.open(
            self.config.node_id,
            group,
            members,
            path,
            self.settings,
            self.links.send,
            mode,
            self.journal,
            self.ready_io,
            incarnation,
        )
        if self.journal is not None:
            journal, wal = self.journal, replica.wal
            await asyncio.to_thread(journal.register, group, wal, checkpoint=not starting)
        if rejoin:
            replica.raft.rejoin()  # its loop has not run yet: no Ready is outstanding
            self._rejoining[group] = replica
        self.replicas[group] = replica
        assert replica.task is not None

        def loop_ended(task: asyncio.Task[None]) -> None:
            # A loop ends on an error (an I/O failure, a write the failed journal refused),
            # or when its replica closes (rebuilt, dropped, the node stopping): not a failure.
            error = None if task.cancelled() or replica.closing else task.exception()
            if error is not None:
                self._fail_stop(f"replica {group}", error)

        replica.task.add_done_callback(loop_ended)
        return replica

    def _groups_file(self) -> Path:
        return groups_file(self.config.data_dir)

    def _load_groups(self) -> dict[str, tuple[str, ...]]:
        path = self._groups_file()
        if not path.exists():
            return {}
        groups: dict[str, tuple[str, ...]] = {}
        record = read_record(path, 'group -> {"members": [...], ...}', _is_entry)
        for group, entry in record.items():
            groups[group] = tuple(entry["members"])
            self.incarnations[group] = int(entry.get("incarnation") or 0)  # absent: 0
            if entry.get("rate") is not None:
                self.limits[group] = (float(entry["rate"]), bool(entry.get("provisioned")))
                self.admission.set_rate(group, float(entry["rate"]), time.monotonic())
        return groups

    def _save_groups(self) -> None:
        bootstrap = {
            g: {
                "members": sorted(r.raft.status().membership.voters),
                "rate": self.limits.get(g, (None, False))[0],
                "provisioned": self.limits.get(g, (None, False))[1],
                "incarnation": self.incarnations.get(g, 0),
            }
            for g, r in self.replicas.items()
        }
        # Durably: a node whose groups.json a power loss emptied could not start again.
        replace_durably(self._groups_file(), json.dumps(bootstrap, indent=1, sort_keys=True))

    async def create_group(
        self,
        group: str,
        members: list[str],
        rate: float | None = None,
        provisioned: bool = False,
        log_only: bool = False,
        rejoin: bool = False,
        from_map: bool = False,
        incarnation: int = 0,
    ) -> bool:
        """Host a replica of ``group`` (idempotent). Returns True when it was created now.

        ``rate`` (units per second) bounds what this node serves for the group while it leads
        it: the partition-level token bucket, the second line of admission control.
        ``log_only`` creates a log replica (WAL only, no applied state; DESIGN.md "Log
        replicas"); it applies to a replica created now, never to one already hosted.
        ``rejoin``: this node was a member whose copy was lost (dropped, wiped); the new
        replica neither votes nor campaigns until the group's leader has caught it up.
        ``from_map``: the reconcile loop found the group placed here by MemDS's map, which
        lags the metadata by a refresh or more; a group this node was told to drop is then
        not created again. DeleteTable drops a table's groups before MemDS forgets the table:
        put back, such a group lingered empty and rejoining (no votes, no campaign), and a
        table created again under the same name (same group ids) got it instead of a fresh
        replica: two of those and its first election never happened (CreateTable answered 503
        after 15 s; boto3 retried it and was told ResourceInUseException: session 12).
        ``incarnation``: that of the table the group belongs to (``TableSpec.incarnation``). A
        replica hosted here for an older one is of a table deleted while this node was down
        (its drop never came) whose name was used again: it is wiped and a fresh one created.
        Kept, it was a voter of the new group with the deleted table's log and term: it served
        the deleted table's items as the new table's, and a new leader's log, at the same
        indexes and term as its own, was taken for the one it had (session 12). The incarnation
        is part of the replica's Raft identity (``Raft.step``): replicas of different ones
        never take each other's messages, whatever replaced what when (session 13).
        The new replica needs no ``rejoin`` for being a replacement: the one it replaces was
        of another incarnation, so it never voted or acknowledged anything in this group.
        """
        if not GROUP_NAME.match(group):
            raise RequestError("ValidationException", f"bad group name {group!r}")
        async with self._group_lock:  # once begun, ended even if the caller is cancelled
            self._check_running()
            return await uninterrupted(
                self._create(
                    group, members, rate, provisioned, log_only, rejoin, from_map, incarnation
                )
            )

    async def _create(
        self,
        group: str,
        members: list[str],
        rate: float | None,
        provisioned: bool,
        log_only: bool,
        rejoin: bool,
        from_map: bool,
        incarnation: int,
    ) -> bool:
        if from_map and not self._map_may_create(group, incarnation):
            return False
        if self._is_deleted(group, incarnation):  # that table is gone
            if from_map:
                return False
            raise RequestError("TableDeleted", f"{group} of incarnation {incarnation}")
        hosted = self.incarnations.get(group, 0) if group in self.replicas else None
        if hosted is not None and incarnation < hosted:
            return False  # a late create of an older table: not even its rate (session 14)
        self._dropped.pop(group, None)
        if rate is not None:
            self.limits[group] = (rate, provisioned)
            self.admission.set_rate(group, rate, time.monotonic())
        if hosted is not None:
            if incarnation and incarnation == hosted:
                self._unconfirmed.discard(group)  # the live table's, as the caller says
            if incarnation == hosted:
                return False
            log.warning(
                "%s: replacing the replica of incarnation %d (a deleted table's) by one of %d",
                group,
                self.incarnations.get(group, 0),
                incarnation,
            )
            await self._discard(group)
        path = replica_dir(self.config.data_dir, group)
        if path.exists():  # not hosted, yet there: a discard cut short by a crash
            log.warning("%s: files of a replica not hosted here; deleting them first", group)
            await self._trash(path)  # opened, they would pose as this group's state
        joining = self.config.node_id not in members
        mode = ReplicaMode.LOG if log_only else ReplicaMode.FULL
        members_now = None if joining else frozenset(members)
        await self._open_replica(group, members_now, mode, rejoin, incarnation=incarnation)
        self.incarnations[group] = incarnation
        self._unconfirmed.discard(group)
        self._save_groups()
        return True

    def _map_may_create(self, group: str, incarnation: int) -> bool:
        """May the reconcile (MemDS's lagging map) create ``group`` of ``incarnation`` here?
        Not a group this node was told to drop, unless the map shows a newer table of it; not
        an incarnation older than one a peer's message showed (the replica retired for it)."""
        if group in self._dropped:
            dropped = self._dropped[group]
            if dropped is None or incarnation <= dropped:
                return False
        return incarnation >= self._superseded.get(group, 0)

    async def drop_group(
        self, group: str, incarnation: int | None = None, deleted: bool = False
    ) -> bool:
        """Stop hosting ``group`` and delete its data (idempotent). True when it was hosted.

        ``incarnation``: that of the table whose group is dropped (DeleteTable's, healing's);
        a replica of a newer one stays: a late drop of a deleted table must not drop the
        replica of a table created since under the same name. None: whatever it is.
        ``deleted``: DeleteTable's: no create_group of that incarnation (or older) passes.
        Once begun (the lock held), a drop ends even if its caller is cancelled (a closed
        connection): cut after the record, the group stayed hosted though recorded deleted."""
        async with self._group_lock:
            self._check_running()
            return await uninterrupted(self._drop(group, incarnation, deleted))

    async def _drop(self, group: str, incarnation: int | None, deleted: bool) -> bool:
        if deleted and incarnation is not None:
            await self._record_deleted(group, incarnation)
        hosted = self.incarnations.get(group, 0)
        if group in self.replicas and incarnation is not None and hosted > incarnation:
            log.warning("%s: not dropped: a drop of incarnation %d, the replica is of %d",
                        group, incarnation, hosted)  # fmt: skip
            return False
        # Hosted or not: a reconcile may be about to create it (``_map_may_create``).
        self._dropped[group] = incarnation
        return await self._discard(group)

    async def _record_deleted(self, group: str, incarnation: int) -> None:
        """Under the group lock: record DeleteTable's drop of ``group`` of ``incarnation``,
        durably (fsynced off the event loop before the drop is acknowledged; a failure fails
        the drop, which then drops nothing), for good: a leftover leader may ask to create it
        at any time, after a restart too (``deletedrecord.py``: never pruned)."""
        await asyncio.to_thread(self._deleted.add, group, incarnation)

    def _is_deleted(self, group: str, incarnation: int) -> bool:
        """Did DeleteTable drop ``group``'s table of ``incarnation`` here (deleted.log)? The
        newest incarnation deleted stands for every older one."""
        return self._deleted.is_deleted(group, incarnation)

    async def _discard_deleted(self, group: str) -> None:
        """At the start: ``group`` is listed in groups.json, of a table DeleteTable dropped
        here (a crash between ``_record_deleted`` and ``_discard``). Not opened: it would vote
        in the deleted table's leftover group. Discarded as the drop does: its files go
        first; groups.json forgets it when ``start`` writes it (a crash in between leaves it
        listed without files and still recorded as deleted: the next start discards it)."""
        log.warning("%s: of incarnation %d, which DeleteTable dropped (deleted.log): "
                    "discarded, not opened", group, self.incarnations.get(group, 0))  # fmt: skip
        self.incarnations.pop(group, None)
        await self._trash(replica_dir(self.config.data_dir, group))

    async def _discard(self, group: str, set_aside: bool = False) -> bool:
        """Under the group lock: close ``group``'s replica and delete its data, if hosted
        (``set_aside``: move it to ``quarantine/`` instead, as a rebuild may).

        The files go (renamed away) before groups.json forgets the group: a crash in between
        leaves the group listed with no files, which the next start rejoins empty (no votes
        until caught up). The other order left the files of a group no longer listed, which a
        create_group of the group then opened as the new replica's state."""
        replica = self.replicas.pop(group, None)
        if replica is None:
            return False
        await replica.close()
        self.incarnations.pop(group, None)
        self._unconfirmed.discard(group)
        path = replica_dir(self.config.data_dir, group)
        if set_aside:
            aside = self.config.data_dir / "quarantine" / f"{group}-{time.time_ns()}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # already gone (wiped)
                path.rename(aside)
            self._save_groups()
            log.warning("%s: the replica's files are in %s", group, aside)
        else:
            await self._trash(path, self._save_groups)
        return True

    async def _trash(self, path: Path, then: Callable[[], None] | None = None) -> None:
        """Delete a replica's directory: renamed at once (atomic: a crash never leaves a
        half-deleted replica where a replica is looked for), ``then`` called, then removed."""
        trash = path.with_name(f"{DROPPED_PREFIX}{path.name}-{time.monotonic_ns()}")
        with contextlib.suppress(FileNotFoundError):  # already gone (wiped): nothing to move
            path.rename(trash)
        if then is not None:
            then()
        await asyncio.to_thread(shutil.rmtree, trash, True)

    async def rebuild_group(self, group: str, dump: bytes, set_aside: bool) -> int:
        """Rebuild ``group``'s replica as a full one from ``dump`` (a healthy replica's
        ``ItemStore.dump``) plus this replica's own Raft state (``rebuild.py``).

        The slow part (restoring the dump) happens before the old replica is closed, so the
        replica is out of service only while its WAL is rewritten. The old files go to
        ``quarantine/`` when ``set_aside`` (evidence of corruption), else they are deleted.
        Returns the snapshot index the new replica starts from.

        Rebuilds of one group run one after the other, each from a staging directory of its
        own, and a rebuild once begun is the node's, not its caller's: a caller that goes away
        (a healing leader that lost power or gave up, a dropped connection) does not cut it
        short. Two rebuilds sharing one staging directory built a log after a snapshot beside
        another rebuild's store (or none): a replica that could never be opened again.
        """
        task = asyncio.create_task(self._rebuild(group, dump, set_aside), name=f"rebuild-{group}")
        self._rebuilds.add(task)
        task.add_done_callback(self._rebuilds.discard)
        return await asyncio.shield(task)

    async def _rebuild(self, group: str, dump: bytes, set_aside: bool) -> int:
        path = replica_dir(self.config.data_dir, group)
        staging = path.with_name(f"{REBUILD_PREFIX}{group}-{time.monotonic_ns()}")
        async with self._rebuild_locks.setdefault(group, asyncio.Lock()):
            try:
                staged = await uninterrupted(asyncio.to_thread(stage_store, dump, staging))
                check_compatible(staged, self.replica({"group": group}).raft)
                async with self._group_lock:
                    return await uninterrupted(self._swap_rebuilt(group, staged, set_aside))
            finally:
                await asyncio.to_thread(shutil.rmtree, staging, True)  # gone unless swapped in

    async def _swap_rebuilt(self, group: str, staged: Staged, set_aside: bool) -> int:
        """Close the replica, write its WAL beside the staged store, swap the directories and
        open it again (under the group lock, never interrupted half-way)."""
        self._check_running()
        path = replica_dir(self.config.data_dir, group)
        replica = self.replicas.pop(group, None)
        if replica is None:
            raise RequestError("NoSuchGroup", f"node {self.config.node_id} has no {group}")
        await replica.close()
        incarnation = self.incarnations.get(group, 0)
        # The old files reopened: their members as they were (a group of the config has none
        # on disk: opened without, it had no voter and never elected a leader again).
        members = replica.raft.status().membership.voters or None
        try:
            index = await asyncio.to_thread(
                finish_rebuild, staged, replica.raft, self.settings.segment_bytes
            )
            if rejoin_marker(path).exists():  # still rejoining: so is the rebuilt one
                await asyncio.to_thread(mark_rejoining, staged.path)
        except BaseException:
            # the old files are untouched
            await self._open_replica(group, members, incarnation=incarnation)
            raise
        if set_aside:
            aside = self.config.data_dir / "quarantine" / f"{group}-{time.time_ns()}"
            aside.parent.mkdir(parents=True, exist_ok=True)
        else:  # whole until the rebuilt one is in place (a crash: the start puts it back)
            aside = swapped_dir(self.config.data_dir, group, time.monotonic_ns())
        path.rename(aside)
        try:
            staged.path.rename(path)
        except BaseException:
            aside.rename(path)  # the old files, untouched, back
            await self._open_replica(group, members, incarnation=incarnation)
            raise
        # The swap durable before the old copy goes, which is renamed to .dropped-* (durably)
        # before any of it is deleted: a .swapped-* directory, which the start may put back,
        # is only ever a whole replica.
        await asyncio.to_thread(fsync_dir, path.parent)
        await self._open_replica(group, None, incarnation=incarnation)
        self._save_groups()
        if not set_aside:
            await asyncio.to_thread(self._delete_swapped, aside)
        return index

    @staticmethod
    def _delete_swapped(aside: Path) -> None:
        """Blocking: delete a rebuild's old replica once the rebuilt one is durably in place."""
        try:
            trash = trash_of(aside)
            fsync_dir(trash.parent)
        except OSError as exc:  # left whole: the next start deletes it (its group is there)
            log.warning("%s: not deleted (%s)", aside, exc)
            return
        shutil.rmtree(trash, ignore_errors=True)

    async def _reconcile_loop(self) -> None:
        """Join every group the partition map places here that this node does not host yet,
        except those of CREATING tables and those it was told to drop (the map lags).

        Groups are never dropped here: a table too new to be in MemDS's map yet must not lose
        its replica. (Groups of tables deleted while this node was down stay as orphans, until
        a table of the same name replaces them: ``create_group``, ``_join_missing``.)
        """
        async with aiohttp.ClientSession() as session:
            while True:
                for url in self.config.memds_urls:
                    try:
                        async with session.get(
                            url + "/map",
                            timeout=aiohttp.ClientTimeout(total=2.0),
                            headers=http_headers("GET", "/map"),
                        ) as resp:
                            body = await resp.json() if resp.status == 200 else None
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        continue
                    if body is not None:
                        await self._join_missing(body.get("tables") or {})
                        break
                # The first round at once: a replica kept from a deleted table is replaced
                # before it may campaign (a restarted replica waits an election timeout). The
                # next one at once too when a replica was retired (``_retire``): the group
                # then joins again, as the map's table, without waiting.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.reconcile_seconds):
                        await self._reconcile_now.wait()
                self._reconcile_now.clear()

    async def _join_missing(self, tables: dict[str, Any]) -> None:
        me = self.config.node_id
        for layout in tables.values():
            if layout is None or (layout.get("spec") or {}).get("status") == "CREATING":
                # A table being created: its router creates the replicas. One joined here ahead
                # of it would be a rejoining one (no votes) that the router's create then keeps,
                # like a dropped group put back (``create_group``). A node that misses the
                # creation joins once the table is ACTIVE.
                continue
            incarnation = int((layout.get("spec") or {}).get("incarnation") or 0)
            for partition in layout.get("partitions", []):
                replicas = [str(r) for r in partition.get("replicas", [])]
                group = str(partition.get("id"))
                if me not in replicas:
                    continue
                # The group exists (it is in the map) and this node lost or never had its copy,
                # or has one of a deleted table of the same name (a lagging map shows an older
                # incarnation, never a newer one): rejoin empty, caught up before it votes.
                # A replica of incarnation 0 (from before incarnations) stays: it serves no
                # request naming another (``replica``) and the group's first message retires
                # it (set aside); deleted here, it might be the one copy of a table created
                # during a rolling upgrade by a new router on nodes not upgraded yet.
                hosted = self.incarnations.get(group, 0)
                if group in self.replicas and hosted == incarnation:
                    self._unconfirmed.discard(group)  # the map's table (0: as unknown)
                if group not in self.replicas or 0 < hosted < incarnation:
                    log.info("joining %s (placed here by the partition map)", group)
                    try:
                        await self.create_group(
                            group, replicas, rejoin=True, from_map=True, incarnation=incarnation
                        )
                    except Exception:  # a bug: logged; the other groups still join
                        log.exception("joining %s failed", group)

    async def _tick_loop(self) -> None:
        """Tick every replica once per tick_seconds of real time, catching up after stalls."""
        while True:
            self._tick_due()
            self._clear_caught_up()
            await asyncio.sleep(max(0.0, self.ticks.next_at - time.monotonic()))

    def _clear_caught_up(self) -> None:
        """Forget the rejoin marker of each replica that caught up (``Raft.rejoin_until``
        None): once what it learned (the leader's term, the entries) is on disk (its loop
        runs ``when_durable`` between Readies, each fsynced), and only while that very
        replica is still the group's (not dropped, rebuilt or replaced meanwhile: the group
        lock held, as they hold it)."""
        for group, replica in list(self._rejoining.items()):
            if self.replicas.get(group) is not replica:  # closed (dropped, rebuilt, replaced)
                del self._rejoining[group]
                continue
            if replica.raft.rejoin_until is not None:
                continue
            del self._rejoining[group]

            def durable(group: str = group, replica: Replica = replica) -> None:
                task = asyncio.create_task(self._clear_marker(group, replica))
                self._clearing.add(task)
                task.add_done_callback(self._clearing.discard)

            replica.when_durable(durable)

    async def _clear_marker(self, group: str, replica: Replica) -> None:
        async with self._group_lock:
            if self.replicas.get(group) is replica and not replica.closing:
                path = replica_dir(self.config.data_dir, group)
                await asyncio.to_thread(clear_rejoining, path)
                log.info("%s: caught up: votes again", group)

    def _tick_due(self) -> None:
        """Submit every tick whose instant has come. Also called before each peer message:
        after a stall the messages that waited are read before the tick loop wakes, and their
        catch-up ticks must not reach a follower after a heartbeat (``TickSchedule``). More
        than one due at once means the loop stalled: they are catch-up ticks (``Raft.tick``),
        which elect nobody and depose nobody before the waiting messages are stepped."""
        instants = list(self.ticks.due(time.monotonic()))
        for instant in instants:
            for replica in self.replicas.values():
                replica.tick(instant, catch_up=len(instants) > 1)

    # --- connections ---------------------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._accepted.add(writer)
        try:
            hello, proven = await receive_hello(reader, writer)  # cluster/auth.py
            if not proven:
                self.refused += 1
                log.info("refused a connection from %s: no proof of the cluster's key",
                         writer.get_extra_info("peername"))  # fmt: skip
            elif hello.get("hello") == "peer":
                await self._serve_peer(str(hello.get("node")), reader)
            elif hello.get("hello") == "client":
                await self._serve_client(reader, writer, True)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down: the server closes its connections
        except FrameError as exc:
            log.warning("dropping connection: %s", exc)
        finally:
            self._accepted.discard(writer)
            writer.close()

    async def _serve_peer(self, peer: str, reader: asyncio.StreamReader) -> None:
        """Step the Raft messages a peer sends; a frame carries all that waited for its link
        (transport.py), often one per group: read and decoded as one batch."""
        while True:
            msgs = decode_frame_messages(await read_frame(reader))
            self.links.heard_from(peer)
            self._tick_due()  # the ticks of instants before they arrived go first
            for msg in msgs:
                replica = self.replicas.get(msg.group)
                if replica is None:  # groups we do not host are created explicitly first
                    continue
                if msg.incarnation != replica.incarnation:  # another group of the same id
                    self.foreign_messages += 1  # (its core would drop it too: Raft.step)
                    if msg.incarnation > replica.incarnation:
                        self._retire(replica, msg.incarnation)
                    continue
                replica.step(msg)

    def _retire(self, replica: Replica, newer: int) -> None:
        """A peer's replica of ``replica``'s group is of a newer incarnation: ours is of a
        table deleted while this node did not hear of it (down, cut off), whose name was used
        again. Its messages reach nobody of the new group (nor theirs it), so it takes no part
        in it, but it would serve the deleted table's items to eventually consistent reads:
        it is closed, and the reconcile (at once) joins the map's table, empty and rejoining.
        Until then (MemDS unreachable) this node hosts no replica of the group. Its files are
        set aside (``quarantine/``), not deleted: the peer's word decides, and should an
        incarnation ever not have grown (a bug), they still hold what this replica had."""
        group = replica.group
        self._superseded[group] = max(self._superseded.get(group, 0), newer)
        if group in self._retirements:
            return

        async def retire() -> None:
            try:
                async with self._group_lock:
                    if self._stopping or self.replicas.get(group) is not replica:
                        return  # stopping, or replaced meanwhile (a create_group, a rebuild)
                    log.warning(
                        "%s: a peer's replica is of incarnation %d, ours of %d (a deleted "
                        "table's): discarding ours",
                        group,
                        newer,
                        replica.incarnation,
                    )
                    await self._discard(group, set_aside=True)
                self._reconcile_now.set()
            except Exception:  # a bug, or the files could not be moved: logged, retried later
                log.exception("%s: retiring the replica failed", group)
            finally:
                del self._retirements[group]

        self._retirements[group] = asyncio.create_task(retire(), name=f"retire-{group}")

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trusted: bool
    ) -> None:
        out = Coalescer(writer)  # replies finished in one loop pass leave in one send
        tasks: set[asyncio.Task[None]] = set()

        def send(request: dict[str, Any], response: dict[str, Any]) -> None:
            response["id"] = request.get("id")
            out.write(encode_frame(response))

        async def answer(request: dict[str, Any]) -> None:
            response: dict[str, Any]
            if not trusted and request.get("op") in PRIVILEGED_OPS:
                response = {
                    "error": "Unauthorized",
                    "message": f"{request.get('op')} needs the cluster's internal key",
                }
            else:
                response = await self.handle_request(request)
            send(request, response)
            await out.drain()

        try:
            while True:
                request = await read_frame(reader)
                if request.get("op") == "propose":  # most requests: no task of their own
                    self._answer_propose(request, send)
                    await out.drain()  # back-pressure on the reading, as each answer had
                    continue
                task = asyncio.create_task(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    # --- client requests -------------------------------------------------------------------------

    async def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = str(request.get("op"))
        started = time.monotonic()
        try:
            handler = _HANDLERS.get(op)
            if handler is None:
                raise RequestError("ValidationException", f"unknown operation {op!r}")
            if op in _ADMITTED:
                self._admit(request)
            response = await handler(self, request)
            outcome = "ok"
        except Exception as exc:
            response, outcome = _failure(op, exc)
        self.calls.observe(op, outcome, time.monotonic() - started)
        return response

    def _answer_propose(
        self, request: dict[str, Any], send: Callable[[dict[str, Any], dict[str, Any]], None]
    ) -> None:
        """``handle_request`` of a propose, answered through ``send`` by a callback on the
        proposal's future and a timer, instead of a task and ``wait_for(shield())`` per
        request (a tenth of a leader's request CPU). Same checks in the same order, same
        replies, same metrics; the answer is sent once, whichever of outcome and timeout
        comes first (a late outcome is dropped, as the task's was)."""
        started = time.monotonic()
        try:
            self._admit(request)
            timeout = float(request.get("timeout", 5.0))
            replica = self.replica(request)
            future = replica.start_propose(bytes(request["cmd"]))
        except Exception as exc:
            response, outcome = _failure("propose", exc)
            self.calls.observe("propose", outcome, time.monotonic() - started)
            send(request, response)
            return

        def settle(response: dict[str, Any], outcome: str) -> None:
            if timer is not None:
                timer.cancel()
            if not answered:
                answered.append(True)
                self.calls.observe("propose", outcome, time.monotonic() - started)
                send(request, response)

        def done(f: asyncio.Future[ApplyResult]) -> None:
            if f.cancelled():  # the node is stopping: no answer (as the task's was cancelled)
                if timer is not None:
                    timer.cancel()
                answered.append(True)
                return
            exc = f.exception()
            if exc is None:
                settle({"result": f.result().to_wire()}, "ok")
            else:
                settle(*_failure("propose", exc))

        def late() -> None:
            lost = OutcomeUnknown(f"{replica.group}: no outcome within {timeout}s")
            settle(*_failure("propose", lost))

        answered: list[bool] = []
        timer: asyncio.TimerHandle | None = None
        if not future.done():
            timer = asyncio.get_running_loop().call_later(max(0.0, timeout), late)
        future.add_done_callback(done)

    def _admit(self, request: dict[str, Any]) -> None:
        """The partition-level bucket, applied where the work lands: at the group's leader."""
        group = str(request.get("group"))
        replica = self.replicas.get(group)
        if replica is None or replica.raft.leader != self.config.node_id:
            return
        if not self.admission.try_admit(group, 1.0, time.monotonic()):
            provisioned = self.limits.get(group, (None, False))[1]
            raise RequestError(
                "Throttled", f"partition {group} is over its rate", provisioned=provisioned
            )

    def replica(self, request: dict[str, Any]) -> Replica:
        group = str(request["group"])
        replica = self.replicas.get(group)
        if replica is None:
            raise RequestError("NoSuchGroup", f"node {self.config.node_id} has no group {group}")
        # The table the client means (its map's incarnation). A replica of another one is
        # another table's: a deleted one's kept while this node was down, with others of it
        # maybe a quorum that elects and acknowledges (session 13), or a table newer than the
        # client's map. It answers NotLeader: the client tries another replica. Retired only
        # on a peer's word (``_serve_peer``). 0 is an incarnation like any other (a table
        # created before incarnations, whose replicas are 0 too): a 0 replica left from such
        # a table, deleted and created again (N > 0), acknowledged N's writes (session 14).
        # Only a request naming none (absent: a router before incarnations, during a rolling
        # upgrade) is served whatever the replica is: it cannot say which table it means.
        # (Tables created during a rolling upgrade would have N in the map and 0 on the nodes
        # not upgraded yet: not supported, no CreateTable/DeleteTable during one, FINDINGS s13.)
        wanted = request.get("incarnation")
        if wanted is not None and int(wanted) != replica.incarnation:
            raise NotLeader(group, None)
        return replica

    async def _op_propose(self, request: dict[str, Any]) -> dict[str, Any]:
        timeout = float(request.get("timeout", 5.0))
        result = await self.replica(request).propose(bytes(request["cmd"]), timeout)
        return {"result": result.to_wire()}

    def _readable(self, request: dict[str, Any], as_is: bool = False) -> Replica:
        """The replica to read, if it may: one read as it is (eventually consistent, or
        ``as_is``) needs a replica known to be of the live table (``_unconfirmed``), or a
        request naming its incarnation (the router's map, a rebuild's replica: ``replica``
        refused any other); else NotLeader, and the client reads another replica. A
        consistent read needs the lease, which only a replica its group elected holds."""
        replica = self.replica(request)
        unsure = replica.group in self._unconfirmed and not (
            replica.incarnation and request.get("incarnation")  # (equal: ``replica`` checked)
        )
        if unsure and (as_is or not request.get("consistent")):
            raise NotLeader(replica.group, None)
        return replica

    async def _op_get(self, request: dict[str, Any]) -> dict[str, Any]:
        return await reads.get(self._readable(request), request)

    async def _op_txn_read(self, request: dict[str, Any]) -> dict[str, Any]:
        return await reads.txn_read(self.replica(request), request)

    async def _op_txn_check(self, request: dict[str, Any]) -> dict[str, Any]:
        return await reads.txn_check(self.replica(request), request)

    async def _op_query(self, request: dict[str, Any]) -> dict[str, Any]:
        return await reads.query(self._readable(request), request)

    async def _op_scan(self, request: dict[str, Any]) -> dict[str, Any]:
        return await reads.scan(self._readable(request), request)

    async def _op_status(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _op_digest(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = request.get("group")
        replicas = [self.replica(request)] if wanted else list(self.replicas.values())
        return {"digests": [await r.digest() for r in replicas]}

    async def _op_rebuild(self, request: dict[str, Any]) -> dict[str, Any]:
        """Rebuild this node's replica of ``group`` as a full one from one of ``sources``."""
        self.replica(request)
        return await rebuild_from(
            self,
            str(request["group"]),
            [str(s) for s in request.get("sources", [])],
            bool(request.get("set_aside")),
            float(request.get("timeout", 600.0)),
        )

    async def _op_scrub_report(self, request: dict[str, Any]) -> dict[str, Any]:
        """This replica's verification at scrub mark ``id`` (None while it runs or unknown);
        ``pending`` False: it has not met the mark (not applied that far yet, or skipped it:
        refilled from a snapshot, restarted); ``applied`` tells which."""
        replica = self.replica(request)
        scrub_id = str(request["id"])
        report = replica.scrub_reports.get(scrub_id)
        body = None if report is None else report.to_wire()
        pending = scrub_id in replica.scrub_reports
        return {"report": body, "pending": pending, "applied": replica.raft.applied_index}

    async def _op_quarantine(self, request: dict[str, Any]) -> dict[str, Any]:
        """Stop trusting this replica's data (the scrub found it bad); it is rebuilt later."""
        replica = self.replica(request)
        replica.quarantine(str(request.get("reason") or "quarantined by the scrub"))
        return {"mode": replica.mode.value}

    async def _op_snapshot_dump(self, request: dict[str, Any]) -> dict[str, Any]:
        """A full replica's whole applied state (``ItemStore.dump``), to build another from."""
        data = await self._readable(request, as_is=True).read_local(lambda store: store.dump())
        return {"data": data}

    async def _op_drop_group(self, request: dict[str, Any]) -> dict[str, Any]:
        incarnation = request.get("incarnation")  # absent (callers before it): whatever it is
        incarnation = None if incarnation is None else int(incarnation)
        deleted = bool(request.get("deleted"))
        return {"dropped": await self.drop_group(str(request["group"]), incarnation, deleted)}

    async def _op_create_group(self, request: dict[str, Any]) -> dict[str, Any]:
        members = [str(m) for m in request["members"]]
        rate = request.get("rate")
        created = await self.create_group(
            str(request["group"]),
            members,
            None if rate is None else float(rate),
            bool(request.get("provisioned")),
            bool(request.get("log_only")),
            bool(request.get("rejoin")),
            incarnation=int(request.get("incarnation") or 0),  # callers before it: 0
        )
        return {"created": created}

    async def _op_change_membership(self, request: dict[str, Any]) -> dict[str, Any]:
        """Leader only: change one member of a group (thesis §4.1), waiting for it to commit."""
        replica = self.replica(request)
        new = Membership(frozenset(request["voters"]), frozenset(request.get("log_only", [])))
        if len(new.voters) < 2 <= len(replica.raft.status().membership.voters):
            # Raft allows one voter, but DeleteTable's drain counts on every group keeping two
            # (router/tabledrain.py: with all but one node past the drop, no quorum is left).
            raise RequestError("ValidationException", f"{replica.group} keeps at least 2 voters")
        await replica.change_membership(new, float(request.get("timeout", 5.0)))
        return {"members": sorted(new.voters)}

    def status(self) -> dict[str, Any]:
        return {
            "node": self.config.node_id,
            "uptime_seconds": round(time.monotonic() - self.started_at, 3),
            "replicas": [r.status() for r in self.replicas.values()],
            "peers": self.links.stats(),
            "journal": None if self.journal is None else self.journal.stats(),
            "ready_io": self.ready_io.stats(),
            "foreign_messages": self.foreign_messages,
        }


def _failure(op: str, exc: BaseException) -> tuple[dict[str, Any], str]:
    """The reply to a request that raised ``exc``, and its outcome label for the metrics."""
    if isinstance(exc, RequestError):
        return {"error": exc.code, "message": str(exc), **exc.extra}, exc.code
    if isinstance(exc, NotLeader):
        return {"error": "NotLeader", "message": str(exc), "leader": exc.leader}, "NotLeader"
    if isinstance(exc, ProposalRejected):
        return {"error": "Rejected", "message": str(exc)}, "Rejected"
    if isinstance(exc, OutcomeUnknown | TimeoutError):
        return {"error": "OutcomeUnknown", "message": str(exc) or "timed out"}, "OutcomeUnknown"
    if isinstance(exc, KeyError | TypeError | ValueError):
        message = f"bad request: {exc!r}"
        return {"error": "ValidationException", "message": message}, "ValidationException"
    # A bug: logged, and answered as what the caller could only have concluded from silence
    # (its timeout): the outcome is unknown (a write may have been applied).
    log.error("%s failed", op, exc_info=exc)
    return {"error": "OutcomeUnknown", "message": f"{op} failed: {exc!r}"}, "InternalError"


_ADMITTED = frozenset({"propose", "get", "query", "scan", "txn_read"})
# Operations that change membership or hand out or destroy data: only for connections whose
# hello proved the cluster's internal key (cluster/auth.py).
PRIVILEGED_OPS = frozenset(
    {"create_group", "drop_group", "snapshot_dump", "rebuild", "quarantine", "change_membership"}
)
_HANDLERS = {
    "propose": StorageNode._op_propose,
    "get": StorageNode._op_get,
    "txn_read": StorageNode._op_txn_read,
    "txn_check": StorageNode._op_txn_check,
    "query": StorageNode._op_query,
    "scan": StorageNode._op_scan,
    "status": StorageNode._op_status,
    "digest": StorageNode._op_digest,
    "create_group": StorageNode._op_create_group,
    "drop_group": StorageNode._op_drop_group,
    "snapshot_dump": StorageNode._op_snapshot_dump,
    "rebuild": StorageNode._op_rebuild,
    "scrub_report": StorageNode._op_scrub_report,
    "quarantine": StorageNode._op_quarantine,
    "change_membership": StorageNode._op_change_membership,
}
