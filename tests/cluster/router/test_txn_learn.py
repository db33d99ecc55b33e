"""A prepare whose outcome was unknown to its coordinator is learnt, never sent again: the
coordinator reads the group's items and counts it prepared only if every item holds the
attempt's intent (fake storage; the protocol is in cluster/router/txncoord.py)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.router import txncoord
from cluster.router.errors import DynamoError
from cluster.router.txncoord import Placed, Unknown


class FakeStorage:
    """Consistent gets answer from ``locks`` (key -> intent); the first ``failures`` reads
    fail as an election would, and ``appear_after`` reads pass before the intents show."""

    def __init__(
        self, locks: dict[bytes, dict[str, Any]], failures: int = 0, appear_after: int = 0
    ):
        self.locks = locks
        self.failures = failures
        self.appear_after = appear_after
        self.reads = 0

    async def read(self, partition: Any, op: str, consistent: bool, deadline: float, **f: Any):
        assert (op, consistent) == ("get", True)
        self.reads += 1
        if self.reads <= self.failures:
            raise DynamoError.unavailable("no leader for p0")
        lock = self.locks.get(f["pk"]) if self.reads > self.appear_after else None
        return {"item": {"k": {"S": "x"}}, **({"lock": lock} if lock else {})}


def placed(pk: bytes) -> Placed:
    op = SimpleNamespace(tbl="t", pk=pk, sk=b"")
    return Placed(0, SimpleNamespace(), SimpleNamespace(id="p0"), op)  # type: ignore[arg-type]


def learn(storage: FakeStorage, attempt: str, budget: float = 0.3) -> list[Any]:
    ctx = SimpleNamespace(storage=storage, request_budget=budget)
    ops = [placed(b"a"), placed(b"b")]
    unknown = Unknown(DynamoError.internal("no outcome within 0.59s"))
    return asyncio.run(
        txncoord._learn_unknown_prepares(ctx, [ops], [unknown], attempt)  # type: ignore[arg-type]
    )


def intent(attempt: str) -> dict[str, Any]:
    return {"txn": attempt, "kind": "put", "image": {"k": {"S": "x"}, "v": {"N": "1"}}}


def test_intents_of_the_attempt_on_every_item_mean_prepared() -> None:
    storage = FakeStorage({b"a": intent("t1"), b"b": intent("t1")}, failures=1, appear_after=3)
    [(ok, payload)] = learn(storage, "t1")
    assert ok and [r["Code"] for r in payload["reasons"]] == ["None", "None"]
    assert all(size > 0 for size in payload["sizes"])


def test_missing_or_foreign_intents_leave_the_outcome_unknown() -> None:
    for locks in ({b"a": intent("t1")}, {b"a": intent("t1"), b"b": intent("other")}, {}):
        [outcome] = learn(FakeStorage(locks), "t1", budget=0.15)
        assert isinstance(outcome, Unknown), locks


def test_known_outcomes_are_left_as_they_are() -> None:
    ctx = SimpleNamespace(storage=None, request_budget=0.1)
    outcomes = [(False, {"reasons": [{"Code": "TransactionConflict"}]})]
    got = asyncio.run(txncoord._learn_unknown_prepares(ctx, [[placed(b"a")]], outcomes, "t1"))  # type: ignore[arg-type]
    assert got == outcomes


def test_nothing_is_learnt_when_another_group_refused() -> None:
    """The attempt aborts anyway: its abort must not wait on reads."""
    storage = FakeStorage({b"a": intent("t1"), b"b": intent("t1")})
    ctx = SimpleNamespace(storage=storage, request_budget=0.3)
    unknown = Unknown(DynamoError.internal("no outcome within 0.59s"))
    refused = (False, {"reasons": [{"Code": "TransactionConflict"}]})
    groups = [[placed(b"a"), placed(b"b")], [placed(b"c")]]
    got = asyncio.run(txncoord._learn_unknown_prepares(ctx, groups, [unknown, refused], "t1"))  # type: ignore[arg-type]
    assert got == [unknown, refused] and storage.reads == 0


def abort_in_background(
    monkeypatch: pytest.MonkeyPatch, answers: list[str | None], age: float
) -> list[str]:
    """Run ``_abort_in_background`` for an attempt started ``age`` seconds ago against a
    ``decide`` that answers ``answers`` in turn; the attempts it made."""
    calls: list[str] = []

    async def fake_decide(ctx: Any, home: Any, attempt: str, commit: bool) -> str | None:
        assert not commit  # it only ever aborts
        calls.append(attempt)
        return answers.pop(0) if answers else None

    monkeypatch.setattr(txncoord, "decide", fake_decide)

    async def main() -> None:
        txncoord._abort_in_background(
            SimpleNamespace(),
            SimpleNamespace(),
            "t1",
            time.time() - age,  # type: ignore[arg-type]
        )
        while txncoord._abandoned:
            await asyncio.sleep(0.01)

    asyncio.run(main())
    return calls


def test_a_given_up_attempt_is_aborted_once_its_home_group_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert abort_in_background(monkeypatch, [None, None, "A", "A"], age=1.0) == ["t1", "t1", "t1"]


def test_a_given_up_attempt_that_committed_meanwhile_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert abort_in_background(monkeypatch, [None, "C", "A"], age=1.0) == ["t1", "t1"]


def test_nothing_is_tried_once_the_attempt_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    assert abort_in_background(monkeypatch, [None], age=txncoord.TXN_STALE + 1) == []
