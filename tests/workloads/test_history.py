"""The history contract: op lines, the run clock, recorders, part files and their merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from workloads.history import (
    HistoryWriter,
    Op,
    OpF,
    OpRecorder,
    OpType,
    RunClock,
    describe_problems,
    merge_histories,
    read_ops,
)


class FakeClock(RunClock):
    """A run clock that advances by a fixed step on each reading."""

    def __init__(self, start: float = 0.0, step: float = 0.001) -> None:
        super().__init__(0.0)
        self.t, self.step = start, step

    def now(self) -> float:
        self.t += self.step
        return self.t


def test_op_lines_carry_exactly_the_contract_fields() -> None:
    invoke = Op(OpType.INVOKE, OpF.READ, "r1", None, "p.0", 1.5, consistent=True)
    done = Op(OpType.OK, OpF.CAS, "r1", ["a", "b"], "p.0", 1.75, latency=0.25)
    failed = Op(OpType.FAIL, OpF.WRITE, "r1", "v", "p.0", 2.0, latency=0.1, error="X")

    assert invoke.to_json() == {
        "type": "invoke",
        "f": "read",
        "key": "r1",
        "value": None,
        "process": "p.0",
        "time": 1.5,
        "consistent": True,
    }
    assert done.to_json() == {
        "type": "ok",
        "f": "cas",
        "key": "r1",
        "value": ["a", "b"],
        "process": "p.0",
        "time": 1.75,
        "latency": 0.25,
    }
    assert failed.to_json()["error"] == "X"
    assert Op.from_json(json.loads(json.dumps(done.to_json()))) == done


def test_canary_ops_add_az_and_router() -> None:
    rec = OpRecorder(None, FakeClock(), "canary-az-a-rt-b", az="az-a", router="rt-b")
    op = rec.complete(rec.invoke(OpF.PUT, "canary/az-a/rt-b", "v1"), OpType.OK, "v1")
    assert op.to_json()["az"] == "az-a" and op.to_json()["router"] == "rt-b"


def test_recorded_lines_are_the_ops_lines(tmp_path: Path) -> None:
    """The recorder writes its lines without building Ops: the same bytes as Op.to_json."""
    writer = HistoryWriter(tmp_path / "h.jsonl")
    clock = FakeClock()
    rec = OpRecorder(writer, clock, "h-1-u0", az="az-a", router="rt-b")
    where = {"az": "az-a", "router": "rt-b"}
    first = rec.invoke(OpF.CAS, "r1", ["a", "b"], True, intended=0.0004, attempt=2)
    ops = [
        Op(
            OpType.INVOKE,
            OpF.CAS,
            "r1",
            ["a", "b"],
            "h-1-u0.0",
            first.time,
            consistent=True,
            intended=0.0004,
            attempt=2,
            **where,
        ),
        rec.complete(first, OpType.INFO, ["a", "b"], "TimeoutError: timed out"),
    ]
    second = rec.invoke("read", "r2", consistent=False)
    rec.finish(second, OpType.OK, "v")
    ops += [
        Op(OpType.INVOKE, OpF.READ, "r2", None, "h-1-u0.1", second.time, consistent=False, **where),
        Op(
            OpType.OK,
            OpF.READ,
            "r2",
            "v",
            "h-1-u0.1",
            clock.t,
            clock.t - second.time,
            consistent=False,
            **where,
        ),
    ]
    writer.flush()
    lines = (tmp_path / "h.jsonl").read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [op.to_json() for op in ops]
    assert [list(json.loads(line)) for line in lines] == [list(op.to_json()) for op in ops]


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "ends in },{",
        'quoted },{" inside',
        [{"a": 1}, {"b": 2}],
        {"accounts": [{"x": "},{"}], "initial": 1},
        "\u00e9\n\\",
    ],
)
def test_a_batch_is_written_as_one_dumps_per_record(value: Any) -> None:
    from workloads.history import jsonl

    records = [
        {"type": "invoke", "f": "read", "key": "k", "value": None},
        {"type": "ok", "f": "read", "key": "k", "value": value, "latency": 0.5},
        {"type": "schedule", "process": "p", "rate": 2.0},
    ]
    expected = b"".join(orjson.dumps(r) + b"\n" for r in records)
    assert jsonl(records) == expected
    assert jsonl(records[1:2]) == orjson.dumps(records[1]) + b"\n"
    assert jsonl([]) == b""


def test_run_clock_counts_from_the_run_start_and_never_goes_back() -> None:
    import time

    clock = RunClock(time.time() - 10.0)
    readings = [clock.now() for _ in range(1000)]
    assert 9.9 < readings[0] < 11.0
    assert readings == sorted(readings)


def test_recorder_pairs_invoke_and_completion_and_renames_after_info(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "history-h-1.jsonl")
    rec = OpRecorder(writer, FakeClock(), "h-1-u0")

    w = rec.invoke(OpF.WRITE, "r1", "h-1-u0-1")
    rec.complete(w, OpType.INFO, "h-1-u0-1", "TimeoutError")
    r = rec.invoke(OpF.READ, "r1", consistent=True)
    done = rec.complete(r, OpType.OK, "h-1-u0-1")
    writer.flush()

    ops = list(read_ops(writer.path))
    assert [(o["type"], o["process"]) for o in ops] == [
        ("invoke", "h-1-u0.0"),
        ("info", "h-1-u0.0"),
        ("invoke", "h-1-u0.1"),  # the unknown write may still be in flight: a new process
        ("ok", "h-1-u0.1"),
    ]
    assert done.latency == pytest.approx(0.001)
    assert ops[1]["error"] == "TimeoutError" and "error" not in ops[3]
    assert ops[3]["consistent"] is True
    assert describe_problems(ops) == []


def test_writer_buffers_until_flush_or_batch(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "part.jsonl", batch=3)
    rec = OpRecorder(writer, FakeClock(), "p")
    rec.invoke(OpF.GET, "k")
    assert not writer.path.exists()  # in memory only
    rec.complete(rec.invoke(OpF.GET, "k2"), OpType.OK, None)  # third op: a batch
    assert len(list(read_ops(writer.path))) == 3
    writer.flush()
    assert writer.written == 3


def record_process(directory: Path, pid: int, start: float, users: int, ops: int) -> None:
    """One fake Locust process: ``users`` users interleaving ops on one run clock."""
    clock = FakeClock(start, step=0.003)
    writer = HistoryWriter(directory / f"history-host-{pid}.jsonl", batch=7)
    recorders = [OpRecorder(writer, clock, f"host-{pid}-u{u}") for u in range(users)]
    for i in range(ops):
        for u, rec in enumerate(recorders):
            value = f"{rec.base}-{i}"
            pending = rec.invoke(OpF.WRITE, f"r{(i + u) % 5}", value)
            kind = (OpType.OK, OpType.FAIL, OpType.INFO)[(i + u) % 3]
            rec.complete(pending, kind, value, None if kind is OpType.OK else "E")
    # the last user was killed mid-request: an invoke without completion
    recorders[-1].invoke(OpF.READ, "r0", consistent=True)
    writer.flush()


def test_merge_sorts_by_time_and_keeps_every_process_well_formed(tmp_path: Path) -> None:
    record_process(tmp_path, 101, start=0.0, users=3, ops=20)
    record_process(tmp_path, 202, start=0.0015, users=2, ops=30)
    (tmp_path / "history-host-303.jsonl").write_text('{"type": "inv')  # torn by a kill

    out = merge_histories(tmp_path)

    assert out == tmp_path / "history.jsonl"
    ops = list(read_ops(out))
    assert len(ops) == 2 * (3 * 20 + 2 * 30) + 2
    times = [o["time"] for o in ops]
    assert times == sorted(times)
    assert describe_problems(ops) == []
    processes = {o["process"] for o in ops}
    assert all(p.startswith(("host-101-u", "host-202-u")) for p in processes)
    # every completion directly follows its own invoke within its process
    last: dict[str, dict[str, object]] = {}
    for op in ops:
        if op["type"] != "invoke":
            assert last[op["process"]]["type"] == "invoke"
            assert last[op["process"]]["key"] == op["key"]
        last[op["process"]] = op
    values = [o["value"] for o in ops if o["type"] == "invoke" and o["f"] == "write"]
    assert len(values) == len(set(values))  # unique written values


def test_merging_again_gives_the_same_file(tmp_path: Path) -> None:
    record_process(tmp_path, 7, start=0.0, users=2, ops=5)
    first = merge_histories(tmp_path).read_text()
    assert merge_histories(tmp_path).read_text() == first


def test_problems_are_described() -> None:
    ops: list[dict[str, Any]] = [
        {"type": "invoke", "f": "read", "key": "a", "value": None, "process": "p", "time": 1.0},
        {"type": "invoke", "f": "read", "key": "a", "value": None, "process": "p", "time": 2.0},
        {"type": "ok", "f": "write", "key": "a", "value": 1, "process": "p", "time": 1.5},
        {"type": "ok", "f": "read", "key": "a", "value": 1, "process": "q", "time": 3.0},
    ]
    problems = describe_problems(ops)
    assert any("while an op is open" in p for p in problems)
    assert any("backwards" in p for p in problems)
    assert any("does not match" in p for p in problems)
    assert any("without invoke" in p for p in problems)
