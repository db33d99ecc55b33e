"""Loading history.jsonl (checks/history.py): the fast paths give what the plain ones would, and a
malformed line is named with its number and what is wrong with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest

from checks import history
from checks.history import Operation, load_operations, pair_operations, read_jsonl
from checks.synth import register_history
from workloads.history import HistoryWriter, OpF, OpType, merge_histories, op_record


def test_operations_are_immutable_values() -> None:
    op = pair_operations(RECORDS)[0]
    with pytest.raises(AttributeError):
        op.key = "other"  # type: ignore[misc]
    assert op == pair_operations(RECORDS)[0] and hash(op) == hash(pair_operations(RECORDS)[0])
    positional = Operation(0, "a", "write", "k", 1, 1, "ok", 0.0, 3.0, 3.0, None, True)
    assert positional == op


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


def test_a_field_of_the_wrong_type_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    bad = {**RECORDS[1], "time": "soon"}
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"history\.jsonl line 3: .*float.*got `str`.*time"):
        load_operations(path)
    with pytest.raises(ValueError, match=r"line 1: .*missing required field `type`"):
        path.write_text('{"f": "read"}\n')
        load_operations(path)
    with pytest.raises(ValueError, match=r"\[1\]\.time"):
        pair_operations([RECORDS[0], bad])


def test_load_operations_drops_a_torn_last_line_but_names_a_bad_middle_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.jsonl"
    lines = [json.dumps(r) for r in RECORDS]
    path.write_text("\n".join(lines) + '\n{"type": "ok", "f": "wr')
    assert load_operations(path) == pair_operations(RECORDS)
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"history\.jsonl line 2: JSON is malformed"):
        load_operations(path)


def test_absent_and_null_fields_pair_as_before() -> None:
    # An invoke without a value takes the completion's; a null key on the invoke stays null;
    # consistent on the completion wins over the invoke's; a completion alone pairs with nothing.
    records: list[dict[str, Any]] = [
        {"type": "ok", "f": "read", "key": "k", "process": "z", "time": 0.5},
        {"type": "invoke", "f": "read", "key": None, "process": "a", "time": 1.0},
        {"type": "ok", "f": "read", "key": "k", "value": 3, "process": "a", "time": 2.0},
        {"type": "invoke", "key": "k", "process": 9, "time": 3, "consistent": False},
        {"type": "ok", "f": "get", "process": 9, "time": 4.5, "consistent": True, "latency": 1},
    ]
    first, second = pair_operations(records)
    assert (first.key, first.value, first.result, first.latency) == (None, 3, 3, 1.0)
    assert (second.f, second.process, second.consistent, second.latency) == ("get", "9", True, 1.0)
    assert type(second.invoke_time) is float and type(second.latency) is float


def _write(path: Path, records: list[dict[str, Any]], end: str = "\n") -> Path:
    path.write_text("".join(json.dumps(r) + end for r in records))
    return path


def _general_path_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> None:
        raise AssertionError(f"{path.name} took the general path")

    monkeypatch.setattr(history, "read_records", refuse)


def test_the_workloads_shape_loads_by_the_fast_path_as_the_general_one_pairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20,000 ops (2.7 MB: lines cross many blocks) with info, fail, cas, eventual reads and
    # open invokes; then every optional field the workloads write, on invoke or completion only
    records = register_history(ops=20_000, clients=30, keys=50, seed=5, info_rate=0.01)
    records[0:0] = [
        {"type": "schedule", "process": "o.0", "rate": 5.0, "first": 0.0, "deadline": 9.0},
        {
            "type": "invoke",
            "f": "get",
            "key": "c",
            "value": None,
            "process": "c0",
            "time": 0.0,
            "consistent": False,
            "az": "az-a",
            "router": "rt-a",
            "intended": 0.0,
            "attempt": 2,
        },
        {
            "type": "ok",
            "f": "get",
            "key": "c",
            "value": {"v": [1.5, "x"]},
            "process": "c0",
            "time": 0.01,
            "latency": 0.01,
            "consistent": True,
            "az": "az-b",
            "attempt": 2,
        },
        {
            "type": "invoke",
            "f": "put",
            "key": "d",
            "process": "c1",
            "time": 0.02,
            "consistent": False,
        },
        {
            "type": "fail",
            "process": "c1",
            "time": 0.03,
            "error": "Throttling",
            "router": "rt-c",
            "az": "az-c",
            "value": 5,
        },
        {"type": "invoke", "f": "delete", "key": "e", "value": None, "process": "c2", "time": 1},
        {"type": "invoke", "f": "query", "key": "e", "value": [0, 9], "process": "c2", "time": 2},
        {"type": "info", "f": "query", "key": "e", "process": "c2", "time": 1.5},
        {"type": "ok", "f": "write", "key": "e", "value": 1, "process": "nobody", "time": 3.0},
        {
            "type": "invoke",
            "f": "audit",
            "key": "",
            "value": {"a": 1},
            "process": "c3",
            "time": 0.5,
        },
        {"type": "schedule_end", "process": "o.0", "time": 9.0},
    ]
    path = _write(tmp_path / "history.jsonl", records)
    expected = pair_operations(records)
    _general_path_is_an_error(monkeypatch)
    loaded = load_operations(path)
    assert loaded == expected
    assert [(type(o.invoke_time), type(o.latency)) for o in loaded[:2]] == [(float, float)] * 2
    assert {o.type for o in loaded} == {"ok", "fail", "info"}
    assert loaded[0].consistent and loaded[0].az == "az-a" and loaded[1].az == "az-c"
    assert (loaded[1].value, loaded[1].result, loaded[1].router) == (5, 5, "rt-c")
    assert not loaded[1].consistent  # the invoke's: its completion has none
    path.write_text(path.read_text().replace("\n", "\r\n\n"))  # CRLF and blank lines
    assert load_operations(path) == expected


def test_a_line_longer_than_a_block_and_a_last_line_without_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        *RECORDS[:4],
        {
            "type": "invoke",
            "f": "write",
            "key": "k",
            "value": "x" * 300_000,
            "process": "a",
            "time": 4.0,
        },
        {
            "type": "ok",
            "f": "write",
            "key": "k",
            "value": "x" * 300_000,
            "process": "a",
            "time": 5.0,
        },
    ]
    path = _write(tmp_path / "history.jsonl", records)
    path.write_text(path.read_text().rstrip("\n"))
    _general_path_is_an_error(monkeypatch)
    assert load_operations(path) == pair_operations(records)


@pytest.mark.parametrize(
    "odd",
    [
        {"process": 7},  # an int process ("7", paired with invokes of 7 only)
        {"key": 7},  # an int key ("7")
        {"key": None},
        {"f": "increment"},  # an f no workload writes
        {"f": None},
        {"time": None},
        {"type": "custom"},  # a type no workload writes: not an operation
    ],
)
def test_other_shapes_load_as_the_general_rules_pair_them(
    tmp_path: Path, odd: dict[str, Any]
) -> None:
    # a's write invoked again (the first left open) and completed, both lines with the odd field;
    # b's read completed by process "7" (pairs with nothing, not even an int process 7)
    common = [*RECORDS[:4], {**RECORDS[4], "key": "7"}, RECORDS[5]]  # RECORDS[4]: an int key
    records = [*common[:2], {**common[2], "process": "7"}, {**common[3], **odd}, *common[4:]]
    records.insert(3, {**common[0], **odd})
    path = _write(tmp_path / "history.jsonl", records)
    assert load_operations(path) == pair_operations(records)


def test_every_f_the_workloads_write_takes_the_fast_path() -> None:
    assert {str(f) for f in OpF} <= set(get_args(history._KnownF))


def test_a_history_the_workloads_write_loads_by_the_fast_path_as_the_general_one_pairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the generated history (info, fail, cas, open invokes) written line by line by the
    # workloads' own code (op_record, HistoryWriter, merge_histories), then one unmatched
    # completion and one invoke never completed
    records = register_history(ops=5_000, clients=20, keys=30, seed=9, info_rate=0.01)
    parts = tmp_path / "parts"
    writer = HistoryWriter(parts / "history-h-1.jsonl")
    for r in records:
        writer.append_record(
            op_record(
                OpType(r["type"]),
                OpF(r["f"]),
                r["key"],
                r.get("value"),
                r["process"],
                r["time"],
                r.get("latency"),
                r.get("error"),
                r.get("consistent"),
            )
        )
    end = records[-1]["time"] + 1.0
    writer.append_record(op_record(OpType.OK, OpF.WRITE, "k0", 1, "nobody", end, 0.1))
    writer.append_record(op_record(OpType.INVOKE, OpF.READ, "k1", None, "late", end, None))
    writer.flush()
    path = merge_histories(parts, tmp_path / "history.jsonl")
    assert path.read_bytes().startswith(b'{"type":"invoke","f":')  # the workloads' shape
    expected = history._pair(history.read_records(path))  # the general path
    assert {o.type for o in expected} == {"ok", "fail", "info"}
    assert expected[-1].process == "late" and expected[-1].type == "info"
    _general_path_is_an_error(monkeypatch)
    assert load_operations(path) == expected
