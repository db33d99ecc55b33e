"""Loading history.jsonl (checks/history.py): the fast paths give what the plain ones would."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from checks.history import Operation, _operation, load_operations, pair_operations, read_jsonl


def test_the_fast_constructor_sets_every_field_in_order() -> None:
    values = [f"v{i}" for i in range(len(fields(Operation)))]
    fast = _operation(*values)  # type: ignore[arg-type]
    assert fast == Operation(*values)  # type: ignore[arg-type]
    assert [getattr(fast, f.name) for f in fields(Operation)] == values
    with pytest.raises(AttributeError):
        fast.key = "other"  # type: ignore[misc]


RECORDS: list[dict[str, Any]] = [
    {"type": "invoke", "f": "write", "key": "k", "value": 1, "process": "a", "time": 0.0},
    {"type": "invoke", "f": "read", "key": "k", "value": None, "process": "b", "time": 0.5},
    {"type": "ok", "f": "read", "key": "k", "value": 1, "process": "b", "time": 2, "az": "az-a"},
    {"type": "ok", "f": "write", "key": "k", "value": 1, "process": "a", "time": 3.0},
    {"type": "invoke", "f": "cas", "key": 7, "value": [1, 2], "process": "a", "time": 4.0},
    {"type": "invoke", "f": "read", "key": "k", "process": "c", "time": 5.0, "attempt": 2},
]


def test_pairs_in_invoke_order_with_open_invokes_as_info() -> None:
    ops = pair_operations(RECORDS)
    assert [(op.index, op.process, op.type) for op in ops] == [
        (0, "a", "ok"),
        (1, "b", "ok"),
        (4, "a", "info"),
        (5, "c", "info"),
    ]
    read = ops[1]
    assert (read.result, read.complete_time, read.latency, read.az) == (1, 2.0, 1.5, "az-a")
    assert type(read.complete_time) is float
    assert ops[2].key == "7" and ops[2].complete_time is None
    assert ops[3].attempt == 2 and ops[3].value is None


@pytest.mark.parametrize(
    "text",
    [
        "".join(json.dumps(r) + "\n" for r in RECORDS),
        "".join(json.dumps(r) + "\n\n" for r in RECORDS),  # blank lines
        "".join(json.dumps(r) + "\r\n" for r in RECORDS),  # CRLF
        "".join(json.dumps(r) + "\n" for r in RECORDS) + '{"type": "inv',  # torn last line
    ],
)
def test_read_jsonl_shapes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text(text)
    assert read_jsonl(path) == RECORDS
    assert load_operations(path) == pair_operations(RECORDS)


def test_a_bad_line_in_the_middle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\nnot json\n" + json.dumps(RECORDS[1]) + "\n")
    with pytest.raises(ValueError, match=r"history\.jsonl line 2"):
        read_jsonl(path)


def test_an_empty_file_is_an_empty_history(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("\n")
    assert read_jsonl(path) == []
