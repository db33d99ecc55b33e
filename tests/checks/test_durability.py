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


def test_a_lost_write_overwritten_later_is_caught_by_the_read_that_missed_it() -> None:
    """Issue #12: the load went on through a slow heal, and a write after power-on overwrote
    the value the blackout lost, so the final read shows nothing wrong. The consistent read
    that found the older value after the lost write was acknowledged does."""
    ops = [
        w("a", 1, 0, 1),
        r("b", 1, 2, 3),
        w("a", 2, 4, 5),  # acknowledged, then lost (power loss before it was fsynced)
        r("b", 1, 10, 11),  # after power-on: the value before it
        w("a", 3, 12, 13),  # overwrites: the final read is 3, as it should be
    ]
    valid, details = check({"k": 3}, *ops)
    assert valid is False, details
    [lost] = details["lost_writes"]
    assert (lost["key"], lost["value"], lost["time"]) == ("k", 2, 5)
    assert "missed by a consistent read invoked at 10" in lost["problem"]
    assert lost["missed_by"]["result"] == 1
    result = check_durability(operations(*ops), {"k": 3})
    assert "a consistent read at 10" in result.summary and "found 1" in result.summary
    # also with no final reads at all: the reads alone show the loss
    assert check(None, *ops)[0] is False
    # a read that found nothing (never written) after an acknowledged write: lost too
    assert check({"k": 2}, w("a", 1, 0, 1), r("b", None, 2, 3), w("a", 2, 4, 5))[0] is False
    # an ok cas found its expected value: it saw the older value as a read would
    assert check({"k": 3}, w("a", 1, 0, 1), w("a", 2, 2, 3), cas("b", 1, 3, 4, 5))[0] is False


def test_reads_that_may_have_seen_an_older_value_lose_nothing() -> None:
    base = [w("a", 1, 0, 1), w("a", 2, 4, 5)]
    # invoked before the write completed: it may have been ordered before it
    assert check({"k": 2}, *base, r("b", 1, 4.5, 6))[0] is True
    # a stale read that a later read contradicts: the write survived (a linearizability
    # problem, not a lost write)
    assert check({"k": 3}, *base, r("b", 1, 6, 7), r("c", 2, 8, 9), w("a", 3, 10, 11))[0] is True
    # ... even when the later read was concurrent with the stale one
    assert check({"k": 3}, *base, r("b", 1, 6, 9), r("c", 2, 7, 8), w("a", 3, 10, 11))[0] is True
    # the older value had a write that may have taken effect at any time (info)
    ops = [w("c", 1, 0, 0.5, "info"), w("a", 2, 1, 2), r("b", 1, 3, 4), w("a", 3, 5, 6)]
    assert check({"k": 3}, *ops)[0] is True
    # an eventually consistent read may be stale
    assert check({"k": 3}, *base, r("b", 1, 6, 7, consistent=False), w("a", 3, 8, 9))[0] is True
    # the final read shows it: it survived
    assert check({"k": 2}, *base, r("b", 1, 6, 7))[0] is True


def test_a_write_both_reads_and_the_final_read_missed_is_reported_once() -> None:
    valid, details = check({"k": 1}, w("a", 1, 0, 1), w("a", 2, 2, 3), r("b", 1, 4, 5))
    assert valid is False
    assert details["lost_write_count"] == 1
    assert "final read" in details["lost_writes"][0]["problem"]
