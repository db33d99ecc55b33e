"""Where a storage node keeps its files: the one owner of the on-disk layout.

A node's data directory holds one directory per replica it hosts; a replica holds its SQLite
B-tree and its write-ahead log segments. The node, the replica and anything that must find
these files from outside (a backend locating a replica, the bit-rot fault) ask this module
instead of spelling the paths.

    node_dir/
      groups.json                  the groups this node hosts
      deleted.log                  the groups DeleteTable dropped: group -> newest incarnation
                                   (append-only, deletedrecord.py; deleted.json: older form)
      journal/*.jnl                the node's journal, shared by its groups' WALs (journal.py)
      groups/<group>/items.sqlite  the applied state (B-tree)
      groups/<group>/wal/*.wal     the write-ahead log, one file per segment
      groups/.dropped-*            a replica being deleted (renamed first: ``StorageNode._trash``)
      groups/.rebuild-*            a rebuild's staging directory
      quarantine/<group>-<ns>      a replica set aside (corrupt, retired): kept for people

    replica = replica_dir(Path("data/sn-a1"), "gameday.p0")
    items_file(replica)            # data/sn-a1/groups/gameday.p0/items.sqlite
    wal_segments(replica)          # [.../wal/00000000000000000001.wal, ...] in log order
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

GROUPS_DIR = "groups"
GROUPS_FILE = "groups.json"
DELETED_FILE = "deleted.json"
DELETED_LOG = "deleted.log"
ITEMS_FILE = "items.sqlite"
WAL_DIR = "wal"
JOURNAL_DIR = "journal"
WAL_SUFFIX = ".wal"
DROPPED_PREFIX = ".dropped-"
REBUILD_PREFIX = ".rebuild-"


def replica_dir(node_dir: Path, group: str) -> Path:
    """The directory of ``group``'s replica on the node whose data directory is ``node_dir``."""
    return node_dir / GROUPS_DIR / group


def remove_leftovers(node_dir: Path, hosted: set[str]) -> list[Path]:
    """Delete (and return) the directories of ``node_dir``'s groups/ that a crash left behind:
    replicas being deleted (``DROPPED_PREFIX``) and rebuild staging (``REBUILD_PREFIX``), which
    their owner removes as soon as it runs to its end. Never a group of ``hosted`` (a group's
    name may start so). Blocking: for a thread, at the start."""
    groups = node_dir / GROUPS_DIR
    found = sorted(
        path
        for path in (groups.iterdir() if groups.is_dir() else ())
        if path.name.startswith((DROPPED_PREFIX, REBUILD_PREFIX)) and path.name not in hosted
    )
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def journal_dir(node_dir: Path) -> Path:
    """The directory of the node's journal (group commit for every replica's WAL)."""
    return node_dir / JOURNAL_DIR


def groups_file(node_dir: Path) -> Path:
    """The node's list of hosted groups."""
    return node_dir / GROUPS_FILE


def deleted_file(node_dir: Path) -> Path:
    """The node's record of DeleteTable's drops as older code wrote it (one JSON object of
    group -> the newest incarnation dropped): migrated to ``deleted_log`` at the start."""
    return node_dir / DELETED_FILE


def deleted_log(node_dir: Path) -> Path:
    """The node's record of DeleteTable's drops (append-only: deletedrecord.py)."""
    return node_dir / DELETED_LOG


def items_file(replica: Path) -> Path:
    """The replica's SQLite B-tree (its applied state)."""
    return replica / ITEMS_FILE


def wal_dir(replica: Path) -> Path:
    """The directory of the replica's write-ahead log segments."""
    return replica / WAL_DIR


def wal_segment(directory: Path, seq: int) -> Path:
    """The file of WAL segment ``seq`` in ``directory`` (zero-padded, so names sort in order)."""
    return directory / f"{seq:020d}{WAL_SUFFIX}"


def wal_segments(replica: Path) -> list[Path]:
    """The replica's WAL segment files, oldest first (none when it has no WAL yet)."""
    return sorted(wal_dir(replica).glob("*" + WAL_SUFFIX))


class RecordCorruption(Exception):
    """A node's record (groups.json, deleted.log, deleted.json) is not what it writes: torn, or
    not of its form. The node does not start: read as empty, it would forget the groups it
    hosts or the tables deleted here (correctness over availability)."""


def read_record(path: Path, expected: str, valid: Callable[[Any], bool]) -> dict[str, Any]:
    """The JSON object of ``path``, each of whose values passes ``valid``; else a
    ``RecordCorruption`` naming the file and what was ``expected`` (e.g. "group -> int")."""
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordCorruption(f"{path}: not JSON ({exc}); expected {expected}") from exc
    if not isinstance(record, dict) or not all(valid(v) for v in record.values()):
        raise RecordCorruption(f"{path}: not a JSON object of {expected}: {record!r:.200}")
    return record


def replace_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably: a temporary file written and
    fsynced, renamed over ``path``, then the directory fsynced. A power loss leaves the old or the
    new content, never an empty or torn file (a rename alone may reach the disk before the data)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
