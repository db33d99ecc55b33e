"""Scrub: verify a replica's files, and judge the replicas of a group against each other.

Each replica verifies itself when it applies a scrub mark (``commands.ScrubCommand``), so
all replicas of a group are verified at the same log index: it reads its whole SQLite file on a
fresh connection (``quick_check``, every row's checksum, the digest: idle data is read as well
as fresh) and every WAL segment's record checksums. The group's leader collects the reports,
adds the digest of a reference replica rebuilt from the WAL archive, and ``judge`` names the
replicas that are bad: a checksum failure, or a digest the majority does not share.

    report = verify_replica(store.open_snapshot(), [(path, size), ...])   # in a worker thread
    verdict = judge({"sn-a1": report_a, "sn-b1": report_b, "sn-c1": report_c}, reference)
    verdict.bad       # {"sn-c1": "digest 9f3e... differs from the agreed 41aa..."}
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import crc32c

from .itemstore import StoreSnapshot

# The WAL's on-disk format (see wal.py): 8-byte magic + u32 version, then records
# u32 length | u32 crc32c(payload) | payload.
_WAL_MAGIC = b"GDWALSEG"
_WAL_HEADER = struct.Struct("<8sI")
_WAL_FRAME = struct.Struct("<II")


def verify_wal_segment(path: Path, size: int) -> list[str]:
    """Problems in the first ``size`` bytes of one WAL segment (the part written so far).

    ``size`` is taken while no write is in progress (on the replica's I/O thread), so those
    bytes must be whole records: a record cut short there means a damaged length field.
    """
    try:
        with path.open("rb") as f:
            data = f.read(size)
    except OSError as exc:
        return [f"{path.name}: unreadable: {exc}"]
    if len(data) < _WAL_HEADER.size:
        return [f"{path.name}: header missing"] if size >= _WAL_HEADER.size else []
    magic, _version = _WAL_HEADER.unpack_from(data)
    if magic != _WAL_MAGIC:
        return [f"{path.name}: bad segment header"]
    pos = _WAL_HEADER.size
    while pos < len(data):
        if len(data) - pos < _WAL_FRAME.size:
            return [f"{path.name}: record at byte {pos}: incomplete frame"]
        length, crc = _WAL_FRAME.unpack_from(data, pos)
        start = pos + _WAL_FRAME.size
        if length == 0 or start + length > len(data):
            return [f"{path.name}: record at byte {pos}: bad length {length}"]
        if crc32c.crc32c(data[start : start + length]) != crc:
            return [f"{path.name}: record at byte {pos}: checksum mismatch"]
        pos = start + length
    return []


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """One replica's verification at one scrub mark."""

    index: int
    mode: str
    digest: str | None  # None: a log replica (nothing applied) or unreadable data
    items: int = 0
    problems: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {**asdict(self), "problems": list(self.problems)}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> ReplicaReport:
        return cls(
            int(body["index"]),
            str(body["mode"]),
            None if body.get("digest") is None else str(body["digest"]),
            int(body.get("items", 0)),
            tuple(str(p) for p in body.get("problems", [])),
        )


def verify_replica(
    index: int,
    mode: str,
    snapshot: StoreSnapshot | None,
    wal: Sequence[tuple[Path, int]],
) -> ReplicaReport:
    """Verify data (when ``snapshot``: a full replica) and WAL segments ``(path, size)``."""
    problems: list[str] = []
    for path, size in wal:
        problems += [f"WAL {p}" for p in verify_wal_segment(path, size)]
    digest, items = None, 0
    if snapshot is not None:
        try:
            if snapshot.applied != index:
                problems.append(f"data: applied index {snapshot.applied}, expected {index}")
            result = snapshot.verify()
            digest, items = result.digest or None, result.items
            problems += [f"data: {p}" for p in result.problems]
        finally:
            snapshot.close()
    return ReplicaReport(index, mode, digest, items, tuple(problems))


@dataclass(frozen=True, slots=True)
class Verdict:
    agreed: str | None  # the digest the majority (reference included) holds
    bad: dict[str, str] = field(default_factory=dict)  # replica -> why
    reference_ok: bool | None = None  # None: no reference to compare with
    undecided: bool = False  # no majority: nothing is repaired, an alarm is raised


def judge(reports: Mapping[str, ReplicaReport], reference: str | None) -> Verdict:
    """Which replicas are bad, given their reports at one index and the reference digest.

    A replica reporting a problem (checksum, unreadable data, wrong index) is bad. Among the
    full replicas' digests, plus the reference's, the one held by a strict majority of those
    voting is agreed; a full replica with another digest is bad. Log replicas have no digest
    and are judged by their WAL only.
    """
    bad = {r: "; ".join(rep.problems) for r, rep in reports.items() if rep.problems}
    votes = Counter(
        rep.digest for r, rep in reports.items() if rep.digest is not None and r not in bad
    )
    if reference is not None:
        votes[reference] += 1
    total = sum(votes.values())
    agreed = None
    if votes:
        digest, count = votes.most_common(1)[0]
        if count * 2 > total:
            agreed = digest
    if agreed is None and total > 0:
        return Verdict(None, bad, None, undecided=True)
    for r, rep in reports.items():
        if r not in bad and rep.digest is not None and rep.digest != agreed:
            bad[r] = f"digest {rep.digest[:12]} differs from the agreed {str(agreed)[:12]}"
    reference_ok = None if reference is None else reference == agreed
    return Verdict(agreed, bad, reference_ok)
