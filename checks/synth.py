"""Synthetic register histories: a simulated linearizable register hammered by concurrent clients.

For tests and benchmarks of the checkers (the shape of `history.jsonl` records, nothing else):

    >>> records = register_history(ops=1000, clients=10, keys=20, seed=7)
    >>> from checks.history import pair_operations
    >>> from checks.linearizability import check_linearizability
    >>> check_linearizability(pair_operations(records)).valid
    True

Each client issues one op at a time: invoke, a random latency, completion, a short think time.
Every op takes effect at one instant inside its span (its linearization point), so the history is
linearizable by construction. Writes and cas use unique values. A few ops end `info` (timed
out): those took effect, or not, at a point after their invoke. `corrupt_stale_read` turns one
read into a provably stale one.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from checks.history import JsonDict, Operation, pair_operations


@dataclass(slots=True)
class _Planned:
    seq: int
    process: str
    f: str
    key: str
    value: Any
    invoke: float
    point: float
    complete: float
    info: bool
    applies: bool
    consistent: bool = True
    result: Any = None
    ok: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def register_history(
    *,
    ops: int,
    clients: int,
    keys: int,
    seed: int,
    read_share: float = 0.5,
    cas_share: float = 0.2,
    info_rate: float = 0.001,
    eventual_share: float = 0.0,
    mean_latency: float = 0.004,
    think: float = 0.001,
    timeout: float = 0.5,
    values: int | None = None,
) -> list[JsonDict]:
    """A linearizable history of `ops` operations as history.jsonl records, in time order.

    Written values are unique unless `values` is given: then they are drawn from
    range(values), as in Jepsen's register workloads (much harder for the checker).
    """
    rng = random.Random(seed)
    key_names = [f"k{i}" for i in range(keys)]
    recent: dict[str, list[Any]] = {k: [None] for k in key_names}
    clock = [(rng.uniform(0, mean_latency), c) for c in range(clients)]
    heapq.heapify(clock)
    counter = 0
    planned: list[_Planned] = []
    for seq in range(ops):
        now, client = heapq.heappop(clock)
        key = rng.choice(key_names)
        roll = rng.random()
        info = rng.random() < info_rate
        latency = timeout if info else 0.0002 + rng.expovariate(1 / mean_latency)
        point = now + rng.random() * latency
        op = _Planned(seq, f"w{client}", "read", key, None, now, point, now + latency, info, True)
        if roll < read_share:
            op.consistent = rng.random() >= eventual_share
        else:
            counter += 1
            value = counter if values is None else rng.randrange(values)
            if roll < read_share + cas_share:
                op.f, op.value = "cas", [rng.choice(recent[key][-3:]), value]
            else:
                op.f, op.value = "write", value
            recent[key].append(value)
            op.applies = not info or rng.random() < 0.5
        planned.append(op)
        heapq.heappush(clock, (op.complete + rng.uniform(0, 2 * think), client))
    _apply(planned, rng)
    return _records(planned)


def _apply(planned: list[_Planned], rng: random.Random) -> None:
    state: dict[str, Any] = {}
    past: dict[str, list[Any]] = {}
    for op in sorted(planned, key=lambda p: p.point):
        current = state.get(op.key)
        if op.f == "read":
            history = past.get(op.key, [None])
            op.result = current if op.consistent else rng.choice(history[-3:])
        elif op.f == "write":
            if op.applies:
                state[op.key] = op.value
        elif op.value[0] == current:
            if op.applies:
                state[op.key] = op.value[1]
        else:
            op.ok = False
        if state.get(op.key) != current:
            past.setdefault(op.key, [None]).append(state[op.key])


def _records(planned: list[_Planned]) -> list[JsonDict]:
    rows: list[tuple[float, int, JsonDict]] = []
    for op in planned:
        base: JsonDict = {"f": op.f, "key": op.key, "process": op.process}
        invoke: JsonDict = {"type": "invoke", **base, "value": op.value, "time": op.invoke}
        if op.f == "read":
            invoke["consistent"] = op.consistent
        done: JsonDict = {
            **base,
            "type": "info" if op.info else ("ok" if op.ok else "fail"),
            "value": op.result if op.f == "read" else op.value,
            "time": op.complete,
            "latency": op.complete - op.invoke,
        }
        if op.info:
            done["error"] = "timeout"
            if op.f == "read":
                del done["value"]
        elif not op.ok:
            done["error"] = "ConditionalCheckFailedException"
        if op.f == "read":
            done["consistent"] = op.consistent
        rows.append((op.invoke, 2 * op.seq, invoke))
        rows.append((op.complete, 2 * op.seq + 1, done))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [row[2] for row in rows]


def corrupt_stale_read(records: list[JsonDict], seed: int) -> tuple[list[JsonDict], JsonDict]:
    """A copy of `records` where one consistent read returns a value overwritten before it began.

    The read's key had an ok write w_old, then an ok write w_new invoked after w_old completed
    and completed before the read was invoked; the read now returns w_old's (unique) value, which
    no linearization allows. Returns the new records and the corrupted completion record.
    """
    rng = random.Random(seed)
    ops = pair_operations(records)
    writes: dict[str, list[Operation]] = {}
    for op in ops:
        if op.f == "write" and op.type == "ok" and op.key is not None:
            writes.setdefault(op.key, []).append(op)
    reads = [op for op in ops if op.f == "read" and op.type == "ok" and op.consistent]
    rng.shuffle(reads)
    for read in reads:
        done = [w for w in writes.get(read.key or "", []) if _ended(w) < read.invoke_time]
        for new in sorted(done, key=lambda w: -w.invoke_time):
            stale = [w for w in done if _ended(w) < new.invoke_time]
            if stale:
                value = stale[-1].value
                copy = [dict(r) for r in records]
                position = next(
                    i
                    for i in range(read.index + 1, len(copy))
                    if copy[i]["process"] == read.process and copy[i]["type"] != "invoke"
                )
                copy[position]["value"] = value
                return copy, copy[position]
    raise ValueError("no read can be made provably stale in this history")


def _ended(op: Operation) -> float:
    return op.complete_time if op.complete_time is not None else float("inf")
