"""The search's fast path (checks.wgl.replays: the ops in call order as the linearization) never
passes a history that is not linearizable: compared with brute force on small random histories
and with the full search on generated ones with reads made wrong."""

from __future__ import annotations

import random

from checks.history import pair_operations
from checks.linearizability import check_linearizability, register_ops_by_key, rows, to_register_op
from checks.synth import corrupt_stale_read, register_history
from checks.wgl import replays, search
from tests.checks.helpers import r, w
from tests.checks.test_oracle import brute_force, random_history


def test_replay_passes_only_histories_brute_force_passes() -> None:
    rng = random.Random(20261206)
    seen = {"replayed": 0, "searched": 0, "invalid": 0}
    for _ in range(3000):
        ops = pair_operations(random_history(rng))
        flat = register_ops_by_key(ops)[0].get("k")
        registers = [x for x in map(to_register_op, ops) if x is not None]
        if flat is None or not any(x.definite for x in registers):
            continue
        expected = brute_force(registers)
        if replays(flat, None):
            assert expected, [o.describe() for o in ops]
            seen["replayed"] += 1
        else:
            seen["searched" if expected else "invalid"] += 1
    assert min(seen.values()) > 200, seen


def _wrong_reads(records: list[dict[str, object]], rng: random.Random) -> list[dict[str, object]]:
    """A copy with a few ok reads returning another value some op wrote (or null)."""
    written = [r["value"] for r in records if r["type"] == "invoke" and r["f"] == "write"]
    copy = [dict(r) for r in records]
    reads = [r for r in copy if r["type"] == "ok" and r["f"] == "read"]
    for read in rng.sample(reads, 3):
        read["value"] = rng.choice([None, *written])
    return copy


def test_replay_passes_only_keys_the_search_passes() -> None:
    rng = random.Random(7)
    seen = {"replayed": 0, "searched": 0, "invalid": 0}
    for seed in range(24):
        records = register_history(
            ops=240,
            clients=6,
            keys=6,
            seed=seed,
            info_rate=0.02,
            think=0.001 if seed % 4 < 2 else 0.03,  # hot keys, and keys whose ops seldom overlap
            values=None if seed % 2 else 4,  # unique values, and a few values written many times
        )
        histories = [records, corrupt_stale_read(records, seed)[0], _wrong_reads(records, rng)]
        for history in histories:
            for flat in register_ops_by_key(pair_operations(history))[0].values():
                valid, _ = search(flat, None, float("inf"))
                if replays(flat, None):
                    assert valid is True, [r[0].describe() for r in rows(flat)]
                    seen["replayed"] += 1
                else:
                    seen["searched" if valid is True else "invalid"] += 1
    assert min(seen.values()) > 30, seen


def test_replay_takes_ops_in_call_order_not_the_files() -> None:
    # The file lists w1's write of 2 (at 2-3) before w0's write of 1 (at 0-1): in the file's
    # order the read of 1 at 4-5 would follow the write of 1, but w0's write came first.
    records = [*w("w1", 2, 2.0, 3.0), *w("w0", 1, 0.0, 1.0), *r("r0", 1, 4.0, 5.0)]
    ops = pair_operations(records)
    assert not replays(register_ops_by_key(ops)[0]["k"], None)
    assert check_linearizability(ops).valid is False
