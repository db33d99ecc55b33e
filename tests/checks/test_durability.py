"""Durability: acknowledged writes survive into the final reads; no read invents a value."""

from __future__ import annotations

from typing import Any

from checks.durability import check_durability
from checks.result import UNKNOWN
from tests.checks.helpers import cas, op, operations, r, w


def check(final: dict[str, Any] | None, *ops: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    result = check_durability(operations(*ops), final)
    return result.valid, result.details


def test_last_acknowledged_write_present() -> None:
    valid, details = check({"k": 2}, w("a", 1, 0, 1), w("a", 2, 2, 3))
    assert valid is True
    assert details["acknowledged_writes"] == 2


def test_lost_write_is_reported_with_key_value_and_time() -> None:
    valid, details = check({"k": 1}, w("a", 1, 0, 1), w("a", 2, 2, 3))
    assert valid is False
    [lost] = details["lost_writes"]
    assert (lost["key"], lost["value"], lost["time"], lost["final_value"]) == ("k", 2, 3, 1)
    assert "not reflected" in lost["problem"]


def test_key_gone_after_an_acknowledged_write() -> None:
    valid, details = check({"k": None}, w("a", 1, 0, 1))
    assert valid is False
    assert details["lost_writes"][0]["value"] == 1


def test_info_write_may_or_may_not_be_present() -> None:
    ops = [w("a", 1, 0, 1), w("b", 2, 2, 3, "info")]
    assert check({"k": 1}, *ops)[0] is True
    assert check({"k": 2}, *ops)[0] is True
    # an info write invoked long before the last acknowledged one may still land last
    assert check({"k": 2}, w("b", 2, 0, 0.5, "info"), w("a", 1, 1, 2))[0] is True


def test_failed_write_must_not_be_present() -> None:
    valid, details = check({"k": 2}, w("a", 1, 0, 1), w("b", 2, 2, 3, "fail", error="Throttled"))
    assert valid is False
    assert "write that failed" in details["lost_writes"][0]["problem"]


def test_concurrent_acknowledged_writes_either_may_be_last() -> None:
    ops = [w("a", 1, 0, 5), w("b", 2, 1, 4)]
    assert check({"k": 1}, *ops)[0] is True
    assert check({"k": 2}, *ops)[0] is True
    assert check({"k": None}, *ops)[0] is False


def test_cas_and_delete_are_writes() -> None:
    assert check({"k": 5}, w("a", 1, 0, 1), cas("a", 1, 5, 2, 3))[0] is True
    assert check({"k": 1}, w("a", 1, 0, 1), cas("a", 1, 5, 2, 3))[0] is False
    assert check({"k": 1}, w("a", 1, 0, 1), cas("a", 1, 5, 2, 3, "fail"))[0] is True
    assert check({"k": None}, op("a", "put", 1, 0, 1), op("a", "delete", None, 2, 3))[0] is True


def test_only_info_writes_allow_the_key_to_be_absent() -> None:
    assert check({"k": None}, w("b", 2, 0, 1, "info"))[0] is True


def test_reads_of_values_never_written() -> None:
    valid, details = check({"k": 1}, w("a", 1, 0, 1), r("b", 9, 2, 3, consistent=False))
    assert valid is False
    assert details["phantom_reads"][0]["result"] == 9
    assert "never written" in details["phantom_reads"][0]["problem"]
    valid, details = check({"k": 1}, w("a", 1, 0, 1), cas("b", 9, 2, 2, 3))
    assert valid is False and details["phantom_read_count"] >= 1
    valid, details = check({"k": 1, "other": 4}, w("a", 1, 0, 1))
    assert valid is False
    assert details["phantom_reads"][0]["key"] == "other"


def test_missing_final_reads_is_unknown_but_phantoms_still_fail() -> None:
    assert check(None, w("a", 1, 0, 1))[0] == UNKNOWN
    assert check({}, w("a", 1, 0, 1))[0] == UNKNOWN
    assert check(None, w("a", 1, 0, 1), r("b", 5, 2, 3))[0] is False
    assert check({}, r("b", None, 2, 3))[0] == UNKNOWN  # no writes at all: nothing proven
