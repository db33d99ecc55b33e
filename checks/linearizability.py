"""Per-key register linearizability: Wing & Gong's search with Lowe's just-in-time linearization.

Each key is an independent register (P-compositionality), checked on its own, smallest keys
first, each under a time budget: a key whose search runs out of time is "unknown", never a hang.

    >>> from checks.history import pair_operations
    >>> ops = pair_operations(records)            # records of history.jsonl  # doctest: +SKIP
    >>> check_linearizability(ops, budget=5.0).valid  # doctest: +SKIP
    True

The search is checks/wgl.py's (Lowe, "Testing for linearizability", 2017; the algorithm
Porcupine implements), with its two shortcuts for hot keys; a third is here: info writes whose
value nobody observed are dropped up front (see `prune_unobservable`). A key whose ops in call
order are already a linearization (`checks.wgl.replays`: most keys whose ops seldom overlap) needs
no search.

What takes part, per key:

- `read`/`get` ok with `consistent` not false: the register held the returned value.
- `write`/`put`/`update` (their `value` is the value written) and `delete` (a write of null) ok:
  definite; info: possibly applied, any time after the invoke, or never (its return is placed at
  +infinity and it need not be lifted). A conditional update's condition is not checked.
- `cas` `[expected, new]` ok: swapped; info: possibly swapped; fail with no error or
  ConditionalCheckFailed: the register did not hold `expected` at some point in the op's span.
- Other fails (definitely did not happen), info reads (tell nothing) and queries are ignored.
  A key with a malformed cas (value not `[expected, new]`) is skipped, listed, and makes the
  result unknown at best.

Eventually consistent reads are excluded from the search; they must only ever return a value that
some write or cas on that key tried to write (or null).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from checks.history import (
    CONDITIONAL_FAILED,
    READ_FS,
    WRITE_FS,
    Operation,
    canon,
    paused_gc,
    uncanon,
)
from checks.result import UNKNOWN, CheckResult, Validity, compose_validity, not_applicable
from checks.rundir import RunDir
from checks.wgl import ARG, CAS, DEFINITE, FIELDS, KIND, MISMATCH, NEW, READ, WRITE, replays, search

NAME = "linearizability"
DEFAULT_BUDGET = 5.0
WINDOW_MAX = 10


class UnsupportedOp(Exception):
    """An op whose effect on the key is not a register's: the key cannot be checked."""


class RegisterOp(NamedTuple):
    """An operation as the register model sees it; `arg` and `new` are canonical values: `arg`
    what it reads, writes or expects, `new` what a write or cas sets (null for the others).

    The search itself takes these fields flat, values as keys (`_value_key`): see
    `register_ops_by_key`. This named view is for reports and tests.
    """

    op: Operation
    kind: int
    arg: str
    new: str
    call: float
    ret: float
    definite: bool


#: RegisterOp's fields in its order, values as keys (`_value_key`); a key's registers are a
#: flat list of them (FIELDS items per op: `rows` gives the tuples back).
Register = tuple[Operation, int, Any, Any, float, float, bool]


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    key: str
    valid: Validity
    ops: int
    seconds: float
    failure: dict[str, Any] | None = None


def to_register_op(op: Operation) -> RegisterOp | None:
    """The register view of `op`, or None when it takes no part in the search (or has no key)."""
    per_key, skipped, _ = register_ops_by_key([op])
    if skipped:
        raise UnsupportedOp(*skipped.values())
    return next((_named(r) for flat in per_key.values() for r in rows(flat)), None)


def rows(flat: list[Any]) -> list[Register]:
    """A key's flat registers as one tuple per op."""
    return list(zip(*[iter(flat)] * FIELDS, strict=True))


def register_ops_by_key(
    ops: Iterable[Operation],
) -> tuple[dict[str, list[Any]], dict[str, str], set[str]]:
    """The register view of every key's ops (ops in their order, leaving out those that take no
    part), the keys skipped with why (a malformed cas), and the keys with info ops (all others
    hold only definite ops): one pass over the history.

    One pass in the history's order, the rules inline and tuple displays: a pass per key touched
    each op again in an order the memory caches could not follow, and a call per operation or
    RegisterOp's construction cost more than the rules. A key's registers are one flat list,
    RegisterOp's fields in its order for each op (FIELDS items), values as keys (`_value_key`;
    `rows` gives the tuples, `_named` the RegisterOp with canonical text): no tuple object per
    op outlives its line here (the last one's memory is reused for the next), and the search
    takes its columns as slices.
    """
    per_key: dict[str, list[Any]] = {}
    skipped: dict[str, str] = {}
    uncertain: set[str] = set()
    lists = per_key.get
    inf = math.inf
    for op in ops:
        key = op.key
        if key is None:
            continue
        f = op.f
        kind = op.type
        call = op.invoke_time
        if f in READ_FS:  # the most common op first, with the fewest steps
            if kind != "ok" or not op.consistent:
                continue
            ret = op.complete_time or call
            value = op.result  # canon's common cases inline: one call less per read
            arg = value if value is None or type(value) is int else _value_key(value)
            register: Register = (op, READ, arg, None, call, ret if ret > call else call, True)
        else:
            if kind == "info":
                ret, definite = inf, False
                uncertain.add(key)
            else:
                ret, definite = op.complete_time or call, True
                if ret < call:
                    ret = call
            if f == "cas":
                failed = kind == "fail"
                if failed and op.error is not None and CONDITIONAL_FAILED not in op.error:
                    continue  # definitely did not happen
                value = op.value
                if not (isinstance(value, list) and len(value) == 2):
                    skipped.setdefault(key, f"cas value must be [expected, new] (index {op.index})")
                    continue
                if failed:
                    register = (op, MISMATCH, _value_key(value[0]), None, call, ret, True)
                else:
                    expected, new = _value_key(value[0]), _value_key(value[1])
                    register = (op, CAS, expected, new, call, ret, definite)
            elif kind == "fail":
                continue
            elif f in WRITE_FS:
                value = op.value
                arg = value if value is None or type(value) is int else _value_key(value)
                register = (op, WRITE, arg, arg, call, ret, definite)
            elif f == "delete":
                register = (op, WRITE, None, None, call, ret, definite)
            else:
                continue
        registers = lists(key)
        if registers is None:
            per_key[key] = [*register]
        else:
            registers += register
    for key in skipped:
        del per_key[key]
    return per_key, skipped, uncertain


def _value_key(value: Any) -> Any:
    """A JSON value as the search compares it: None, an int (integral floats too: JSON's 1.0 is
    1) or else its canonical text; two values are equal in JSON exactly when their keys are.

    Ints, the values workloads write, are their own keys: no text is built per operation.
    """
    if value is None or type(value) is int:
        return value
    if type(value) is float and math.isfinite(value) and value.is_integer():
        return int(value)
    return canon(value)


def _key_text(key: Any) -> str:
    """The canonical text (checks.history.canon) of a value's key."""
    return "null" if key is None else int.__repr__(key) if type(key) is int else key


def _named(register: Any) -> RegisterOp:
    """A register tuple as a RegisterOp, its values as canonical text."""
    op, kind, arg, new, call, ret, definite = register
    return RegisterOp(op, kind, _key_text(arg), _key_text(new), call, ret, definite)


def prune_unobservable(ops: list[Any]) -> list[Any]:
    """Drop info writes and info cas whose new value nothing ever observed (from a key's flat
    registers).

    Sound when the key has no cas-mismatch observations: applying such an op leaves a value that
    no later read or cas can see, so only a later write can follow it, and the same linearization
    without the op is legal too. Removing them spares the search their 2^k placements.
    """
    if all(ops[DEFINITE::FIELDS]) or MISMATCH in ops[KIND::FIELDS]:
        return ops
    table = rows(ops)
    observed = {r[ARG] for r in table if r[KIND] in (READ, CAS)}
    kept = [r for r in table if r[DEFINITE] or r[NEW] in observed]
    return [field for r in kept for field in r]


def describe_failure(registers: Sequence[Register], evidence: Any) -> dict[str, Any]:
    """The op the search got stuck on (its return came and it could not be linearized before),
    the op that set the register's value then, the ops that still had to observe that value,
    the last ops linearized and those concurrent with the stuck one: at most WINDOW_MAX."""
    stuck, prefix, setter, state, linearized, blocked = evidence
    ops = [_named(r) for r in registers]  # the search's tuples, values as canonical text
    state = _key_text(state)
    s = ops[stuck]
    concurrent = [j for j, r in enumerate(ops) if j != stuck and r.call < s.ret and r.ret > s.call]
    concurrent.sort(key=lambda j: abs(ops[j].call - s.call))
    waiting = [
        j
        for j, r in enumerate(ops)
        if blocked
        and r.definite
        and r.kind in (READ, CAS)
        and r.arg == state
        and not linearized >> j & 1
    ][:2]
    later: list[int] = []  # what a waiting op should have seen: the last write done before it
    if waiting:
        began = ops[waiting[0]].call
        writes = (WRITE, CAS)
        done = [j for j, r in enumerate(ops) if r.definite and r.kind in writes and r.ret < began]
        if done:
            later.append(max(done, key=lambda j: ops[j].ret))
    chosen: list[int] = [stuck]
    before = [setter] if setter is not None else []
    for j in [*before, *waiting, *later, *reversed(prefix), *concurrent]:
        if j not in chosen and len(chosen) < WINDOW_MAX:
            chosen.append(j)
    chosen.sort(key=lambda j: (ops[j].call, ops[j].op.index))
    after = f" after {brief(ops[setter].op)}" if setter is not None else " initially"
    return {
        "op": ops[stuck].op.describe(),
        "state": uncanon(state),
        "explanation": (
            f"{brief(s.op)} cannot be linearized: the register holds {state}{after}"
            + (
                f", and {brief(ops[waiting[0]].op)} has yet to observe {state}"
                if waiting
                else " and no ordering of the concurrent ops helps"
            )
        ),
        "window": [ops[j].op.describe() for j in chosen],
    }


def brief(op: Operation) -> str:
    """A one-line description, e.g. `w3 read -> 5 ok @1.200`."""
    if op.is_read:
        what = f"{op.f} -> {canon(op.result)}"
    elif op.f == "cas" and isinstance(op.value, list) and len(op.value) == 2:
        what = f"cas {canon(op.value[0])}->{canon(op.value[1])}"
    else:
        what = f"{op.f} {canon(op.value)}"
    return f"{op.process} {what} {op.type} @{op.invoke_time:.3f}"


def check_key(key: str, ops: list[Any], *, budget: float, initial: Any = None) -> KeyOutcome:
    """The search's verdict on a key's flat registers (`register_ops_by_key`)."""
    started = time.monotonic()
    count = len(ops) // FIELDS
    if not any(ops[DEFINITE::FIELDS]) or replays(ops, initial):
        return KeyOutcome(key, True, count, time.monotonic() - started)
    valid, evidence = search(ops, initial, started + budget)
    seconds = time.monotonic() - started
    if valid is False:
        return KeyOutcome(key, False, count, seconds, describe_failure(rows(ops), evidence))
    if valid is not True:
        reason = f"time budget of {budget:g} s exhausted after {evidence} configurations"
        return KeyOutcome(key, UNKNOWN, count, seconds, {"reason": reason})
    return KeyOutcome(key, True, count, seconds)


def eventual_read_violations(ops: Sequence[Operation]) -> list[dict[str, Any]]:
    """Eventually consistent reads that returned a value no write or cas tried to write."""
    reads = [
        op
        for op in ops
        if not op.consistent and op.type == "ok" and op.f in READ_FS and op.key is not None
    ]
    if not reads:  # the common case of a register history: nothing to index
        return []
    keys = {op.key for op in reads}
    attempted: dict[str, set[str]] = defaultdict(lambda: {canon(None)})
    failed: dict[str, set[str]] = defaultdict(set)
    for op in ops:
        if op.key not in keys:
            continue
        writes, value = op.written_value()
        if writes and op.key is not None:
            (failed if op.type == "fail" else attempted)[op.key].add(canon(value))
    out = []
    for op in reads:
        if op.key is not None:
            value = canon(op.result)
            if value not in attempted[op.key]:
                why = "the value of a write that failed" if value in failed[op.key] else None
                out.append({**op.describe(), "problem": why or "value never written"})
    return out


def check_linearizability(
    ops: Sequence[Operation], *, budget: float = DEFAULT_BUDGET, initial: Any = None
) -> CheckResult:
    """Check every key's register history; see the module docstring for the rules."""
    with paused_gc():
        return _check_linearizability(ops, budget, initial)


def _check_linearizability(ops: Sequence[Operation], budget: float, initial: Any) -> CheckResult:
    started = time.monotonic()
    ec = eventual_read_violations(ops)
    per_key, skipped, uncertain = register_ops_by_key(ops)
    pruned = 0
    for key in uncertain.intersection(per_key):  # the other keys hold definite ops only
        registers = per_key[key]
        kept = prune_unobservable(registers)
        pruned += (len(registers) - len(kept)) // FIELDS
        if kept:
            per_key[key] = kept
        else:
            del per_key[key]
    outcomes = [
        check_key(key, kops, budget=budget, initial=_value_key(initial))
        for key, kops in sorted(per_key.items(), key=lambda kv: (len(kv[1]), kv[0]))
    ]
    invalid = [o for o in outcomes if o.valid is False]
    unknown = [o for o in outcomes if o.valid == UNKNOWN]
    details: dict[str, Any] = {
        "keys": len(outcomes),
        "operations": sum(o.ops for o in outcomes),
        "pruned_info_ops": pruned,
        "budget_seconds": budget,
        "invalid_key_count": len(invalid),
        "invalid_keys": [_outcome_json(o) for o in invalid[:WINDOW_MAX]],
        "unknown_key_count": len(unknown),
        "unknown_keys": [_outcome_json(o) for o in unknown[:WINDOW_MAX]],
        "skipped_keys": dict(list(skipped.items())[:WINDOW_MAX]),
        "skipped_key_count": len(skipped),
        "eventual_read_violation_count": len(ec),
        "eventual_read_violations": ec[:WINDOW_MAX],
        "slowest_keys": [
            {"key": o.key, "ops": o.ops, "seconds": round(o.seconds, 4)}
            for o in sorted(outcomes, key=lambda o: -o.seconds)[:3]
        ],
        "elapsed_seconds": round(time.monotonic() - started, 4),
    }
    valid = compose_validity(
        [o.valid for o in outcomes]
        + ([False] if ec else [])
        + ([UNKNOWN] if skipped or not outcomes else [])
    )
    return CheckResult(NAME, valid, _summary(outcomes, invalid, unknown, skipped, ec), details)


def _outcome_json(outcome: KeyOutcome) -> dict[str, Any]:
    return {
        "key": outcome.key,
        "ops": outcome.ops,
        "seconds": round(outcome.seconds, 4),
        **(outcome.failure or {}),
    }


def _summary(
    outcomes: list[KeyOutcome],
    invalid: list[KeyOutcome],
    unknown: list[KeyOutcome],
    skipped: dict[str, str],
    ec: list[dict[str, Any]],
) -> str:
    parts = []
    if invalid:
        first = invalid[0]
        assert first.failure is not None
        parts.append(
            f"{len(invalid)} of {len(outcomes)} keys not linearizable;"
            f" key {first.key!r}: {first.failure['explanation']}"
        )
    if ec:
        parts.append(f"{len(ec)} eventually consistent reads returned values never written")
    if unknown:
        parts.append(f"{len(unknown)} keys unknown (search budget exhausted)")
    if not outcomes:
        parts.append("no register operations to check")
    if not parts:
        ops = sum(o.ops for o in outcomes)
        parts.append(f"{len(outcomes)} keys, {ops} operations linearizable")
    if skipped:
        parts.append(f"{len(skipped)} keys skipped (malformed cas operations)")
    return "; ".join(parts)


def check(run: RunDir, *, budget: float = DEFAULT_BUDGET) -> CheckResult:
    """The linearizability check of a run directory's history.jsonl."""
    if run.history is None:
        return CheckResult(NAME, UNKNOWN, "no history.jsonl in the run directory")
    if run.workload == "bank":  # transfers and audits only: checks/bank.py judges them
        return not_applicable(
            NAME, "the bank workload has no single-key register operations (see the bank check)"
        )
    return check_linearizability(run.history, budget=budget)
