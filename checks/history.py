"""Client operation histories: parse `history.jsonl` records and pair invokes with completions.

The history is the one contract between `workloads/` and `checks/` (STYLE.md, point 6). Each line
is an invoke or a completion (`ok`, `fail`, `info`) of one process; a completion closes the
process's outstanding invoke. Pairing turns them into `Operation` values, one per request:

    >>> ops = pair_operations([
    ...     {"type": "invoke", "f": "write", "key": "k", "value": 1, "process": "w0", "time": 0.0},
    ...     {"type": "ok", "f": "write", "key": "k", "value": 1, "process": "w0", "time": 0.1},
    ... ])
    >>> ops[0].type, ops[0].value, ops[0].latency
    ('ok', 1, 0.1)

An invoke that never completes (the run ended, or the process moved on without recording a
completion) becomes an `info` operation: its outcome is unknown.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

JsonDict = dict[str, Any]

#: Request types that put their `value` into a key (`cas` writes its new value, `delete` null).
WRITE_FS = frozenset({"write", "put", "update"})
#: Request types that read a key and return its value.
READ_FS = frozenset({"read", "get"})
CONDITIONAL_FAILED = "ConditionalCheckFailed"


@dataclass(frozen=True, slots=True)
class Operation:
    """One request as its client saw it: the invoke and (if any) its completion, merged.

    `value` is the invoke's argument (the written value, or `[expected, new]` for cas);
    `result` is the completion's value (what a read returned). `complete_time` is None only when
    no completion was recorded at all. `type` is ok, fail or info.
    """

    index: int
    process: str
    f: str
    key: str | None
    value: Any
    result: Any
    type: str
    invoke_time: float
    complete_time: float | None
    latency: float | None
    error: str | None
    consistent: bool
    az: str | None = None
    router: str | None = None
    intended: float | None = None
    attempt: int | None = None

    @property
    def start(self) -> float:
        """When the client needed the service: the open-loop schedule's intended start, or
        (closed loop, and histories recorded before schedules existed) the invoke time."""
        return self.invoke_time if self.intended is None else self.intended

    @property
    def client(self) -> str:
        """The logical client: the process without the generation a Jepsen-style process gets
        after an info (``h-41-u3.2`` -> ``h-41-u3``)."""
        base, dot, generation = self.process.rpartition(".")
        return base if dot and generation.isdigit() else self.process

    @property
    def is_read(self) -> bool:
        return self.f in READ_FS

    @property
    def is_conditional_failure(self) -> bool:
        """A fail that is the service correctly refusing a condition: a successful request."""
        return self.type == "fail" and CONDITIONAL_FAILED in (self.error or "")

    @property
    def succeeded(self) -> bool:
        """Counts as a success for availability: ok, or a conditional check that did not hold."""
        return self.type == "ok" or self.is_conditional_failure

    def written_value(self) -> tuple[bool, Any]:
        """(writes, value): whether this op may put a value into its key, and which value."""
        if self.f in WRITE_FS:
            return True, self.value
        if self.f == "delete":
            return True, None
        if self.f == "cas" and isinstance(self.value, list) and len(self.value) == 2:
            return True, self.value[1]
        return False, None

    def describe(self) -> JsonDict:
        """A JSON-ready summary for reports."""
        out: JsonDict = {
            "index": self.index,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": self.value,
            "invoke_time": round(self.invoke_time, 6),
            "complete_time": None if self.complete_time is None else round(self.complete_time, 6),
        }
        if self.is_read:
            out["result"] = self.result
        if self.error:
            out["error"] = self.error
        if self.is_read and not self.consistent:
            out["consistent"] = False
        return out


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects.

    Checking a history allocates hundreds of thousands of small tuples and records that never
    form cycles; the collector's repeated full passes over them cost up to half the run time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def canon(value: Any) -> str:
    """A canonical, hashable form of a JSON value (integral floats compare equal to ints)."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _ENCODE(value)
    return _ENCODE(_normalise(value))


def uncanon(text: str) -> Any:
    """The JSON value back from `canon`."""
    return json.loads(text)


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    return value


def read_jsonl(path: Path) -> list[JsonDict]:
    """Every JSON object of a .jsonl file; blank lines are skipped, a bad line raises ValueError.

    A truncated last line (the recorder was killed mid-write) is tolerated and dropped.
    """
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:  # fast path: one parse for the whole file
        parsed = json.loads("[" + ",".join(lines) + "]")
        if all(type(record) is dict for record in parsed):
            return cast(list[JsonDict], parsed)
    except json.JSONDecodeError:
        pass  # find the bad line below
    records: list[JsonDict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path.name} line {number}: {exc}") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path.name} line {number}: expected an object")
        records.append(record)
    return records


def _float(record: JsonDict, field: str) -> float | None:
    value = record.get(field)
    if isinstance(value, float):
        return value
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else None


def pair_operations(records: Iterable[JsonDict]) -> list[Operation]:
    """Pair each invoke with the next completion of the same process, in invoke order."""
    pending: dict[str, tuple[int, JsonDict]] = {}
    done: list[Operation] = []
    for index, record in enumerate(records):
        process = str(record.get("process", ""))
        kind = record.get("type")
        if kind == "invoke":
            if process in pending:
                done.append(_merge(*pending.pop(process), None))
            pending[process] = (index, record)
        elif kind in ("ok", "fail", "info") and process in pending:
            done.append(_merge(*pending.pop(process), record))
    done.extend(_merge(index, invoke, None) for index, invoke in pending.values())
    done.sort(key=lambda op: op.index)
    return done


def _merge(index: int, invoke: JsonDict, completion: JsonDict | None) -> Operation:
    invoke_time = _float(invoke, "time") or 0.0
    complete = completion or {}
    complete_time = _float(complete, "time") if completion else None
    latency = _float(complete, "latency")
    if latency is None and complete_time is not None:
        latency = max(0.0, complete_time - invoke_time)
    value = invoke["value"] if "value" in invoke else complete.get("value")
    consistent = complete.get("consistent", invoke.get("consistent", True))
    key = invoke.get("key", complete.get("key"))
    error = complete.get("error")
    return Operation(
        index=index,
        process=str(invoke.get("process", "")),
        f=str(invoke.get("f", complete.get("f", ""))),
        key=None if key is None else str(key),
        value=value,
        result=complete.get("value"),
        type=str(completion["type"]) if completion else "info",
        invoke_time=invoke_time,
        complete_time=complete_time,
        latency=latency,
        error=None if error is None else str(error),
        consistent=consistent is not False,
        az=_opt_str(invoke.get("az", complete.get("az"))),
        router=_opt_str(invoke.get("router", complete.get("router"))),
        intended=_float(invoke, "intended"),
        attempt=_int(invoke.get("attempt")),
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def load_operations(path: Path) -> list[Operation]:
    """Paired operations of a history file (`history.jsonl` or `canary.jsonl`)."""
    with paused_gc():
        return pair_operations(read_jsonl(path))


def by_key(ops: Iterable[Operation]) -> Iterator[tuple[str, list[Operation]]]:
    """(key, ops) for every key, keys in first-seen order, ops in invoke order."""
    groups: dict[str, list[Operation]] = {}
    for op in ops:
        if op.key is not None:
            groups.setdefault(op.key, []).append(op)
    yield from groups.items()
