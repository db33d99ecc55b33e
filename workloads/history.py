"""The operation history: the one contract between workloads (which write it) and checks.

Every client operation is two JSON lines, an ``invoke`` when it is sent and a completion when its
outcome is known: ``ok`` (it happened), ``fail`` (it definitely did not: any 4xx, e.g.
ConditionalCheckFailed, Validation, throttling) or ``info`` (unknown: timeout, connection
error, 5xx; it may or may not have taken effect). A process performs one operation at a time; after
an ``info`` it continues under a new process id (``...-u3.1``), as in Jepsen, because its
unfinished operation may still take effect at any later time.

    {"type": "invoke", "f": "write", "key": "r3", "value": "h-41-u0.0-7", "process": "h-41-u0.0",
     "time": 1.204512}
    {"type": "ok", "f": "write", "key": "r3", "value": "h-41-u0.0-7", "process": "h-41-u0.0",
     "time": 1.209031, "latency": 0.004519}

Fields: ``f`` in read/write/cas (registers, checked for linearizability), get/put/update/delete
(the YCSB-like workloads) and query; ``value`` is the written value for write/put/update, the
value read for ok reads (null if the item is absent, null in the invoke), ``[expected, new]`` for
cas, null for delete, and for query ``[lo, hi]`` (sort-key range, invoke) then ``[[sk, v], ...]``
(ok); ``consistent`` on reads; ``error`` on fail/info; ``az`` and ``router`` on canary ops;
``intended`` on the invokes of an open-loop client (workloads/schedule.py): when the op was
scheduled to start, at or before ``time``. ``latency`` is always completion minus invoke (the
service time); the checkers measure what a client felt from ``intended``. ``attempt`` (2, 3, ...)
marks an invoke (and its completion) that retries the same client's previous op
(workloads/retry.py): each attempt is an op of its own, and the checkers judge the client's op
by its attempts together.
``time`` is seconds since the run's start (``GAMEDAY_RUN_START``, a wall-clock epoch taken once
by whoever starts the run), advanced by each writer's monotonic clock, so all files of a run
share one time line and each process's times never go backwards.

Writers buffer in memory and append in batches (``HistoryWriter``); many part files
(``history-<host>-<pid>.jsonl``, one per OS process) are merged into ``history.jsonl``, and the
open-loop clients' schedule records found in them into ``schedule.jsonl`` beside it:

    clock = RunClock.from_env()
    writer = HistoryWriter(run_dir / "history-host-41.jsonl")
    rec = OpRecorder(writer, clock, "host-41-u0")
    pending = rec.invoke("write", "r3", "host-41-u0-1")
    rec.complete(pending, OpType.OK, "host-41-u0-1")
    writer.flush()
    merge_histories(run_dir)          # -> run_dir / "history.jsonl", sorted by time
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from workloads.schedule import SCHEDULE, SCHEDULE_END, SCHEDULE_FILE

RUN_START_ENV = "GAMEDAY_RUN_START"
PART_GLOB = "history-*.jsonl"
HISTORY_FILE = "history.jsonl"


class OpType(StrEnum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class OpF(StrEnum):
    READ = "read"
    WRITE = "write"
    CAS = "cas"
    PUT = "put"
    GET = "get"
    UPDATE = "update"
    DELETE = "delete"
    QUERY = "query"
    TRANSFER = "transfer"  # the bank workload (workloads/bank.py)
    AUDIT = "audit"


READS = frozenset({OpF.READ, OpF.GET, OpF.QUERY})


@dataclass(frozen=True, slots=True)
class Op:
    """One history line. ``latency`` only on completions; ``consistent`` only on reads."""

    type: OpType
    f: OpF
    key: str
    value: Any
    process: str
    time: float
    latency: float | None = None
    error: str | None = None
    consistent: bool | None = None
    az: str | None = None
    router: str | None = None
    intended: float | None = None
    attempt: int | None = None

    def to_json(self) -> dict[str, Any]:
        return op_record(
            self.type,
            self.f,
            self.key,
            self.value,
            self.process,
            self.time,
            self.latency,
            self.error,
            self.consistent,
            self.az,
            self.router,
            self.intended,
            self.attempt,
        )

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Op:
        return cls(
            type=OpType(obj["type"]),
            f=OpF(obj["f"]),
            key=str(obj["key"]),
            value=obj.get("value"),
            process=str(obj["process"]),
            time=float(obj["time"]),
            latency=obj.get("latency"),
            error=obj.get("error"),
            consistent=obj.get("consistent"),
            az=obj.get("az"),
            router=obj.get("router"),
            intended=obj.get("intended"),
            attempt=obj.get("attempt"),
        )


def op_record(
    type_: OpType,
    f: OpF,
    key: str,
    value: Any,
    process: str,
    time: float,
    latency: float | None = None,
    error: str | None = None,
    consistent: bool | None = None,
    az: str | None = None,
    router: str | None = None,
    intended: float | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """The history line of an op with these fields (``Op.to_json``; the recorder writes it
    without building an ``Op``: 4 us of CPU each in the load generator's hot path)."""
    out: dict[str, Any] = {
        "type": str(type_),
        "f": str(f),
        "key": key,
        "value": value,
        "process": process,
        "time": round(time, 6),
    }
    if latency is not None:
        out["latency"] = round(latency, 6)
    if error is not None:
        out["error"] = error
    if consistent is not None:
        out["consistent"] = consistent
    if az is not None:
        out["az"] = az
    if router is not None:
        out["router"] = router
    if intended is not None:
        out["intended"] = round(intended, 6)
    if attempt is not None:
        out["attempt"] = attempt
    return out


class RunClock:
    """Seconds since the run's start: a wall-clock anchor taken once, then monotonic time.

    Every process of a run gets the same ``run_start`` (an epoch float, from ``GAMEDAY_RUN_START``)
    and converts once with ``time.time()``; from then on only ``time.monotonic()`` advances it, so
    a process's times never go backwards even if the wall clock is stepped.
    """

    def __init__(self, run_start: float | None = None) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        self.run_start = now_wall if run_start is None else run_start
        self.offset = (now_wall - self.run_start) - now_mono

    @classmethod
    def from_env(cls) -> RunClock:
        raw = os.environ.get(RUN_START_ENV)
        return cls(float(raw) if raw else None)

    def now(self) -> float:
        return time.monotonic() + self.offset


class HistoryWriter:
    """Appends ops to one JSONL file in batches; ``append`` is just a list append.

    Not thread-safe; fine for one asyncio loop or one gevent hub (greenlets switch only on I/O).
    Call ``flush`` periodically and at the end; it flushes by itself every ``batch`` ops.
    """

    def __init__(self, path: Path, batch: int = 2000) -> None:
        self.path = path
        self.batch = batch
        self.buffer: list[dict[str, Any]] = []
        self.written = 0

    def append(self, op: Op) -> None:
        self.append_record(op.to_json())

    def append_record(self, record: dict[str, Any]) -> None:
        """Any JSON line (the schedule records of workloads/schedule.py)."""
        self.buffer.append(record)
        if len(self.buffer) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        lines, self.buffer = self.buffer, []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as out:  # one write per batch; orjson emits UTF-8
            out.write(jsonl(lines))
        self.written += len(lines)


_BETWEEN = b'},{"'


def jsonl(records: list[dict[str, Any]]) -> bytes:
    """``records`` as JSON lines, the same bytes as one ``orjson.dumps`` per record.

    One orjson call for the whole batch costs a tenth of one call per record (~0.1 vs ~1 us a
    record). Its array ``[{..},{"..},{"..}]`` becomes lines by cutting at each ``},{"``: between
    n non-empty objects that sequence occurs n - 1 times, and elsewhere only inside a record (a
    list of objects, or a string ending in ``},{`` before its closing quote; no string holds an
    unescaped quote of its own). So exactly n - 1 occurrences are exactly the boundaries; any
    other count falls back to one call per record.
    """
    if not records:
        return b""
    data = orjson.dumps(records)
    if data.count(_BETWEEN) == len(records) - 1 and all(records):  # dicts (typed), none empty
        return data[1:-1].replace(_BETWEEN, b'}\n{"') + b"\n"
    return b"\n".join(map(orjson.dumps, records)) + b"\n"


class Pending(NamedTuple):
    """An invoked operation awaiting its completion (a named tuple: built per request, and a
    frozen dataclass's ``__init__`` cost ~1.5 us more)."""

    f: OpF
    key: str
    value: Any
    process: str
    time: float
    consistent: bool | None
    intended: float | None = None
    attempt: int | None = None


_INVOKE = str(OpType.INVOKE)
_INFO = OpType.INFO  # a member looked up once: OpType.INFO costs ~0.2 us each time (Python 3.11)


class OpRecorder:
    """Records one logical client's ops: invoke, then complete; renames the process after info.

    ``writer`` may be None (history off): the recorder then only tracks the process id.
    """

    def __init__(
        self,
        writer: HistoryWriter | None,
        clock: RunClock,
        process: str,
        az: str | None = None,
        router: str | None = None,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.base = process
        self.generation = 0
        self.az = az
        self.router = router
        self._named = (process, 0, f"{process}.0")  # (base, generation, id): formatted once

    @property
    def process(self) -> str:
        base, generation, name = self._named
        if generation != self.generation or base is not self.base:
            name = f"{self.base}.{self.generation}"
            self._named = (self.base, self.generation, name)
        return name

    def invoke(
        self,
        f: OpF | str,
        key: str,
        value: Any = None,
        consistent: bool | None = None,
        intended: float | None = None,
        attempt: int | None = None,
    ) -> Pending:
        """Record the invoke now; ``intended``: the open-loop schedule's start for this op;
        ``attempt``: 2, 3, ... when this is a retry of the client's previous op.

        The line is ``op_record``'s (the same fields in the same order, a test compares them),
        built here directly: this runs for every request of the load generator."""
        now = self.clock.now()
        if not isinstance(f, OpF):
            f = OpF(f)
        process = self.process
        writer = self.writer
        if writer is not None:
            record = {
                "type": _INVOKE,
                "f": str(f),
                "key": key,
                "value": value,
                "process": process,
                "time": round(now, 6),
            }
            if consistent is not None:
                record["consistent"] = consistent
            if self.az is not None:
                record["az"] = self.az
            if self.router is not None:
                record["router"] = self.router
            if intended is not None:
                record["intended"] = round(intended, 6)
            if attempt is not None:
                record["attempt"] = attempt
            writer.append_record(record)
        return Pending(f, key, value, process, now, consistent, intended, attempt)

    def complete(self, pending: Pending, type_: OpType, value: Any, error: str | None = None) -> Op:
        """Record the completion now and return it as an ``Op``."""
        now = self._finish(pending, type_, value, error)
        return Op(
            type_,
            pending.f,
            pending.key,
            value,
            pending.process,
            now,
            latency=now - pending.time,
            error=error,
            consistent=pending.consistent,
            az=self.az,
            router=self.router,
            attempt=pending.attempt,
        )

    def finish(self, pending: Pending, type_: OpType, value: Any, error: str | None = None) -> None:
        """``complete`` without building the ``Op`` (the same line in the history)."""
        self._finish(pending, type_, value, error)

    def _finish(self, pending: Pending, type_: OpType, value: Any, error: str | None) -> float:
        now = self.clock.now()
        writer = self.writer
        if writer is not None:  # op_record's line, built directly (see invoke)
            record = {
                "type": str(type_),
                "f": str(pending.f),
                "key": pending.key,
                "value": value,
                "process": pending.process,
                "time": round(now, 6),
                "latency": round(now - pending.time, 6),
            }
            if error is not None:
                record["error"] = error
            if pending.consistent is not None:
                record["consistent"] = pending.consistent
            if self.az is not None:
                record["az"] = self.az
            if self.router is not None:
                record["router"] = self.router
            if pending.attempt is not None:
                record["attempt"] = pending.attempt
            writer.append_record(record)
        if type_ is _INFO:
            self.generation += 1  # the old process may still have an op in flight
        return now


def read_ops(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of one history file; a torn last line (a killed writer) is skipped."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def merge_histories(directory: Path, out: Path | None = None) -> Path:
    """Merge ``directory/history-*.jsonl`` into ``out`` (default ``directory/history.jsonl``).

    Sorted by time; the sort is stable, so an op whose completion has the same time as its
    invoke keeps the invoke first. Schedule records go to ``schedule.jsonl`` next to ``out``
    (only when there are some: closed-loop clients write none). Part files are left in place;
    merging again rewrites the outputs.
    """
    out = out or directory / HISTORY_FILE
    ops: list[dict[str, Any]] = []
    schedules: list[dict[str, Any]] = []
    for part in sorted(directory.glob(PART_GLOB)):
        if part.resolve() == out.resolve():
            continue
        for record in read_ops(part):
            is_schedule = record.get("type") in (SCHEDULE, SCHEDULE_END)
            (schedules if is_schedule else ops).append(record)
    ops.sort(key=lambda op: float(op["time"]))
    _write_jsonl(out, ops)
    if schedules:
        _write_jsonl(out.with_name(SCHEDULE_FILE), schedules)
    return out


def _write_jsonl(out: Path, records: list[dict[str, Any]]) -> None:
    tmp = out.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as dst:
        for record in records:
            dst.write(json.dumps(record, separators=(",", ":")) + "\n")
    tmp.replace(out)


def describe_problems(ops: list[dict[str, Any]]) -> list[str]:
    """Contract violations in a merged history (empty when well-formed).

    Each process alternates invoke -> completion with the same f and key, never goes back in
    time, and may end with one invoke that has no completion (its writer was killed).
    """
    problems: list[str] = []
    open_ops: dict[str, dict[str, Any]] = {}
    last_time: dict[str, float] = {}
    for i, op in enumerate(ops):
        process, kind = op.get("process"), op.get("type")
        if not isinstance(process, str) or kind not in set(OpType):
            problems.append(f"line {i + 1}: bad process or type: {op}")
            continue
        if op.get("f") not in set(OpF) or not isinstance(op.get("key"), str):
            problems.append(f"line {i + 1}: bad f or key: {op}")
        t = float(op.get("time", -1))
        if t < last_time.get(process, float("-inf")):
            problems.append(f"line {i + 1}: time goes backwards for {process}")
        last_time[process] = t
        if kind == OpType.INVOKE:
            if process in open_ops:
                problems.append(f"line {i + 1}: {process} invokes while an op is open")
            open_ops[process] = op
            continue
        started = open_ops.pop(process, None)
        if started is None:
            problems.append(f"line {i + 1}: completion without invoke for {process}")
        elif (started["f"], started["key"]) != (op.get("f"), op.get("key")):
            problems.append(f"line {i + 1}: completion does not match its invoke")
        if "latency" not in op:
            problems.append(f"line {i + 1}: completion without latency")
    return problems
