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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

import orjson

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
    data = path.read_bytes().strip()
    try:  # fast path: one parse for the whole file (orjson: about 2x the standard library)
        if b"\r" not in data and b"\n\n" not in data:  # one object per line, nothing blank
            parsed = orjson.loads(b"[" + data.replace(b"\n", b",") + b"]") if data else []
            if all(type(record) is dict for record in parsed):
                return cast(list[JsonDict], parsed)
    except orjson.JSONDecodeError:
        pass  # find the bad line below
    lines = [line for line in data.splitlines() if line.strip()]
    records: list[JsonDict] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path.name} line {number}: {exc}") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path.name} line {number}: expected an object")
        records.append(record)
    return records


def _float(record: JsonDict, field: str) -> float | None:
    value = record.get(field)
    if type(value) is float:
        return value
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else None


def pair_operations(records: Iterable[JsonDict]) -> list[Operation]:
    """Pair each invoke with the next completion of the same process, in invoke order."""
    pending: dict[str, tuple[int, JsonDict]] = {}
    records = records if isinstance(records, list) else list(records)
    slots: list[Operation | None] = [None] * len(records)  # by invoke index: no sort needed
    merge = _merge
    for index, record in enumerate(records):
        process = record.get("process", "")
        if type(process) is not str:
            process = str(process)
        kind = record.get("type")
        if kind == "invoke":
            if process in pending:
                begun, invoke = pending.pop(process)
                slots[begun] = merge(begun, invoke, None)
            pending[process] = (index, record)
        elif kind in _COMPLETIONS and process in pending:
            begun, invoke = pending.pop(process)
            slots[begun] = merge(begun, invoke, record)
    for begun, invoke in pending.values():
        slots[begun] = merge(begun, invoke, None)
    return [op for op in slots if op is not None]


_COMPLETIONS = frozenset({"ok", "fail", "info"})
_EMPTY: JsonDict = {}


def _merge(index: int, invoke: JsonDict, completion: JsonDict | None) -> Operation:
    # The hot loop of loading a history: one call per operation, so the common shapes (string
    # fields, float times) take the short paths and the rest fall back to the general ones.
    get = invoke.get
    invoke_time = get("time")
    if type(invoke_time) is not float:
        invoke_time = _float(invoke, "time") or 0.0
    if completion is None:
        complete = _EMPTY
        complete_time = None
        latency = None
        kind = "info"
    else:
        complete = completion
        complete_time = complete.get("time")
        if type(complete_time) is not float:
            complete_time = _float(complete, "time")
        latency = complete.get("latency")
        if type(latency) is not float:
            latency = _float(complete, "latency")
        if latency is None and complete_time is not None:
            latency = max(0.0, complete_time - invoke_time)
        kind = str(complete["type"])
    value = invoke["value"] if "value" in invoke else complete.get("value")
    consistent = complete.get("consistent", get("consistent", True))
    key = get("key", complete.get("key"))
    if key is not None and type(key) is not str:
        key = str(key)
    error = complete.get("error")
    process = get("process", "")
    f = get("f")
    if f is None:
        f = complete.get("f", "")
    intended = get("intended")
    if intended is not None and type(intended) is not float:
        intended = _float(invoke, "intended")
    az = get("az")
    if az is None:
        az = complete.get("az")
    router = get("router")
    if router is None:
        router = complete.get("router")
    return _operation(
        index,
        process if type(process) is str else str(process),
        f if type(f) is str else str(f),
        key,
        value,
        complete.get("value"),
        kind,
        invoke_time,
        complete_time,
        latency,
        None if error is None else str(error),
        consistent is not False,
        None if az is None else str(az),
        None if router is None else str(router),
        intended,
        _int(get("attempt")),
    )


def _slot_setters() -> tuple[Any, ...]:
    return tuple(Operation.__dict__[f.name].__set__ for f in fields(Operation))


(
    _set_index,
    _set_process,
    _set_f,
    _set_key,
    _set_value,
    _set_result,
    _set_type,
    _set_invoke_time,
    _set_complete_time,
    _set_latency,
    _set_error,
    _set_consistent,
    _set_az,
    _set_router,
    _set_intended,
    _set_attempt,
) = _slot_setters()
_new = object.__new__


def _operation(
    index: int,
    process: str,
    f: str,
    key: str | None,
    value: Any,
    result: Any,
    type: str,
    invoke_time: float,
    complete_time: float | None,
    latency: float | None,
    error: str | None,
    consistent: bool,
    az: str | None,
    router: str | None,
    intended: float | None,
    attempt: int | None,
) -> Operation:
    """``Operation(...)`` in half the time: the frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` per field, and loading a history builds one per operation (loading
    must not cost more than checking, bench/checker.py). The same fields, in the same order."""
    op: Operation = _new(Operation)
    _set_index(op, index)
    _set_process(op, process)
    _set_f(op, f)
    _set_key(op, key)
    _set_value(op, value)
    _set_result(op, result)
    _set_type(op, type)
    _set_invoke_time(op, invoke_time)
    _set_complete_time(op, complete_time)
    _set_latency(op, latency)
    _set_error(op, error)
    _set_consistent(op, consistent)
    _set_az(op, az)
    _set_router(op, router)
    _set_intended(op, intended)
    _set_attempt(op, attempt)
    return op


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
