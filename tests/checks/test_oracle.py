"""The optimised search agrees with brute force on thousands of small random histories.

Random (mostly non-linearizable) histories over a tiny value domain, with info ops, failed cas and
overlapping spans; the oracle tries every subset of the info ops and every order that respects
real time."""

from __future__ import annotations

import itertools
import random

from checks.history import canon, pair_operations
from checks.linearizability import (
    CAS,
    MISMATCH,
    READ,
    RegisterOp,
    _key_text,
    _value_key,
    check_linearizability,
    to_register_op,
)
from tests.checks.helpers import cas, history, r, w


def brute_force(ops: list[RegisterOp]) -> bool:
    definite = [o for o in ops if o.definite]
    maybe = [o for o in ops if not o.definite]
    for k in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, k):
            chosen = definite + list(extra)
            for order in itertools.permutations(chosen):
                if _legal(order):
                    return True
    return False


def _legal(order: tuple[RegisterOp, ...]) -> bool:
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if b.ret < a.call:  # b returned before a was invoked, yet comes after it
                return False
    state = canon(None)
    for o in order:
        if o.kind == READ:
            if state != o.arg:
                return False
        elif o.kind == CAS:
            if state != o.arg:
                return False
            state = o.new
        elif o.kind == MISMATCH:
            if state == o.arg:
                return False
        else:
            state = o.arg
    return True


def random_history(
    rng: random.Random, values: tuple[object, ...] = (1, 2, 3)
) -> list[dict[str, object]]:
    ops = []
    for i in range(rng.randint(1, 6)):
        start = rng.uniform(0, 10)
        end = start + rng.choice([0.1, 1, 3, 6])
        p = f"p{i}"
        kind = rng.random()
        value = rng.choice(values)
        outcome = rng.choice(["ok", "ok", "ok", "info", "fail"])
        if kind < 0.4:
            ops.append(r(p, rng.choice([None, *values]), start, end))
        elif kind < 0.75:
            ops.append(w(p, value, start, end, "fail" if outcome == "fail" else outcome))
        else:
            ops.append(cas(p, rng.choice([None, *values[:2]]), value, start, end, outcome))
    return history(*ops)


def test_search_agrees_with_brute_force() -> None:
    rng = random.Random(20240601)
    seen = {True: 0, False: 0}
    for _ in range(1500):
        records = random_history(rng)
        ops = pair_operations(records)
        registers = [x for x in map(to_register_op, ops) if x is not None]
        if not any(x.definite for x in registers):
            continue  # nothing to check: "unknown" by design
        expected = brute_force(registers)
        got = check_linearizability(ops, budget=5.0).valid
        assert got is expected, records
        seen[expected] += 1
    assert min(seen.values()) > 150, seen


def test_search_agrees_with_brute_force_on_mixed_json_values() -> None:
    # Values whose Python equality differs from JSON's (True == 1) and equal timestamps.
    rng = random.Random(20261204)
    seen = {True: 0, False: 0}
    for _ in range(600):
        records = random_history(rng, (1, True, "1", 1.5))
        for record in records:
            record["time"] = round(float(str(record["time"])))  # many ties
        ops = pair_operations(records)
        registers = [x for x in map(to_register_op, ops) if x is not None]
        if not any(x.definite for x in registers):
            continue
        expected = brute_force(registers)
        assert check_linearizability(ops, budget=5.0).valid is expected, records
        seen[expected] += 1
    assert min(seen.values()) > 50, seen


def test_value_keys_are_equal_exactly_when_canonical_json_is() -> None:
    # The search compares values by key (ints as themselves, no text per op): keys must agree
    # with canon on every pair, and give canon's text back.
    values: list[object] = [None, 0, 1, -1, 1.0, -1.0, 1.5, 2**70, float(2**70), True, False]
    values += ["1", "null", "true", "", [1, 1.0], [1, 1], {"a": 1.0}, {"a": 1}, float("inf")]
    for a in values:
        assert _key_text(_value_key(a)) == canon(a), a
        for b in values:
            assert (_value_key(a) == _value_key(b)) == (canon(a) == canon(b)), (a, b)
