"""Generated histories: a simulated register with random concurrent clients must pass, and the
same history with one read made stale must fail (and still fail durability's phantom check
only when the value was never written)."""

from __future__ import annotations

import pytest

from checks.history import pair_operations
from checks.linearizability import check_linearizability
from checks.synth import corrupt_stale_read, register_history


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_linearizable_history_passes(seed: int) -> None:
    records = register_history(
        ops=2000, clients=12, keys=8, seed=seed, info_rate=0.01, eventual_share=0.2
    )
    ops = pair_operations(records)
    assert any(o.type == "info" for o in ops) and any(o.type == "fail" for o in ops)
    result = check_linearizability(ops)
    assert result.valid is True, result.summary


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_history_with_one_stale_read_fails(seed: int) -> None:
    records = register_history(ops=2000, clients=12, keys=8, seed=seed, info_rate=0.01)
    corrupted, record = corrupt_stale_read(records, seed)
    result = check_linearizability(pair_operations(corrupted))
    assert result.valid is False
    assert result.details["invalid_key_count"] == 1
    bad = result.details["invalid_keys"][0]
    assert bad["key"] == record["key"]
    assert 2 <= len(bad["window"]) <= 10
    stale = [o for o in bad["window"] if o["f"] == "read" and o["result"] == record["value"]]
    assert record["process"] in [o["process"] for o in stale]


def test_hot_key_with_many_clients_still_checks_quickly() -> None:
    records = register_history(ops=2000, clients=30, keys=1, seed=5, info_rate=0.01)
    assert check_linearizability(pair_operations(records), budget=5.0).valid is True
