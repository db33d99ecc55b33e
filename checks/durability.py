"""Durability: every acknowledged write survives the faults, and no read invents a value.

From `history.jsonl` and `final_reads.json` (a consistent read of every written key, after heal):

    >>> check_durability(ops, {"k1": 7}).valid   # ops from checks.history  # doctest: +SKIP
    True

Rules, per key (a register; `delete` writes null, `cas` writes its new value):

- The final value must be one that some write could have left last: the value of an ok write that
  no other acknowledged write strictly follows (invoked after it completed), or of any info
  write/cas (it may have taken effect at any time after its invoke). With no acknowledged write
  at all, null (never written) is possible too. Otherwise the acknowledged writes that should
  have been last are reported as lost.
- The reads speak too, for writes that later writes overwrote (the final read cannot tell
  whether those survived): an acknowledged write W is lost when a consistent read (or an ok
  cas, which found its expected value) invoked after W completed returned a value that only
  writes strictly before W wrote (or null, never written), and no read that ended after that
  read began returned W's value again. Writes that may have taken effect at any time (info)
  never count as strictly before. (A stale read that no later read contradicts reads the same
  way; linearizability fails it too.)
- No read (consistent or not, in the history or final) returns a value that no ok or info
  write tried to write, and no ok cas found a value never written.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from checks.history import Operation, by_key, canon
from checks.result import UNKNOWN, CheckResult, Validity, compose_validity, not_applicable
from checks.rundir import RunDir

NAME = "durability"
REPORT_MAX = 20


def _ended(op: Operation) -> float:
    if op.type == "info" or op.complete_time is None:
        return math.inf
    return op.complete_time


def could_be_last(writes: Sequence[Operation]) -> list[Operation]:
    """The ok or info writes that no acknowledged write strictly follows in real time."""
    acked = [w for w in writes if w.type == "ok"]
    latest_invoke = max((w.invoke_time for w in acked), default=-math.inf)
    return [w for w in writes if _ended(w) >= latest_invoke]


def _observed(op: Operation) -> tuple[bool, Any]:
    """(observes, value): whether an ok op saw its key's value at an instant within it, and
    which: a consistent read its result, a cas that succeeded its expected value."""
    if op.type != "ok":
        return False, None
    if op.is_read:
        return op.consistent, op.result
    if op.f == "cas" and isinstance(op.value, list) and len(op.value) == 2:
        return True, op.value[0]
    return False, None


def missed_by_reads(
    key_ops: Sequence[Operation], writes: Sequence[Operation], finals: Sequence[Any] = ()
) -> list[tuple[Operation, Operation]]:
    """(write, read): acknowledged writes of one key that a later consistent read did not see
    (it returned a value only writes strictly before the write had written) and that no read
    saw again after that read began (nor the final read, whose value ``finals`` holds if it
    was taken); in invoke order.
    O(n log n): per write, the reads invoked after it (and after its value was last seen) are
    a suffix of the reads in invoke order; the suffix's earliest-written value decides."""
    # The latest moment each value's writers may have taken effect (never written: -inf).
    written_until: dict[str, float] = {canon(None): -math.inf}
    for w in writes:
        value = canon(w.written_value()[1])
        written_until[value] = max(written_until.get(value, -math.inf), _ended(w))
    last_seen: dict[str, float] = {canon(value): math.inf for value in finals}
    observations: list[tuple[float, float, Operation]] = []  # (invoke, written until, read)
    for op in key_ops:
        observes, got = _observed(op)
        if not observes and not (op.type == "ok" and op.is_read):
            continue  # (any ok read saw a value, consistent or not; only some observe)
        seen = canon(op.result if op.is_read else got)
        complete = op.complete_time if op.complete_time is not None else math.inf
        last_seen[seen] = max(last_seen.get(seen, -math.inf), complete)
        if observes and seen in written_until:  # (a value never written: a phantom, reported)
            observations.append((op.invoke_time, written_until[seen], op))
    if not observations:
        return []
    observations.sort(key=lambda o: o[0])
    invokes = [o[0] for o in observations]
    # suffix_min[i]: the observation from i on whose value was written earliest
    suffix_min: list[int] = [0] * len(observations)
    best = len(observations) - 1
    for i in range(len(observations) - 1, -1, -1):
        if observations[i][1] < observations[best][1]:
            best = i
        suffix_min[i] = best
    missed = []
    for w in writes:
        if w.type != "ok" or w.complete_time is None:
            continue
        after = max(w.complete_time, last_seen.get(canon(w.written_value()[1]), -math.inf))
        i = bisect_right(invokes, after)
        if i < len(observations):
            _, until, read = observations[suffix_min[i]]
            if until < w.invoke_time:
                missed.append((w, read))
    return missed


def _lost(op: Operation, final: Any, why: str) -> dict[str, Any]:
    return {
        "key": op.key,
        "value": op.written_value()[1],
        "time": op.complete_time,
        "invoke_time": op.invoke_time,
        "process": op.process,
        "final_value": final,
        "problem": why,
    }


def check_durability(ops: Sequence[Operation], final_reads: dict[str, Any] | None) -> CheckResult:
    """Check acknowledged writes against the final reads and every read against the writes."""
    lost: list[dict[str, Any]] = []
    phantoms: list[dict[str, Any]] = []
    unverified: list[str] = []
    acknowledged = 0
    keys = 0
    seen: set[str] = set()
    for key, key_ops in by_key(ops):
        seen.add(key)
        writes = [op for op in key_ops if op.written_value()[0] and op.type in ("ok", "info")]
        attempted = {canon(None)} | {canon(op.written_value()[1]) for op in writes}
        failed = {
            canon(op.written_value()[1])
            for op in key_ops
            if op.written_value()[0] and op.type == "fail"
        }
        for op in key_ops:
            if op.type != "ok":
                continue
            if op.is_read and canon(op.result) not in attempted:
                phantoms.append({**op.describe(), "problem": _phantom_why(op.result, failed)})
            elif (
                op.f == "cas"
                and isinstance(op.value, list)
                and len(op.value) == 2
                and canon(op.value[0]) not in attempted
            ):
                problem = "cas found " + _phantom_why(op.value[0], failed)
                phantoms.append({**op.describe(), "problem": problem})
        if not writes:
            continue
        keys += 1
        acked = [w for w in writes if w.type == "ok"]
        acknowledged += len(acked)
        final = None if final_reads is None else final_reads.get(key)
        known_final = final_reads is not None and key in final_reads
        reported: list[Operation] = []
        if known_final:
            last = could_be_last(writes)
            possible = {canon(w.written_value()[1]) for w in last}
            if not acked:
                possible.add(canon(None))
            if canon(final) not in possible:
                if canon(final) not in attempted:
                    why = "final read returned " + _phantom_why(final, failed)
                else:
                    why = "acknowledged write not reflected in the final read"
                reported = [w for w in last if w.type == "ok"] or acked[-1:]
                lost.extend(_lost(w, final, why) for w in reported)
        elif acked and final_reads is not None:
            unverified.append(key)
        # What the final read cannot show (writes overwritten since), the reads may.
        for w, read in missed_by_reads(key_ops, writes, [final] if known_final else []):
            if any(w is r for r in reported):
                continue
            _, got = _observed(read)
            why = (
                f"acknowledged write missed by a consistent {read.f} invoked at"
                f" {read.invoke_time} (it found {canon(got)}, written before this write)"
                " and never read again"
            )
            lost.append({**_lost(w, final, why), "missed_by": read.describe()})
    for key, final in (final_reads or {}).items():
        if key not in seen and final is not None:
            phantoms.append(
                {
                    "key": key,
                    "final_value": final,
                    "problem": "final read of a key never written returned a value",
                }
            )

    details: dict[str, Any] = {
        "keys": keys,
        "acknowledged_writes": acknowledged,
        "lost_write_count": len(lost),
        "lost_writes": lost[:REPORT_MAX],
        "phantom_read_count": len(phantoms),
        "phantom_reads": phantoms[:REPORT_MAX],
        "unverified_keys": unverified[:REPORT_MAX],
        "unverified_key_count": len(unverified),
        "final_reads": final_reads is not None,
    }
    verdicts: list[Validity] = [False] if lost or phantoms else []
    if final_reads is None or unverified or not keys:
        verdicts.append(UNKNOWN)
    return CheckResult(NAME, compose_validity(verdicts), _summary(details), details)


def _observed_value(read: dict[str, Any]) -> Any:
    """What a described read (or cas) found."""
    if "result" in read:
        return read["result"]
    value = read.get("value")
    return value[0] if isinstance(value, list) and value else None


def _phantom_why(value: Any, failed: set[str]) -> str:
    if canon(value) in failed:
        return f"{canon(value)}, the value of a write that failed"
    return f"{canon(value)}, a value never written"


def _summary(d: dict[str, Any]) -> str:
    parts = []
    if d["lost_write_count"]:
        first = d["lost_writes"][0]
        parts.append(
            f"{d['lost_write_count']} acknowledged writes lost (key {first['key']!r}: wrote"
            f" {canon(first['value'])} at {first['time']}, "
            + (
                f"a consistent read at {first['missed_by']['invoke_time']} found"
                f" {canon(_observed_value(first['missed_by']))})"
                if "missed_by" in first
                else f"final read {canon(first['final_value'])})"
            )
        )
    if d["phantom_read_count"]:
        first = d["phantom_reads"][0]
        parts.append(
            f"{d['phantom_read_count']} reads of values never written ({first['problem']})"
        )
    if not d["final_reads"]:
        parts.append("no final_reads.json: acknowledged writes not verified")
    if d["unverified_key_count"]:
        parts.append(f"{d['unverified_key_count']} written keys missing from final_reads.json")
    if not d["keys"]:
        parts.append("no writes in the history")
    if not parts:
        parts.append(
            f"all {d['acknowledged_writes']} acknowledged writes on {d['keys']} keys durable"
        )
    return "; ".join(parts)


def check(run: RunDir) -> CheckResult:
    """The durability check of a run directory (history.jsonl + final_reads.json)."""
    if run.history is None:
        return CheckResult(NAME, UNKNOWN, "no history.jsonl in the run directory")
    if run.workload == "bank":  # its final reads are balances: checks/bank.py judges them
        return not_applicable(
            NAME, "the bank workload writes no registers; the bank check judges its balances"
        )
    return check_durability(run.history, run.final_reads)
