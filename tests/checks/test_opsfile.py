"""A history's operations file (checks/opsfile.py): written once after the merge, it loads as
the history's lines pair; it is used only while it matches its history, and never hides a
malformed one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import pytest

from checks import history
from checks.history import Operation, load_operations, pair_operations, write_operations
from checks.opsfile import ops_path
from checks.synth import register_history
from workloads.history import HistoryWriter, OpF, OpType, merge_histories, op_record

EXTRA = [  # every optional field the workloads write, and an unmatched and an open op
    op_record(
        OpType.INVOKE, OpF.GET, "c", None, "c0", 0.5, None, None, False, "az-a", "rt-a", 0.4, 2
    ),
    op_record(
        OpType.OK, OpF.GET, "c", {"v": [1.5, "x"]}, "c0", 0.6, 0.1, None, True, "az-a", "rt-a"
    ),
    op_record(OpType.INVOKE, OpF.PUT, "d", 7, "c1", 0.7, None),
    op_record(OpType.FAIL, OpF.PUT, "d", 7, "c1", 0.8, 0.1, "Throttling: slow down"),
    op_record(OpType.OK, OpF.WRITE, "e", 1, "nobody", 0.9, 0.1),
    op_record(OpType.INVOKE, OpF.CAS, "e", [1, 2], "late", 0.95),
]


def _run_history(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A history as a run writes it (op_record, HistoryWriter, merge_histories) and its lines."""
    generated = register_history(ops=3_000, clients=20, keys=30, seed=3, info_rate=0.01)
    records = [
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
        for r in generated
    ]
    writer = HistoryWriter(tmp_path / "parts" / "history-h-1.jsonl")
    for record in [*records, *EXTRA]:
        writer.append_record(record)
    writer.flush()
    path = merge_histories(tmp_path / "parts", tmp_path / "history.jsonl")
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def _history_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> NoReturn:
        raise AssertionError(f"{path} paired from its lines")

    monkeypatch.setattr(history, "_load_history", refuse)


def test_the_operations_file_loads_as_the_history_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, lines = _run_history(tmp_path)
    expected = pair_operations(lines)
    assert load_operations(path) == expected  # no operations file yet: the history's lines
    out = write_operations(path)
    assert out == tmp_path / "history.ops.jsonl"
    head, *rows = out.read_text().splitlines()
    header = json.loads(head)  # a readable first line: what follows, made from what
    assert header["format"] == "gameday-operations" and header["version"] == 1
    assert header["columns"] == list(Operation.__struct_fields__)
    assert (header["history_bytes"], header["operations"]) == (path.stat().st_size, len(rows))
    last = dict(zip(header["columns"], json.loads(rows[-1]), strict=True))  # a row by its columns
    assert (last["index"], last["process"], last["type"]) == (
        expected[-1].index,
        expected[-1].process,
        expected[-1].type,
    )
    _history_is_not_read(monkeypatch)
    loaded = load_operations(path)
    assert loaded == expected and {type(op) for op in loaded} == {Operation}
    assert {op.type for op in loaded} == {"ok", "fail", "info"}
    assert [op.type for op in loaded if op.process in ("late", "nobody")] == ["info"]
    assert [type(op.invoke_time) for op in loaded[:3]] == [float] * 3
    get = next(op for op in loaded if op.process == "c0")
    assert (get.result, get.intended, get.attempt, get.router) == (
        {"v": [1.5, "x"]},
        0.4,
        2,
        "rt-a",
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: text.replace('"value":1,', '"value":2,', 1),  # same size, other bytes
        lambda text: text.rsplit("\n", 2)[0] + "\n",  # its last line cut
        lambda text: text + json.dumps(EXTRA[2]) + "\n",  # a line added
    ],
)
def test_an_edited_history_is_paired_again_from_its_lines(tmp_path: Path, edit: Any) -> None:
    path, _ = _run_history(tmp_path)
    write_operations(path)
    path.write_text(edit(path.read_text()))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert load_operations(path) == pair_operations(lines)


def test_a_malformed_history_is_named_even_with_an_operations_file(tmp_path: Path) -> None:
    path, _ = _run_history(tmp_path)
    write_operations(path)
    text = path.read_text().split("\n")
    text[4] = text[4].replace('"time":', '"time":"late",', 1)  # the 5th line: a str time
    path.write_text("\n".join(text))
    with pytest.raises(ValueError, match=r"history.jsonl line 5: .*time"):
        load_operations(path)
    assert write_operations(path) is None and not ops_path(path).exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda rows: rows[:-1],  # a whole line lost
        lambda rows: [*rows[:-1], rows[-1][:-5]],  # a torn last line
        lambda rows: [rows[0].replace(b'"version":1', b'"version":2'), *rows[1:]],
        lambda rows: [rows[0].replace(b'"index",', b""), *rows[1:]],  # other columns
        lambda rows: [b"{}", *rows[1:]],
        lambda rows: [*rows[:2], rows[2].replace(b"[", b'["x",', 1), *rows[3:]],  # a bad row
    ],
)
def test_a_damaged_operations_file_is_not_used(tmp_path: Path, damage: Any) -> None:
    path, lines = _run_history(tmp_path)
    out = write_operations(path)
    assert out is not None
    out.write_bytes(b"\n".join(damage(out.read_bytes().split(b"\n")[:-1])) + b"\n")
    assert load_operations(path) == pair_operations(lines)


def test_no_operations_file_unless_it_reads_back_as_the_history_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, lines = _run_history(tmp_path)
    ops_path(path).write_text("left from an earlier merge\n")
    encode = history._encode_ops
    monkeypatch.setattr(history, "_encode_ops", lambda ops: encode(ops).replace(b"ok", b"info", 1))
    assert write_operations(path) is None and not ops_path(path).exists()
    assert load_operations(path) == pair_operations(lines)
