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
      groups/.swapped-<group>-<ns> a rebuild's old replica, whole, while the rebuilt one moves in
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
SWAPPED_PREFIX = ".swapped-"
REJOIN_FILE = "REJOINING"


def replica_dir(node_dir: Path, group: str) -> Path:
    """The directory of ``group``'s replica on the node whose data directory is ``node_dir``."""
    return node_dir / GROUPS_DIR / group


def remove_leftovers(node_dir: Path, hosted: set[str]) -> list[Path]:
    """Delete (and return) the directories of ``node_dir``'s groups/ that a crash left behind:
    replicas being deleted (``DROPPED_PREFIX``), rebuild staging (``REBUILD_PREFIX``) and a
    rebuild's old replica (``SWAPPED_PREFIX``), which their owner removes as soon as it runs
    to its end. Never a group of ``hosted`` (a group's name may start so), nor the old replica
    of a hosted group whose directory is missing (``restore_swapped`` puts it back). Blocking:
    for a thread, at the start, after ``restore_swapped``."""
    groups = node_dir / GROUPS_DIR
    needed = {group for group in hosted if not replica_dir(node_dir, group).exists()}
    found = sorted(
        path
        for path in (groups.iterdir() if groups.is_dir() else ())
        if path.name.startswith((DROPPED_PREFIX, REBUILD_PREFIX, SWAPPED_PREFIX))
        and path.name not in hosted
        and not any(_swapped_of(path.name, group) is not None for group in needed)
    )
    for path in found:
        if path.name.startswith(SWAPPED_PREFIX):  # never partly deleted under its own name
            try:
                path = trash_of(path)
                fsync_dir(groups)
            except OSError:
                continue  # left whole, for the next start
        shutil.rmtree(path, ignore_errors=True)
    return found


def trash_of(swapped: Path) -> Path:
    """Rename a rebuild's old replica (``swapped_dir``) to a name of a copy being deleted, and
    return that: a ``SWAPPED_PREFIX`` directory is only ever a whole replica."""
    trash = swapped.with_name(f"{DROPPED_PREFIX}{swapped.name}")
    swapped.rename(trash)
    return trash


def swapped_dir(node_dir: Path, group: str, ns: int) -> Path:
    """Where a rebuild's swap puts ``group``'s old replica (``ns``: a unique number) until the
    rebuilt one is in place. Only ever renamed, never deleted where it is (renamed to a
    ``DROPPED_PREFIX`` name first): such a directory is always a whole replica."""
    return node_dir / GROUPS_DIR / f"{SWAPPED_PREFIX}{group}-{ns}"


def _swapped_of(name: str, group: str) -> int | None:
    """The number of ``swapped_dir(_, group, number)`` when ``name`` is one, else None (the
    group ``t.p0``'s copies are not the group ``t.p0-1.p0``'s)."""
    head = f"{SWAPPED_PREFIX}{group}-"
    number = name[len(head) :]
    return int(number) if name.startswith(head) and number.isdigit() else None


def restore_swapped(node_dir: Path, hosted: set[str]) -> list[str]:
    """Put back what a crash inside a rebuild's swap left (between its two renames): a hosted
    group without its directory whose old replica is at ``swapped_dir`` (whole: renamed away,
    nothing deleted from it). The rebuild never happened, rather than the group rejoin empty
    and forget its vote and acknowledged entries. Returns the groups restored. Blocking: for
    a thread, at the start, before ``remove_leftovers``."""
    groups = node_dir / GROUPS_DIR
    missing = sorted(g for g in hosted if not replica_dir(node_dir, g).exists())
    names = [path.name for path in groups.iterdir()] if missing and groups.is_dir() else []
    restored = []
    for group in missing:
        # One at most (a swap puts its copy back, or deletes it once the rebuilt one is in
        # place, before the next swap of the group); the newest of one boot if ever more.
        copies = [(n, name) for name in names if (n := _swapped_of(name, group)) is not None]
        if copies:
            (groups / max(copies)[1]).rename(replica_dir(node_dir, group))
            restored.append(group)
    if restored:
        fsync_dir(groups)
    return restored


def fsync_dir(directory: Path) -> None:
    """Make the names in ``directory`` (created, renamed, removed) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rejoin_marker(replica: Path) -> Path:
    """Present while the replica rejoins (Raft.rejoin: its vote record was lost), so that a
    restart before a leader caught it up rejoins again rather than vote with the lost record.
    Inside the replica's directory: it goes with it (dropped, quarantined, swapped by a
    rebuild), so no new replica of the group inherits it."""
    return replica / REJOIN_FILE


def mark_rejoining(replica: Path) -> None:
    """Blocking: record durably that the replica at ``replica`` rejoins, before it is opened
    (it writes no term nor vote of its own before): the marker, its directory's entry and,
    when the directory is new, the directory's own entry, all fsynced."""
    created = not replica.exists()
    replica.mkdir(parents=True, exist_ok=True)
    replace_durably(rejoin_marker(replica), "rejoining: no votes until caught up\n")
    if created:
        fsync_dir(replica.parent)
        fsync_dir(replica.parent.parent)


def clear_rejoining(replica: Path) -> None:
    """Blocking: the replica caught up (its state durable): it votes again, after a restart too."""
    marker = rejoin_marker(replica)
    if marker.exists():
        marker.unlink()
        fsync_dir(replica)


def journal_dir(node_dir: Path) -> Path:
    """The directory of the node's journal (group commit for every replica's WAL)."""
    return node_dir / JOURNAL_DIR


def groups_file(node_dir: Path) -> Path:
    """The node's list of hosted groups."""
    return node_dir / GROUPS_FILE


def deleted_file(node_dir: Path) -> Path:
    """The node's record of DeleteTable's drops as older code wrote it (one JSON object of
    group -> the newest incarnation dropped): merged into ``deleted_log`` at the start, kept
    read-only for a rollback (deletedrecord.py)."""
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
    fsync_dir(path.parent)
