"""Per-key register linearizability: Wing & Gong's search with Lowe's just-in-time linearization.

Each key is an independent register (P-compositionality), checked on its own, smallest keys
first, each under a time budget: a key whose search runs out of time is "unknown", never a hang.

    >>> from checks.history import pair_operations
    >>> ops = pair_operations(records)            # records of history.jsonl  # doctest: +SKIP
    >>> check_linearizability(ops, budget=5.0).valid  # doctest: +SKIP
    True

The search (Lowe, "Testing for linearizability", 2017; the algorithm Porcupine implements): the
history is a doubly linked list of call and return entries in time order. Walking from the head,
a call whose op is legal in the current state is linearized: the op's call and return entries are
lifted out of the list and the walk restarts at the head. Reaching a return entry means that op
was not linearized before it returned, so the last choice is undone (backtracking). Every
(linearized set, state) pair is tried once (memoisation). The history is linearizable when every
definite op is lifted.

Three sound shortcuts keep hot keys with many concurrent clients tractable: an observation (a
read, or a cas that found another value) that holds in the current state is linearized at once
and is no choice point; a value that only one op can produce (unique values, as workloads should
write) is never left while some definite op still has to observe it; and info writes whose value
nobody observed are dropped up front (see `prune_unobservable`).

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
from itertools import compress
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

NAME = "linearizability"
DEFAULT_BUDGET = 5.0
WINDOW_MAX = 10

READ, WRITE, CAS, MISMATCH = range(4)
_OBSERVES = (True, False, False, True)  # by kind: a read or a cas mismatch observes
_NEEDS = (READ, CAS)  # kinds whose definite ops need their arg to be the register's value


class UnsupportedOp(Exception):
    """An op whose effect on the key is not a register's: the key cannot be checked."""


class RegisterOp(NamedTuple):
    """An operation as the register model sees it; `arg` and `new` are canonical values.

    The search itself takes plain tuples of these fields, values as keys (`_value_key`): see
    `register_ops_by_key`. This named view is for reports and tests.
    """

    op: Operation
    kind: int
    arg: str
    new: str
    call: float
    ret: float
    definite: bool


#: What the search takes: RegisterOp's fields in its order, values as keys (`_value_key`).
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
    return next((_named(r) for rs in per_key.values() for r in rs), None)


def register_ops_by_key(
    ops: Iterable[Operation],
) -> tuple[dict[str, list[Register]], dict[str, str], set[str]]:
    """The register view of every key's ops (ops in their order, leaving out those that take no
    part), the keys skipped with why (a malformed cas), and the keys with info ops (all others
    hold only definite ops): one pass over the history.

    One pass in the history's order, the rules inline and tuple displays: a pass per key touched
    each op again in an order the memory caches could not follow, and a call per operation or
    RegisterOp's construction cost more than the rules. The tuples hold RegisterOp's fields in
    its order, with values as keys (`_value_key`; `_named` gives the RegisterOp with canonical
    text, as describe_failure does); the hot paths index them.
    """
    per_key: dict[str, list[Register]] = {}
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
            register = (op, READ, arg, None, call, ret if ret > call else call, True)
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
                register = (op, WRITE, arg, None, call, ret, definite)
            elif f == "delete":
                register = (op, WRITE, None, None, call, ret, definite)
            else:
                continue
        registers = lists(key)
        if registers is None:
            per_key[key] = [register]
        else:
            registers.append(register)
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


#: RegisterOp's fields by position, for the hot paths that take plain tuples.
_KIND, _ARG, _NEW, _DEFINITE = 1, 2, 3, 6
#: 1 << i at i, shared by keys of <= BITS_CACHED ops (n^2/16 bytes), replaced, never extended.
BITS_CACHED = 4096
_BITS: list[int] = []


def prune_unobservable(ops: list[Register]) -> list[Register]:
    """Drop info writes and info cas whose new value nothing ever observed.

    Sound when the key has no cas-mismatch observations: applying such an op leaves a value that
    no later read or cas can see, so only a later write can follow it, and the same linearization
    without the op is legal too. Removing them spares the search their 2^k placements.
    """
    if all(r[_DEFINITE] for r in ops) or any(r[_KIND] == MISMATCH for r in ops):
        return ops
    observed = {r[_ARG] for r in ops if r[_KIND] in (READ, CAS)}
    return [r for r in ops if r[_DEFINITE] or (r[_NEW] if r[_KIND] == CAS else r[_ARG]) in observed]


def search(ops: Sequence[Register], initial: Any, deadline: float) -> tuple[Validity, Any]:
    """Is there a linearization of `ops` from `initial`? Returns (True | False | "unknown" when
    `deadline` (time.monotonic) passes, evidence); on False the evidence describes the deepest
    point the search reached, for `describe_failure`.

    Values are numbered (0 is `initial`) so that states compare and hash as small ints, and the
    memo is one set of linearized-op bitmasks per state: no tuple per configuration. On
    histories where the search seldom backtracks the set-up costs more than the walk, so it is
    built from whole columns (sorts, maps, slices) where it can be.
    """
    global _BITS
    n = len(ops)
    m = 2 * n
    tail = m + 1
    if not ops:
        return True, None
    _, kinds, arg_values, new_values, calls, rets, definite = zip(*ops, strict=True)
    values = list(dict.fromkeys([initial, *arg_values, *new_values]))  # id -> value key
    number = dict(zip(values, range(len(values)), strict=True)).__getitem__
    args = list(map(number, arg_values))
    news = list(map(number, new_values))
    # Entries in time order: calls (ids 0..n-1) before returns (n..2n-1) at equal times, each
    # kind by op index (a stable sort of the calls-then-returns list keeps exactly that order).
    # Positions 1..m hold them; 0 is the head and m + 1 the tail of the linked list.
    order = sorted(range(m), key=(calls + rets).__getitem__)
    entry_at = [m, *order, m]  # position -> entry id (the sentinels read as returns)
    ret_pos = [0] * n  # op -> the position of its return (one loop: cheaper than a sort)
    for at, e in compress(enumerate(order, 1), map(n.__le__, order)):
        ret_pos[e - n] = at
    nxt = [*range(1, m + 2), tail]
    prv = [0, *range(0, m + 1)]
    bits = _BITS  # op -> its bit in the linearized set
    if len(bits) < n:  # grown into a new list, never in place: another thread may be reading
        bits = bits + [1 << i for i in range(len(bits), n)]
        _BITS = bits if n <= BITS_CACHED else _BITS
    observes = list(map(_OBSERVES.__getitem__, kinds))
    # Values only one source can produce (the initial state, or a single write or cas): once the
    # register leaves such a value it never holds it again, so leaving it while a definite op
    # still needs it (an ok read of it, an ok cas from it) cannot lead to a linearization.
    # (Counted in loops: most keys are small, and a Counter costs microseconds to set up.)
    sources = [0] * len(values)
    sources[0] = 1
    for v in compress(args, map(WRITE.__eq__, kinds)):
        sources[v] += 1
    for v in compress(news, map(CAS.__eq__, kinds)):
        sources[v] += 1
    once = list(map((1).__eq__, sources))
    need_of = [
        a if d and k in _NEEDS else -1 for a, d, k in zip(args, definite, kinds, strict=True)
    ]
    needs = [0] * len(values)
    for v in need_of:
        if v >= 0:
            needs[v] += 1

    # Per state, the linearized sets tried; built at the first backtrack (_memo_of_path): until
    # then the configurations tried are exactly the path on the stack, all distinct, and most
    # keys never backtrack (a set entry per op and its freeing cost a tenth of the check).
    seen: list[set[int]] | None = None
    stack: list[tuple[int, int]] = []
    linearized = 0
    state = 0
    remaining = sum(definite)
    entry = nxt[0]
    best_pos = -1
    best: tuple[int, list[int], int | None, Any, int, bool] | None = None
    configurations = backtracks = 0
    while remaining:
        i = entry_at[entry]
        if i < n:
            kind = kinds[i]
            if kind == WRITE:
                new = args[i]
            elif kind == CAS:
                if state != args[i]:
                    entry = nxt[entry]
                    continue
                new = news[i]
            elif (state == args[i]) == (kind == READ):
                new = state  # an observation (read, cas mismatch) that holds now
            else:
                entry = nxt[entry]
                continue
            if new != state and once[state] and needs[state] > (need_of[i] == state):
                entry = nxt[entry]  # would abandon, forever, a value some op must still see
                continue
            marked = linearized | bits[i]
            if seen is None or marked not in seen[new]:
                if seen is not None:
                    seen[new].add(marked)
                configurations += 1
                if not configurations & 0xFF and time.monotonic() > deadline:
                    return UNKNOWN, configurations
                stack.append((entry, state))
                state, linearized = new, marked
                ret = ret_pos[i]  # lift the call and its return out of the list
                nxt[prv[entry]] = nxt[entry]
                prv[nxt[entry]] = prv[entry]
                nxt[prv[ret]] = nxt[ret]
                prv[nxt[ret]] = prv[ret]
                remaining -= definite[i]
                if need_of[i] >= 0:
                    needs[need_of[i]] -= 1
                entry = nxt[0]
                continue
            if not observes[i]:
                entry = nxt[entry]
                continue
            # An observation that holds now may always be linearized first (it changes nothing,
            # and every op that returned before its call is already linearized); that
            # configuration was explored and failed, so this one fails too: backtrack.
        elif entry > best_pos and entry != tail:
            best_pos = entry
            best = (
                i - n,
                *_recent(stack, entry_at, observes),
                values[state],
                linearized,
                once[state] and needs[state] > 0,
            )
        if seen is None:
            seen = _memo_of_path(stack, entry_at, bits, state, len(values))
        while True:
            if not stack:
                return False, best
            backtracks += 1
            if not backtracks & 0x3F and time.monotonic() > deadline:
                return UNKNOWN, configurations
            entry, state = stack.pop()
            i = entry_at[entry]
            linearized ^= bits[i]
            ret = ret_pos[i]  # unlift: put the return back, then the call
            nxt[prv[ret]] = ret
            prv[nxt[ret]] = ret
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            remaining += definite[i]
            if need_of[i] >= 0:
                needs[need_of[i]] += 1
            if not observes[i]:
                break  # an observation was linearized first without loss: undo the choice before
        entry = nxt[entry]
    return True, None


def _memo_of_path(
    stack: list[tuple[int, int]], entry_at: list[int], bits: list[int], state: int, count: int
) -> list[set[int]]:
    """The memo of a search that has not backtracked yet: per state, the linearized sets of the
    configurations on the path (``stack`` holds each step's call entry and the state before it;
    ``state`` is the state after the last step)."""
    seen: list[set[int]] = [set() for _ in range(count)]
    marked = 0
    for step, (entry, _) in enumerate(stack):
        marked |= bits[entry_at[entry]]
        seen[stack[step + 1][1] if step + 1 < len(stack) else state].add(marked)
    return seen


def _recent(
    stack: list[tuple[int, int]], op_of: list[int], observes: list[bool]
) -> tuple[list[int], int | None]:
    """The last few linearized ops, and the last one that set the register's value."""
    last = [op_of[e] for e, _ in stack[-3:]]
    setter = next((op_of[e] for e, _ in reversed(stack) if not observes[op_of[e]]), None)
    return last, setter


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


def check_key(key: str, ops: list[Register], *, budget: float, initial: Any = None) -> KeyOutcome:
    started = time.monotonic()
    if not any(r[_DEFINITE] for r in ops):
        return KeyOutcome(key, True, len(ops), 0.0)
    valid, evidence = search(ops, initial, started + budget)
    seconds = time.monotonic() - started
    if valid is False:
        return KeyOutcome(key, False, len(ops), seconds, describe_failure(ops, evidence))
    if valid is not True:
        reason = f"time budget of {budget:g} s exhausted after {evidence} configurations"
        return KeyOutcome(key, UNKNOWN, len(ops), seconds, {"reason": reason})
    return KeyOutcome(key, True, len(ops), seconds)


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
        pruned += len(registers) - len(kept)
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
