"""Tiny history builders for the checker tests: one call per operation, times in seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from checks.history import Operation, pair_operations

Record = dict[str, Any]


def op(
    process: str,
    f: str,
    value: Any,
    start: float,
    end: float | None,
    type: str = "ok",
    *,
    key: str = "k",
    result: Any = None,
    error: str | None = None,
    consistent: bool | None = None,
    **extra: Any,
) -> list[Record]:
    """The invoke and completion records of one operation (end None: never completed)."""
    base = {"f": f, "key": key, "process": process, **extra}
    invoke: Record = {"type": "invoke", **base, "value": value, "time": start}
    if consistent is not None:
        invoke["consistent"] = consistent
    if end is None:
        return [invoke]
    done: Record = {**base, "type": type, "time": end, "latency": end - start}
    done["value"] = result if f in ("read", "get") else value
    if error is not None:
        done["error"] = error
    return [invoke, done]


def w(
    p: str, value: Any, start: float, end: float | None, type: str = "ok", **kw: Any
) -> list[Record]:
    return op(p, "write", value, start, end, type, **kw)


def r(p: str, result: Any, start: float, end: float, type: str = "ok", **kw: Any) -> list[Record]:
    return op(p, "read", None, start, end, type, result=result, **kw)


def cas(
    p: str, expected: Any, new: Any, start: float, end: float | None, type: str = "ok", **kw: Any
) -> list[Record]:
    if type == "fail" and "error" not in kw:
        kw["error"] = "ConditionalCheckFailedException"
    return op(p, "cas", [expected, new], start, end, type, **kw)


def history(*ops: list[Record]) -> list[Record]:
    """All records in time order (an op's invoke stays before its completion)."""
    records = [rec for pair in ops for rec in pair]
    return sorted(records, key=lambda rec: rec["time"])


def operations(*ops: list[Record]) -> list[Operation]:
    return pair_operations(history(*ops))


def write_jsonl(path: Path, records: list[Record]) -> None:
    path.write_text("".join(json.dumps(rec) + "\n" for rec in records), encoding="utf-8")


def event(time: float, kind: str, fault_id: str | None = None, **kw: Any) -> Record:
    out: Record = {"time": time, "event": kind, **kw}
    if fault_id is not None:
        out["fault_id"] = fault_id
    return out
