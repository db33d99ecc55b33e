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
from itertools import repeat
from pathlib import Path
from typing import Any, Literal, cast

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from checks import opsfile

JsonDict = dict[str, Any]

#: Request types that put their `value` into a key (`cas` writes its new value, `delete` null).
WRITE_FS = frozenset({"write", "put", "update"})
#: Request types that read a key and return its value.
READ_FS = frozenset({"read", "get"})
CONDITIONAL_FAILED = "ConditionalCheckFailed"


class Operation(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One request as its client saw it: the invoke and (if any) its completion, merged.

    `value` is the invoke's argument (the written value, or `[expected, new]` for cas);
    `result` is the completion's value (what a read returned). `complete_time` is None only when
    no completion was recorded at all. `type` is ok, fail or info.

    (A frozen msgspec Struct rather than a dataclass: loading a history builds one per request,
    and a Struct is built in one C call and never tracked by the cyclic garbage collector: it
    holds JSON values only, which cannot refer back to it. As JSON it is an array of its fields
    in order: a line of a history's operations file, checks/opsfile.py.)
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


class HistoryRecord(msgspec.Struct, gc=False):
    """One line of a history file as the pairing reads it: only the fields it uses, typed.

    Decoding straight into these (msgspec) checks every field's type on the way and builds no
    dict per line; other fields are ignored. UNSET tells "absent" from an explicit null where
    the pairing treats them differently (an invoke's value, key and consistent).
    """

    type: str
    process: str | int = ""
    f: str | None = None
    key: str | int | UnsetType | None = UNSET
    value: Any = UNSET
    time: float | None = None
    latency: float | None = None
    error: str | None = None
    consistent: bool | UnsetType | None = UNSET
    az: str | None = None
    router: str | None = None
    intended: float | None = None
    attempt: int | None = None


_decode_lines = msgspec.json.Decoder(HistoryRecord).decode_lines
_decode_line = msgspec.json.Decoder(HistoryRecord).decode


def read_records(path: Path) -> list[HistoryRecord]:
    """The records of a history file, in file order; blank lines are skipped.

    A bad line raises ValueError with its line number and what is wrong (which field, and
    why); a truncated last line (the recorder was killed mid-write) is tolerated and dropped.
    """
    data = path.read_bytes()
    try:  # fast path: the whole file in one call, no per-line Python work
        return _decode_lines(data)
    except msgspec.DecodeError:
        pass  # find the bad line below, by its number in the file
    lines = data.splitlines()
    last = max((n for n, line in enumerate(lines) if line.strip()), default=-1)
    records: list[HistoryRecord] = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(_decode_line(line))
        except msgspec.ValidationError as exc:
            raise ValueError(f"{path.name} line {number + 1}: {exc}") from exc
        except msgspec.DecodeError as exc:
            if number == last:
                break  # torn last line
            raise ValueError(f"{path.name} line {number + 1}: {exc}") from exc
    return records


def pair_operations(records: Iterable[JsonDict]) -> list[Operation]:
    """Pair each invoke with the next completion of the same process, in invoke order.

    ``records`` are history lines as dicts; a field of the wrong type raises ValueError naming
    the record (its index) and the field.
    """
    try:
        converted = msgspec.convert(
            records if isinstance(records, list) else list(records), list[HistoryRecord]
        )
    except msgspec.ValidationError as exc:
        raise ValueError(f"history record {exc}") from exc
    return _pair(converted)


def _pair(records: list[HistoryRecord]) -> list[Operation]:
    # The hot loop of loading a history: the merge of an invoke with its completion is inline
    # (a call per operation cost a tenth of the load), and a pending invoke is its index.
    pending: dict[str | int, int] = {}
    slots: list[Operation | None] = [None] * len(records)  # by invoke index: no sort needed
    unfinished = _unfinished
    for index, done in enumerate(records):
        kind = done.type
        process = done.process
        if kind == "invoke":
            begun = pending.get(process)
            if begun is not None:
                slots[begun] = unfinished(begun, records[begun])
            pending[process] = index
            continue
        if kind != "ok" and kind != "fail" and kind != "info":
            continue
        begun = pending.pop(process, None)
        if begun is None:
            continue
        invoke = records[begun]
        invoke_time = invoke.time
        if invoke_time is None:
            invoke_time = 0.0
        complete_time = done.time
        latency = done.latency
        if latency is None and complete_time is not None:
            latency = complete_time - invoke_time
            if latency < 0.0:
                latency = 0.0
        result = done.value
        if result is UNSET:
            result = None
        value = invoke.value
        if value is UNSET:
            value = result
        consistent = done.consistent
        if consistent is UNSET:
            consistent = invoke.consistent
        key = invoke.key
        if key is UNSET:
            key = done.key
            if key is UNSET:
                key = None
        f = invoke.f
        if f is None:
            f = done.f or ""
        az = invoke.az
        if az is None:
            az = done.az
        router = invoke.router
        if router is None:
            router = done.router
        process = invoke.process
        slots[begun] = Operation(
            begun,
            process if type(process) is str else str(process),
            f,
            str(key) if isinstance(key, int) else key,
            value,
            result,
            kind,
            invoke_time,
            complete_time,
            latency,
            done.error,
            consistent is not False,
            az,
            router,
            invoke.intended,
            invoke.attempt,
        )
    for begun in pending.values():
        slots[begun] = unfinished(begun, records[begun])
    return list(filter(None, slots))  # the ops, in invoke order (an Operation is always true)


def _unfinished(index: int, invoke: HistoryRecord | _Invoke) -> Operation:
    """An invoke that never completed: its outcome is unknown (info)."""
    key = invoke.key
    value = invoke.value
    process = invoke.process
    return Operation(
        index,
        process if type(process) is str else str(process),
        invoke.f or "",
        None if key is UNSET else str(key) if isinstance(key, int) else key,
        None if value is UNSET else value,
        None,
        "info",
        0.0 if invoke.time is None else invoke.time,
        None,
        None,
        None,
        invoke.consistent is not False,
        invoke.az,
        invoke.router,
        invoke.intended,
        invoke.attempt,
    )


def load_operations(path: Path) -> list[Operation]:
    """Paired operations of a history file (`history.jsonl` or `canary.jsonl`).

    A line that is not JSON, or a record whose fields have the wrong types, raises ValueError
    naming the file, the line and the field; a torn last line (the recorder was killed
    mid-write) is dropped. (Fields an operation does not take from a line, such as a
    completion's copy of its invoke's key, are checked only when the file is not in the shape
    the workloads write.)
    """
    with paused_gc():
        return _load_paired(path) or _load_history(path)


def _load_history(path: Path) -> list[Operation]:
    try:
        return _pair_common(path)
    except msgspec.DecodeError:
        pass  # not the common shape, a bad line or a torn one: the general path says which
    return _pair(read_records(path))


_COLUMNS = list(Operation.__struct_fields__)
_decode_ops = msgspec.json.Decoder(Operation).decode_lines
_encode_ops = msgspec.json.Encoder().encode_lines


def write_operations(history: Path) -> Path | None:
    """Write the operations file of ``history`` (checks/opsfile.py) beside it, once a run's
    history is merged; None (and no file) when the history does not load, or its operations
    do not read back from the file exactly as paired (e.g. an infinite float)."""
    out = opsfile.ops_path(history)
    out.unlink(missing_ok=True)
    made_from = opsfile.fingerprint(history)
    with paused_gc():
        try:
            ops = _load_history(history)
            rows = _encode_ops(ops)
            same = _decode_ops(rows) == ops and opsfile.fingerprint(history) == made_from
        except (ValueError, msgspec.MsgspecError, OverflowError):
            return None
    if not same:
        return None
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(opsfile.header(made_from, _COLUMNS, len(ops)) + rows)
    tmp.replace(out)
    return out


def _load_paired(history: Path) -> list[Operation] | None:
    """The operations of ``history`` from its operations file; None when it has none that
    matches it (or one that does not decode: its history is read instead)."""
    ops: list[Operation] = []
    try:
        with opsfile.ops_path(history).open("rb") as file:
            count = opsfile.matches(file.readline(), history, _COLUMNS)
            if count is None:
                return None
            for block in opsfile.blocks(file, _decode_ops):
                ops += block
    except (OSError, msgspec.DecodeError):
        return None
    return ops if len(ops) == count else None


# load_operations' fast path, for the shape the workloads write: a str process, a known f, a
# str key and a time on every invoke; only invokes, completions and schedule records. Anything
# else fails the decode (DecodeError) and the file takes the general path (read_records, _pair),
# whose rules this follows. It decodes a block of lines at a time and pairs them before the
# next: the records' memory is reused while it is in the caches, instead of a file's worth
# being faulted in (a fifth of the load's CPU was page faults). A completion keeps only what an
# Operation takes from it (its f and key repeat its invoke's: parsed, never built), and the
# tag gives its type without a string per line. The structs list their fields in the order the
# workloads write the keys (workloads.history.op_record; kw_only allows any order): msgspec
# matches a key against the field after the last one matched first, so each key is found at
# the first try (2.4% fewer instructions per load, callgrind, 100k ops).

#: The f of every workload (workloads.history.OpF); another f takes the general path.
_KnownF = Literal[
    "read", "write", "cas", "put", "get", "update", "delete", "query", "transfer", "audit"
]


class _Invoke(msgspec.Struct, gc=False, tag_field="type", tag="invoke", kw_only=True):
    f: _KnownF  # a Literal: one str object per name, not one per line
    key: str
    value: Any = UNSET
    process: str
    time: float
    consistent: bool | UnsetType | None = UNSET
    az: str | None = None
    router: str | None = None
    intended: float | None = None
    attempt: int | None = None


class _Completion(msgspec.Struct, gc=False, tag_field="type", kw_only=True):
    value: Any = None
    process: str
    time: float | None = None
    latency: float | None = None
    error: str | None = None
    consistent: bool | UnsetType | None = UNSET
    az: str | None = None
    router: str | None = None


class _Ok(_Completion, gc=False, tag="ok"):
    pass


class _Fail(_Completion, gc=False, tag="fail"):
    pass


class _Info(_Completion, gc=False, tag="info"):
    pass


class _Schedule(msgspec.Struct, gc=False, tag_field="type", tag="schedule"):
    pass  # an open-loop client's schedule records (workloads/schedule.py): no operation


class _ScheduleEnd(msgspec.Struct, gc=False, tag_field="type", tag="schedule_end"):
    pass


_decode_common = msgspec.json.Decoder(
    _Invoke | _Ok | _Fail | _Info | _Schedule | _ScheduleEnd
).decode_lines


def _pair_common(path: Path) -> list[Operation]:
    """load_operations' fast path: `_pair`'s rules for the common shape; DecodeError otherwise."""
    pending: dict[str, int] = {}
    slots: list[Any] = []  # by line: the invoke until its op is known, then the Operation
    unfinished = _unfinished
    base = 0
    with path.open("rb", buffering=0) as file:
        for records in opsfile.blocks(file, _decode_common):
            slots += repeat(None, len(records))
            for index, done in enumerate(records, base):
                cls = type(done)
                if cls is _Invoke:
                    process = done.process
                    begun = pending.get(process)
                    if begun is not None:
                        slots[begun] = unfinished(begun, slots[begun])
                    pending[process] = index
                    slots[index] = done
                    continue
                if cls is _Ok:
                    kind = "ok"
                elif cls is _Fail:
                    kind = "fail"
                elif cls is _Info:
                    kind = "info"
                else:  # a schedule record
                    continue
                process = done.process
                begun = pending.pop(process, None)
                if begun is None:
                    continue
                invoke: _Invoke = slots[begun]
                invoke_time = invoke.time
                complete_time = done.time
                latency = done.latency
                if latency is None and complete_time is not None:
                    latency = complete_time - invoke_time
                    if latency < 0.0:
                        latency = 0.0
                result = done.value
                value = invoke.value
                if value is UNSET:
                    value = result
                consistent = done.consistent
                if consistent is UNSET:
                    consistent = invoke.consistent
                az = invoke.az
                if az is None:
                    az = done.az
                router = invoke.router
                if router is None:
                    router = done.router
                slots[begun] = Operation(
                    begun,
                    process,
                    invoke.f,
                    invoke.key,
                    value,
                    result,
                    kind,
                    invoke_time,
                    complete_time,
                    latency,
                    done.error,
                    consistent is not False,
                    az,
                    router,
                    invoke.intended,
                    invoke.attempt,
                )
            base += len(records)
    for begun in pending.values():
        slots[begun] = unfinished(begun, slots[begun])
    return list(filter(None, slots))  # the ops, in invoke order (an Operation is always true)


def by_key(ops: Iterable[Operation]) -> Iterator[tuple[str, list[Operation]]]:
    """(key, ops) for every key, keys in first-seen order, ops in invoke order."""
    groups: dict[str, list[Operation]] = {}
    for op in ops:
        if op.key is not None:
            groups.setdefault(op.key, []).append(op)
    yield from groups.items()
