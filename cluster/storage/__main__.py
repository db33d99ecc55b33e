"""Run one storage node: ``python -m cluster.storage --node-id n1 --listen 127.0.1.1:7100 ...``.

    python -m cluster.storage --node-id n1 --data-dir data/n1 \
        --listen 127.0.1.1:7100 --admin 127.0.1.1:7180 \
        --peer n2=127.0.1.2:7100 --peer n3=127.0.1.3:7100 --group p0=n1,n2,n3

``--peer`` gives the address this node dials to reach a peer: point it at a Toxiproxy listener
to route that link through the mesh. This entry point is where healing is wired in (the
storage package itself never imports it): the admin runs inside the node as a service.
SIGTERM and SIGINT stop the node cleanly; SIGKILL is a crash it recovers from on the next start.
A node that fails while it runs (its journal's I/O, a replica's loop: ``StorageNode._fail_stop``)
stops by itself and exits with one line, status 1 (fail-stop), to be started again.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cluster import auth
from cluster.config import ClusterConfig
from cluster.consensus.raft import RaftConfig
from cluster.healing.admin import Admin
from cluster.healing.settings import HealingSettings
from cluster.logsetup import configure
from cluster.metadata.partitionmap import META_GROUP, meta_replicas
from cluster.process import run_loop, shutdown_signal
from cluster.topology import parse_topology

from . import itemstore
from .layout import GROUPS_DIR
from .node import NodeConfig, NodeFailed, StopFailed, StorageNode

STOP_SECONDS = 5.0

_HEALING_DEFAULT = "auto"  # GAMEDAY_HEALING overrides it


def _shared_archive(config: Path, data_dir: Path) -> Path | None:
    """The cluster directory's ``archive`` when this node's data lives under it (the local
    backend: <cluster>/nodes/<id>), so that every node archives into the same place."""
    cluster_dir = config.resolve().parent
    return cluster_dir / "archive" if cluster_dir in data_dir.resolve().parents else None


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise SystemExit(f"{flag} expects NAME=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


@dataclass(frozen=True)
class Launch:
    """What one node process runs: the node, and healing's settings when it is on."""

    node: NodeConfig
    # Healing (cluster.healing): None turns the admin off. It needs every storage node's AZ;
    # ``meta_home`` lists the metadata group's fixed nodes (routers look for it there).
    healing: HealingSettings | None = None
    node_azs: dict[str, str] | None = None
    meta_home: tuple[str, ...] = ()


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str]) -> Launch:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.storage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--node-id", required=True)
    parser.add_argument(
        "--config",
        type=Path,
        help="cluster config JSON: gives listen, admin, "
        "peers and the meta group; the flags below then are not needed",
    )
    parser.add_argument("--listen", help="host:port for peers and clients")
    parser.add_argument("--admin", help="host:port of the admin HTTP endpoint")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--peer", action="append", default=[], help="ID=HOST:PORT to dial")
    parser.add_argument("--group", action="append", default=[], help="GROUP=ID,ID,ID")
    parser.add_argument(
        "--tick-ms", type=float, help="Raft tick (default: the cluster config's, else 50)"
    )
    parser.add_argument(
        "--election-ticks",
        type=int,
        help="minimum election timeout in ticks (default: the cluster config's, else 8)",
    )
    parser.add_argument(
        "--compact-every",
        type=_at_least_one,
        default=2000,
        help="applied entries between log compactions (snapshots) of a replica (default 2000)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--healing",
        choices=["auto", "on", "off"],
        default=os.environ.get("GAMEDAY_HEALING", _HEALING_DEFAULT),
        help="the healing admin (failure detection, log replicas, scrub); auto: on with "
        "--config (it needs every node's AZ)",
    )
    parser.add_argument(
        "--heal-grace",
        type=float,
        default=float(os.environ.get("GAMEDAY_HEAL_GRACE", "3.0")),
        help="seconds a member may be unreachable before it is replaced",
    )
    parser.add_argument(
        "--scrub-seconds",
        type=float,
        default=float(os.environ.get("GAMEDAY_SCRUB_SECONDS", "60")),
        help="seconds between scrubs of each group (0: only on demand)",
    )
    parser.add_argument(
        "--archive-dir",
        type=Path,
        default=os.environ.get("GAMEDAY_ARCHIVE_DIR") or None,
        help="WAL archive directory, shared by every node (default: 'archive' in the cluster's "
        "directory when this node's data lives there, as on the local backend; else none)",
    )
    args = parser.parse_args(argv)
    configure(args.node_id, args.log_level)
    election, tick_ms = args.election_ticks or 8, args.tick_ms or 50.0
    listen, admin = args.listen, args.admin
    peers = _pairs(args.peer, "--peer")
    groups = {g: tuple(m.split(",")) for g, m in _pairs(args.group, "--group").items()}
    memds: tuple[str, ...] = ()
    unsafe_ack = False
    journal = True
    node_azs: dict[str, str] = {}
    meta_home: tuple[str, ...] = ()
    archive_dir: Path | None = args.archive_dir
    if args.config is not None:
        cluster = ClusterConfig.load(args.config)
        auth.install(cluster.internal_secret())
        # Routers derive their timeouts from the same numbers (ClusterConfig.timeouts).
        election = args.election_ticks or cluster.election_ticks
        tick_ms = args.tick_ms or cluster.tick_ms
        me = cluster.process(args.node_id)
        listen, admin = listen or me.listen, admin or me.admin
        peers = {**cluster.dial_map(args.node_id, "storage"), **peers}
        meta = meta_replicas(parse_topology(cluster.topology))
        if args.node_id in meta:
            groups.setdefault(META_GROUP, meta)
        unsafe_ack = "ack-before-commit" in cluster.unsafe
        if "no-fsync" in cluster.unsafe:
            unsafe_skip_fsync()
            journal = False  # each table group's WAL "fsyncs" by itself, i.e. never
        node_azs = {p.id: p.az for p in cluster.processes_with_role("storage")}
        meta_home = meta
        memds = tuple(
            f"http://{cluster.dial_address(args.node_id, p.id)}"
            for p in cluster.processes_with_role("memds")
        )
    if not listen or not admin:
        parser.error("--listen and --admin are required without --config")
    healing = None
    if args.healing == "on" or (args.healing == "auto" and args.config is not None):
        healing = HealingSettings(grace_seconds=args.heal_grace, scrub_seconds=args.scrub_seconds)
        if archive_dir is None and args.config is not None:
            archive_dir = _shared_archive(args.config, args.data_dir)
    node = NodeConfig(
        node_id=args.node_id,
        listen=listen,
        admin=admin,
        data_dir=args.data_dir,
        peers=peers,
        groups=groups,
        tick_seconds=tick_ms / 1000.0,
        raft=RaftConfig(
            election_ticks=election,
            lease_ticks=max(1, election * 4 // 5),
            spread_first_leaders=True,  # the first leaders of many groups spread over nodes
        ),
        compact_every=args.compact_every,
        memds_urls=memds,
        unsafe_ack_before_commit=unsafe_ack,
        journal=journal,
        archive_dir=archive_dir,
        archive_seconds=healing.archive_seconds if healing is not None else 1.0,
    )
    return Launch(node, healing, node_azs, meta_home)


def unsafe_skip_fsync() -> None:
    """TEST-ONLY broken mode "no-fsync" (ClusterConfig.unsafe): this process never fsyncs the
    data of a table's replicas, neither their WAL nor SQLite (the metadata group and the node's
    own files still are, so that a cluster that lost power comes back, without the data). A power
    off cannot tell (the page cache survives); a power loss of every replica of a group must
    lose acknowledged writes, and the durability check must say so."""
    logging.getLogger(__name__).warning("UNSAFE no-fsync: table data on this node is not durable")
    real_fsync = os.fsync

    def table_data(path: str) -> bool:
        parts = Path(path).parts
        return GROUPS_DIR in parts and META_GROUP not in parts

    def fsync_all_but_table_data(fd: int | os.PathLike[str] | object) -> None:
        assert isinstance(fd, int)
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if not table_data(path):
            real_fsync(fd)

    os.fsync = os.fdatasync = fsync_all_but_table_data
    itemstore.synchronous_level = lambda path: "OFF" if table_data(str(path)) else "FULL"


def settle_garbage_collector() -> None:
    """Keep what the process holds before the node starts (modules, classes, functions: ~60k
    objects) out of Python's full collections. Those walk every tracked object while holding
    the GIL: each stopped the event loop and the I/O thread for 20-30 ms here (23-105 ms under
    bench/replication.py's half load, the largest stalls after compaction's). Frozen objects
    are never collected as cycles, so only what lives as long as the process is frozen: the
    node and its replicas are created after this, and collected as before."""
    gc.collect()
    gc.freeze()


async def serve(launch: Launch) -> None:
    settle_garbage_collector()
    node = StorageNode(launch.node)
    if launch.healing is not None:
        node.add_service(Admin(node, launch.healing, launch.node_azs or {}, launch.meta_home))
    await node.start()
    await shutdown_signal(node.failed)
    try:
        # Everything durable is on disk already; a stop that hangs must not keep us alive.
        await asyncio.wait_for(node.stop(), STOP_SECONDS)
    except TimeoutError:
        logging.getLogger(__name__).warning("clean stop took over %ss; exiting", STOP_SECONDS)
    except StopFailed:
        if node.failure is None:
            raise
        # Expected after a failure (each part's failure is logged): the node's own is said.
    if node.failure is not None:
        raise node.failure


def main(argv: list[str] | None = None) -> None:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run_loop(serve(config))
    except (StopFailed, NodeFailed) as exc:  # each failure logged once: one line, status 1
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
