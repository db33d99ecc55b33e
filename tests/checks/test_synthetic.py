"""Generated histories: a simulated register with random concurrent clients must pass, and the
same history with one read made stale must fail (and still fail durability's phantom check
only when the value was never written)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from checks import wgl
from checks.history import pair_operations
from checks.linearizability import check_linearizability, register_ops_by_key
from checks.synth import corrupt_stale_read, register_history
from checks.wgl import BITS_CACHED, FIELDS


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


def test_keys_beyond_the_shared_bits_are_checked_the_same() -> None:
    """A key of more ops than the searches share bits for (BITS_CACHED) builds its own; keys
    checked before and after it use the shared ones: every verdict and failure is unchanged."""
    big = BITS_CACHED + 500
    hot = register_history(ops=big, clients=12, keys=1, seed=4, info_rate=0.002)
    small = register_history(ops=600, clients=12, keys=3, seed=4, info_rate=0.01)
    for records in (small, hot, small):
        ops = pair_operations(records)
        searched = max(len(r) // FIELDS for r in register_ops_by_key(ops)[0].values())
        assert (searched > BITS_CACHED) is (records is hot)
        assert check_linearizability(ops).valid is True
        corrupted, record = corrupt_stale_read(records, 4)
        result = check_linearizability(pair_operations(corrupted))
        assert result.valid is False
        assert [k["key"] for k in result.details["invalid_keys"]] == [record["key"]]


def test_searches_in_threads_share_the_bits_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks run in threads (gameday runs them with asyncio.to_thread): the shared bits only
    ever grow into a new list, so no search sees another's half-made one."""
    monkeypatch.setattr(wgl, "_BITS", [])
    histories = [
        register_history(ops=400 * (1 + i % 4), clients=8, keys=2, seed=i, info_rate=0.01)
        for i in range(8)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda h: check_linearizability(pair_operations(h)), histories))
    assert [r.valid for r in results] == [True] * len(histories)
    shared = wgl._BITS
    assert shared and all(bit == 1 << i for i, bit in enumerate(shared))
