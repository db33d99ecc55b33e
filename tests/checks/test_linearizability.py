"""Linearizability of hand-written register histories: what must pass, what must fail, and why."""

from __future__ import annotations

import time
from typing import Any

from checks.history import pair_operations
from checks.linearizability import check_linearizability
from checks.result import UNKNOWN
from tests.checks.helpers import cas, history, op, operations, r, w


def check(*ops: list[dict[str, Any]], budget: float = 5.0) -> tuple[Any, dict[str, Any]]:
    result = check_linearizability(operations(*ops), budget=budget)
    return result.valid, result.details


def test_sequential_writes_and_reads_are_linearizable() -> None:
    valid, details = check(
        r("a", None, 0, 1), w("a", 1, 2, 3), r("b", 1, 4, 5), w("b", 2, 6, 7), r("a", 2, 8, 9)
    )
    assert valid is True
    assert details["keys"] == 1 and details["operations"] == 5


def test_stale_read_is_not_linearizable_and_the_window_shows_it() -> None:
    valid, details = check(w("a", 1, 0, 1), w("a", 2, 2, 3), r("b", 1, 4, 5))
    assert valid is False
    bad = details["invalid_keys"][0]
    assert bad["key"] == "k"
    # The search cannot move past 1 while a read of 1 is still to come, so write 2 is stuck.
    assert bad["op"]["f"] == "write" and bad["op"]["value"] == 2
    assert bad["state"] == 1
    assert [(o["f"], o["value"], o.get("result")) for o in bad["window"]] == [
        ("write", 1, None),
        ("write", 2, None),
        ("read", None, 1),
    ]
    assert "has yet to observe 1" in bad["explanation"]


def test_stale_read_with_repeated_values_is_reported_at_the_read() -> None:
    # Value 1 is written twice, so it may come back: the search tries, and gets stuck on the read.
    valid, details = check(w("a", 1, 0, 1), w("a", 2, 2, 3), r("b", 1, 4, 5), w("a", 1, 6, 7))
    assert valid is False
    bad = details["invalid_keys"][0]
    assert bad["op"]["f"] == "read" and bad["state"] == 2
    assert len(bad["window"]) == 3


def test_lost_write_read_of_nothing_after_an_acknowledged_write() -> None:
    valid, details = check(w("a", 1, 0, 1), r("b", None, 2, 3))
    assert valid is False
    window = details["invalid_keys"][0]["window"]
    assert [o["f"] for o in window] == ["write", "read"]


def test_read_of_a_value_before_its_write_began() -> None:
    assert check(r("b", 1, 0, 1), w("a", 1, 2, 3))[0] is False


def test_cas_that_swapped_twice_from_the_same_value() -> None:
    assert check(w("a", 1, 0, 1), cas("a", 1, 2, 2, 3), cas("b", 1, 3, 4, 5))[0] is False


def test_cas_from_a_value_never_held() -> None:
    assert check(cas("a", 0, 1, 0, 1))[0] is False
    assert check(w("a", 0, 0, 1), cas("a", 0, 1, 2, 3), r("b", 1, 4, 5))[0] is True


def test_cas_that_failed_although_the_register_held_the_expected_value() -> None:
    assert check(w("a", 1, 0, 1), cas("b", 1, 2, 2, 3, "fail"))[0] is False
    assert check(w("a", 1, 0, 1), cas("b", 3, 2, 2, 3, "fail"))[0] is True


def test_cas_fail_for_another_reason_did_not_happen() -> None:
    throttled = cas("b", 1, 2, 2, 3, "fail", error="ThrottlingException")
    assert check(w("a", 1, 0, 1), throttled, r("a", 1, 4, 5))[0] is True


def test_concurrent_cas_mismatch_is_legal_when_a_write_may_come_first() -> None:
    # The write of 5 overlaps the failed cas(1, 2): it may have happened before the compare.
    assert check(w("a", 1, 0, 1), w("c", 5, 2, 6), cas("b", 1, 2, 3, 4, "fail"))[0] is True


def test_info_write_can_make_an_otherwise_invalid_read_valid() -> None:
    assert check(w("a", 1, 0, 1), w("b", 2, 2, 3, "fail"), r("c", 2, 4, 5))[0] is False
    assert check(w("a", 1, 0, 1), w("b", 2, 2, 3, "info"), r("c", 2, 4, 5))[0] is True
    # ... also when its invoke was never completed at all
    assert check(w("a", 1, 0, 1), w("b", 2, 2, None), r("c", 2, 4, 5))[0] is True


def test_info_write_may_never_happen_or_happen_much_later() -> None:
    reads = [r("c", 1, 4, 5), r("c", 1, 6, 7), r("c", 2, 20, 21), r("c", 2, 22, 23)]
    assert check(w("a", 1, 0, 1), w("b", 2, 2, 3, "info"), *reads)[0] is True
    assert check(w("a", 1, 0, 1), w("b", 2, 2, 3, "info"), *reads[:2])[0] is True
    # once observed, it cannot be undone
    flip_back = [*reads, r("c", 1, 24, 25)]
    assert check(w("a", 1, 0, 1), w("b", 2, 2, 3, "info"), *flip_back)[0] is False


def test_info_write_cannot_take_effect_before_its_invoke() -> None:
    assert check(w("a", 1, 0, 1), r("c", 2, 2, 3), w("b", 2, 4, 5, "info"))[0] is False


def test_info_cas_possibly_applied() -> None:
    assert check(w("a", 1, 0, 1), cas("b", 1, 2, 2, 3, "info"), r("c", 2, 4, 5))[0] is True
    assert check(w("a", 1, 0, 1), cas("b", 7, 2, 2, 3, "info"), r("c", 2, 4, 5))[0] is False


def test_concurrent_writes_may_linearize_in_either_order() -> None:
    writes = [w("a", 1, 0, 10), w("b", 2, 1, 9)]
    assert check(*writes, r("c", 1, 11, 12))[0] is True
    assert check(*writes, r("c", 2, 11, 12))[0] is True
    # reads during the writes may see 2 then 1 (b, then a) ...
    assert check(*writes, r("c", 2, 2, 3), r("c", 1, 4, 5), r("c", 1, 11, 12))[0] is True
    # ... but then the register cannot go back to 2 without another write
    assert check(*writes, r("c", 2, 2, 3), r("c", 1, 4, 5), r("c", 2, 11, 12))[0] is False


def test_concurrent_read_may_see_old_or_new_value() -> None:
    assert check(w("a", 1, 0, 1), w("a", 2, 2, 6), r("b", 1, 3, 4), r("c", 2, 3, 5))[0] is True
    assert check(w("a", 1, 0, 1), w("a", 2, 2, 6), r("b", 2, 3, 4), r("c", 1, 5, 7))[0] is False


def test_equal_timestamps_count_as_concurrent() -> None:
    assert check(w("a", 1, 0, 1), r("b", None, 1, 2))[0] is True


def test_get_put_delete_are_register_operations() -> None:
    ops = [
        op("a", "put", {"v": 1}, 0, 1),
        op("b", "get", None, 2, 3, result={"v": 1}),
        op("a", "delete", None, 4, 5),
        op("b", "get", None, 6, 7, result={"v": 1}),
    ]
    valid, details = check(*ops)
    assert valid is False
    window = details["invalid_keys"][0]["window"]
    assert [o["f"] for o in window] == ["put", "get", "delete", "get"]


def test_eventually_consistent_reads_are_excluded_but_must_return_written_values() -> None:
    stale = r("b", 1, 4, 5, consistent=False)
    assert check(w("a", 1, 0, 1), w("a", 2, 2, 3), stale)[0] is True
    invented = r("b", 7, 4, 5, consistent=False)
    valid, details = check(w("a", 1, 0, 1), invented)
    assert valid is False
    assert details["eventual_read_violations"][0]["result"] == 7
    failed = r("b", 3, 4, 5, consistent=False)
    _, details = check(w("a", 1, 0, 1), w("a", 3, 2, 3, "fail"), failed)
    assert "failed" in details["eventual_read_violations"][0]["problem"]


def test_keys_are_independent_and_the_bad_one_is_named() -> None:
    good = [w("a", 1, 0, 1, key="x"), r("b", 1, 2, 3, key="x")]
    bad = [w("a", 1, 4, 5, key="y"), r("b", 9, 6, 7, key="y")]
    valid, details = check(*good, *bad)
    assert valid is False
    assert [k["key"] for k in details["invalid_keys"]] == ["y"]
    assert details["keys"] == 2


def test_update_writes_its_value() -> None:
    assert check(w("a", 1, 0, 1), op("b", "update", 5, 2, 3), r("a", 5, 4, 5))[0] is True
    assert check(w("a", 1, 0, 1), op("b", "update", 5, 2, 3), r("a", 1, 4, 5))[0] is False
    failed = op("b", "update", 5, 2, 3, "fail", error="ConditionalCheckFailedException")
    assert check(w("a", 1, 0, 1), failed, r("a", 1, 4, 5))[0] is True


def test_keys_with_malformed_cas_are_skipped_listed_and_unknown() -> None:
    valid, details = check(
        w("a", 1, 0, 1), op("b", "cas", 5, 2, 3), r("a", 5, 4, 5), w("a", 1, 0, 1, key="o")
    )
    assert valid == UNKNOWN
    assert "k" in details["skipped_keys"]
    assert details["keys"] == 1


def test_nothing_to_check_is_unknown() -> None:
    assert check_linearizability([]).valid == UNKNOWN
    assert check(op("a", "query", None, 0, 1))[0] == UNKNOWN


def test_search_timeout_yields_unknown_not_a_hang() -> None:
    # 18 mutually concurrent writes, then two reads that cannot both be explained: the search must
    # visit every (subset, last write) pair before it can say no.
    writes = [w(f"p{i}", i, 0.0 + i * 0.001, 10.0) for i in range(18)]
    records = history(*writes, r("x", 1, 11, 12), r("x", 2, 13, 14))
    started = time.monotonic()
    result = check_linearizability(pair_operations(records), budget=0.05)
    assert time.monotonic() - started < 2.0
    assert result.valid == UNKNOWN
    assert result.details["unknown_keys"][0]["key"] == "k"
    assert "budget" in result.summary
    # a timeout on one key does not hide a violation on another
    other = pair_operations(history(w("a", 1, 0, 1, key="z"), r("b", 3, 2, 3, key="z")))
    result = check_linearizability(pair_operations(records) + other, budget=0.05)
    assert result.valid is False
    assert result.details["unknown_key_count"] == 1


def test_values_compare_as_json_values_not_python_ones() -> None:
    # The search numbers values by their canonical JSON: 1.0 is 1, but true is not 1 and "1" is
    # not 1 (Python's True == 1 must not make a read of 1 after a write of true pass).
    assert check(w("a", 1.0, 0, 1), r("b", 1, 2, 3))[0] is True
    assert check(w("a", True, 0, 1), r("b", 1, 2, 3))[0] is False
    assert check(w("a", "1", 0, 1), r("b", 1, 2, 3))[0] is False
    assert check(w("a", {"n": [1, 2]}, 0, 1), r("b", {"n": [1.0, 2]}, 2, 3))[0] is True
