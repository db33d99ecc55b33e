"""The search of one key's register history: Wing & Gong's, with Lowe's just-in-time linearization.

checks/linearizability.py turns a history into each key's register ops and reports; this module
only answers "is there a linearization of these ops?", fast:

    >>> flat = [None, WRITE, 1, 1, 0.0, 1.0, True, None, READ, 1, None, 0.5, 2.0, True]
    >>> search(flat, None, deadline=float("inf"))
    (True, None)
    >>> replays(flat, None)  # the fast path tried first: the ops in call order are a witness
    True

The search (Lowe, "Testing for linearizability", 2017; the algorithm Porcupine implements): the
history is a doubly linked list of call and return entries in time order. Walking from the head,
a call whose op is legal in the current state is linearized: the op's call and return entries are
lifted out of the list and the walk restarts at the head. Reaching a return entry means that op
was not linearized before it returned, so the last choice is undone (backtracking). Every
(linearized set, state) pair is tried once (memoisation). The history is linearizable when every
definite op is lifted.

Two sound shortcuts keep hot keys with many concurrent clients tractable: an observation (a
read, or a cas that found another value) that holds in the current state is linearized at once
and is no choice point; and a value that only one op can produce (unique values, as workloads
should write) is never left while some definite op still has to observe it.

A key's ops come flat: FIELDS items per op, in RegisterOp's order (op, kind, arg, new, call,
ret, definite; `new` is the value a write or cas sets), values as keys (None, an int or canonical
text: equal exactly when the JSON values are). One flat list per key is built without a tuple
per op, and its columns are slices.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from itertools import compress, islice
from operator import and_, le
from typing import Any

from checks.result import UNKNOWN, Validity

#: Kinds of register op. An observation (a read, or a cas that found another value: a mismatch)
#: changes nothing; a write or a cas sets the value. Observations are the kinds below WRITE.
READ, MISMATCH, WRITE, CAS = range(4)
_NEEDS = (READ, CAS)  # kinds whose definite ops need their arg to be the register's value

#: A flat register op's fields, by position (RegisterOp's order).
FIELDS = 7
OP, KIND, ARG, NEW, CALL, RET, DEFINITE = range(FIELDS)

#: 1 << i at i, shared by keys of <= BITS_CACHED ops (n^2/16 bytes), replaced, never extended.
BITS_CACHED = 4096
_BITS: list[int] = []

#: (entry, state before it): a step of the search's path.
Step = tuple[int, Any]


def replays(ops: list[Any], initial: Any) -> bool:
    """Whether `ops` (one key's, flat) in call order are a linearization from `initial`: a
    witness, so True means linearizable; False means only that this order is not one.

    Any order of ops sorted by call time respects real time (when b returned before a was
    called, b.call <= b.ret < a.call, so b comes first), so only the register's rules need
    checking, in one pass: an info write is taken as applied, an info cas as applied when it
    can be and as never applied otherwise (both are allowed). On keys where ops seldom overlap
    this answers most keys at a tenth of the search's cost per op; where it fails, it fails
    at the first op out of order, and the search decides.
    """
    calls = ops[CALL::FIELDS]
    if not all(map(le, calls, islice(calls, 1, None))):
        return False
    state = initial
    columns = ops[KIND::FIELDS], ops[ARG::FIELDS], ops[NEW::FIELDS], ops[DEFINITE::FIELDS]
    for kind, arg, new, definite in zip(*columns, strict=True):
        if kind == READ:
            if state != arg:
                return False
        elif kind == WRITE:
            state = new
        elif kind == CAS:
            if state == arg:
                state = new
            elif definite:
                return False
        elif state == arg:  # a mismatch: the register held another value than `arg`
            return False
    return True


def search(ops: list[Any], initial: Any, deadline: float) -> tuple[Validity, Any]:
    """Is there a linearization of `ops` (one key's, flat) from `initial`? Returns (True | False |
    "unknown" when `deadline` (time.monotonic) passes, evidence); on False the evidence describes
    the deepest point the search reached: (the op stuck, the last ops linearized, the last op
    that set the value, the state, the linearized set as a bitmask, whether some definite op
    still had to observe the state).

    States are value keys (None, ints, text: they compare and hash cheaply, no numbering pass),
    and the memo is one set of linearized-op bitmasks per state: no tuple per configuration. On
    histories where the search seldom backtracks the set-up costs more than the walk, so it is
    built from whole columns (slices, sorts, maps) where it can be.
    """
    global _BITS
    n = len(ops) // FIELDS
    m = 2 * n
    tail = m + 1
    if not n:
        return True, None
    kinds = ops[KIND::FIELDS]
    args = ops[ARG::FIELDS]
    definite = ops[DEFINITE::FIELDS]
    times = ops[CALL::FIELDS] + ops[RET::FIELDS]  # entry id -> time: calls, then returns
    # Entries in time order: calls (ids 0..n-1) before returns (n..2n-1) at equal times, each
    # kind by op index (a stable sort of the calls-then-returns list keeps exactly that order).
    # Positions 1..m hold them; 0 is the head and m + 1 the tail of the linked list.
    order = sorted(range(m), key=times.__getitem__)
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
    # A value that only one source can produce (the initial state, or a single write or cas) is
    # never held again once left, so leaving it while a definite op still needs it (an ok read
    # of it, an ok cas from it) cannot lead to a linearization. `repeated`, the values of more
    # than one source, is found the first time the search is about to leave a needed value.
    needy = list(map(and_, definite, map(_NEEDS.__contains__, kinds)))  # must see its arg
    needs = dict(Counter(compress(args, needy)))  # a plain dict: the fastest subscripts
    repeated: set[Any] | None = None

    # The memo (per state, the linearized sets tried) and the linearized set are built at the
    # first backtrack (_memo_of_path): until then the configurations tried are exactly the path
    # on the stack, all distinct, and many keys backtrack late or never (a set entry per op
    # cost a tenth of the check).
    seen: defaultdict[Any, set[int]] | None = None
    linearized = 0
    stack: list[Step] = []
    state = initial
    remaining = sum(definite)
    entry = nxt[0]
    deepest = (-math.inf, -1)  # (time, id) of the deepest return reached: its place in the order
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
                new = ops[i * FIELDS + NEW]
            elif (state == args[i]) == (kind == READ):
                new = state  # an observation (read, cas mismatch) that holds now
            else:
                entry = nxt[entry]
                continue
            if new != state and needs.get(state, 0) > (needy[i] and args[i] == state):
                if repeated is None:
                    repeated = _repeated(ops, initial)
                if state not in repeated:
                    entry = nxt[entry]  # would abandon, forever, a value some op must still see
                    continue
            if seen is not None:  # one hash of the new linearized set: add, and see if it grew
                marked = linearized | bits[i]
                memo = seen[new]
                tried = len(memo)
                memo.add(marked)
                if tried != len(memo):
                    linearized = marked
                elif kind >= WRITE:
                    entry = nxt[entry]
                    continue
                else:
                    # An observation that holds now may always be linearized first (it changes
                    # nothing, and every op that returned before its call is already
                    # linearized); that configuration was explored and failed, so this one
                    # fails too: backtrack.
                    i = -1
            if i >= 0:
                configurations += 1
                if not configurations & 0xFF and time.monotonic() > deadline:
                    return UNKNOWN, configurations
                stack.append((entry, state))
                state = new
                ret = ret_pos[i]  # lift the call and its return out of the list
                nxt[prv[entry]] = nxt[entry]
                prv[nxt[entry]] = prv[entry]
                nxt[prv[ret]] = nxt[ret]
                prv[nxt[ret]] = prv[ret]
                remaining -= definite[i]
                if needy[i]:
                    needs[args[i]] -= 1
                entry = nxt[0]
                continue
        else:
            if seen is None:
                seen, linearized = _memo_of_path(stack, entry_at, bits, state)
            if entry != tail and (times[i], i) > deepest:
                deepest = (times[i], i)
                if repeated is None:
                    repeated = _repeated(ops, initial)
                best = (
                    i - n,
                    *_recent(stack, entry_at, kinds),
                    state,
                    linearized,
                    needs.get(state, 0) > 0 and state not in repeated,
                )
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
            if needy[i]:
                needs[args[i]] += 1
            if kinds[i] >= WRITE:
                break  # an observation was linearized first without loss: undo the choice before
        entry = nxt[entry]
    return True, None


def _repeated(ops: list[Any], initial: Any) -> set[Any]:
    """The values that more than one source can produce: the initial state, writes, cas."""
    written = [initial, *compress(ops[NEW::FIELDS], map(WRITE.__le__, ops[KIND::FIELDS]))]
    if len(set(written)) == len(written):
        return set()
    return {value for value, sources in Counter(written).items() if sources > 1}


def _memo_of_path(
    stack: list[Step], entry_at: list[int], bits: list[int], state: Any
) -> tuple[defaultdict[Any, set[int]], int]:
    """The memo of a search that has not backtracked yet, and its linearized set: per state, the
    linearized sets of the configurations on the path (``stack`` holds each step's call entry
    and the state before it; ``state`` is the state after the last step)."""
    seen: defaultdict[Any, set[int]] = defaultdict(set)
    marked = 0
    for step, (entry, _) in enumerate(stack):
        marked |= bits[entry_at[entry]]
        seen[stack[step + 1][1] if step + 1 < len(stack) else state].add(marked)
    return seen, marked


def _recent(stack: list[Step], op_of: list[int], kinds: list[int]) -> tuple[list[int], int | None]:
    """The last few linearized ops, and the last one that set the register's value."""
    last = [op_of[e] for e, _ in stack[-3:]]
    setter = next((op_of[e] for e, _ in reversed(stack) if kinds[op_of[e]] >= WRITE), None)
    return last, setter
