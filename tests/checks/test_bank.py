"""The bank check: money is never created or destroyed, no audit sees half a transfer."""

from __future__ import annotations

from checks.bank import check_bank, op
from checks.result import UNKNOWN

AUDIT = {"accounts": ["a", "b", "c"], "initial": 100}


def transfer(src: str, dst: str, amount: int, kind: str = "ok") -> object:
    return op("transfer", [src, dst, amount], kind=kind)


def test_consistent_audits_and_final_reads_pass() -> None:
    ops = [
        transfer("a", "b", 10),
        transfer("b", "c", 5, kind="info"),
        op("audit", AUDIT, {"a": 90, "b": 110, "c": 100}),
        op("audit", AUDIT, {"a": 90, "b": 105, "c": 105}),
        op("audit", AUDIT, None, kind="info"),
    ]
    result = check_bank(ops, {"a": "90", "b": "105", "c": "105"})
    assert result.valid is True, result.summary
    assert result.details["audits_ok"] == 2 and result.details["final"]["total"] == 300


def test_an_audit_that_sees_half_a_transfer_fails() -> None:
    ops = [transfer("a", "b", 10), op("audit", AUDIT, {"a": 90, "b": 100, "c": 100}, time=7.0)]
    result = check_bank(ops, {"a": "90", "b": "110", "c": "100"})
    assert result.valid is False
    [partial] = result.details["partial_reads"]
    assert partial["total"] == 290 and partial["expected"] == 300 and partial["time"] == 7.01


def test_money_lost_at_the_end_or_a_negative_balance_fails() -> None:
    ops = [transfer("a", "b", 10), op("audit", AUDIT, {"a": 100, "b": 100, "c": 100})]
    assert check_bank(ops, {"a": "90", "b": "100", "c": "100"}).valid is False
    negative = [op("audit", AUDIT, {"a": -10, "b": 210, "c": 100})]
    assert check_bank(negative, {"a": "100", "b": "100", "c": "100"}).valid is False


def test_missing_evidence_is_unknown_and_other_runs_pass() -> None:
    ops = [transfer("a", "b", 10), op("audit", AUDIT, {"a": 90, "b": 110, "c": 100})]
    assert check_bank(ops, None).valid == UNKNOWN
    assert check_bank(ops, {"a": "90", "c": "100"}).valid == UNKNOWN  # b's final balance?
    assert check_bank([transfer("a", "b", 1)], {}).valid == UNKNOWN  # no audit: which accounts?


def test_no_bank_traffic_is_not_applicable_unless_the_run_is_a_bank_run() -> None:
    other = check_bank([op("read", None, "x")], None)
    assert other.status == "n/a" and other.to_json()["valid"] is None, other
    assert other.summary.startswith("not applicable: ")
    # A bank scenario that recorded no transfer proves nothing: unknown, never n/a or a pass.
    silent = check_bank([op("read", None, "x")], {}, bank_run=True)
    assert silent.valid == UNKNOWN and silent.status == "unknown", silent


def test_a_lost_acknowledged_transfer_fails_though_the_total_holds() -> None:
    ops = [
        transfer("a", "b", 10),
        transfer("b", "c", 5, kind="info"),  # unknown: applied or not
        transfer("c", "a", 7, kind="fail"),  # refused: never applied
        op("audit", AUDIT, {"a": 90, "b": 110, "c": 100}),
    ]
    assert check_bank(ops, {"a": "90", "b": "105", "c": "105"}).valid is True  # info applied
    assert check_bank(ops, {"a": "90", "b": "110", "c": "100"}).valid is True  # not applied
    lost = check_bank(ops, {"a": "100", "b": "100", "c": "100"})  # a -> b undone entirely
    assert lost.valid is False and lost.details["final"]["total"] == 300, lost.summary
    assert [u["account"] for u in lost.details["final"]["unexplained"]] == ["a", "b"]
    twice = check_bank(ops, {"a": "80", "b": "120", "c": "100"})  # a -> b applied twice
    assert twice.valid is False
