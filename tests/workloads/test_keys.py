"""Key choosers: determinism per seed, range, and the zipfian skew YCSB's theta 0.99 gives."""

from __future__ import annotations

from collections import Counter

import pytest

from workloads.keys import UniformKeys, ZipfianKeys, key_chooser, key_name, zeta


def draw(chooser: UniformKeys | ZipfianKeys, n: int) -> list[int]:
    return [chooser.next() for _ in range(n)]


@pytest.mark.parametrize("distribution", ["uniform", "zipfian"])
def test_same_seed_same_sequence_other_seed_other_sequence(distribution: str) -> None:
    first = key_chooser(distribution, 1000, seed="u1")
    again = key_chooser(distribution, 1000, seed="u1")
    other = key_chooser(distribution, 1000, seed="u2")

    seq = [first.next() for _ in range(500)]
    assert seq == [again.next() for _ in range(500)]
    assert seq != [other.next() for _ in range(500)]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000])
def test_indices_stay_in_range(n: int) -> None:
    for chooser in (UniformKeys(n, 7), ZipfianKeys(n, 7)):
        assert set(draw(chooser, 5000)) <= set(range(n))


def test_zipfian_is_skewed_towards_low_ranks() -> None:
    n, samples = 1000, 50_000
    counts = Counter(draw(ZipfianKeys(n, seed=1), samples))

    # P(rank 0) = 1 / zeta(n, 0.99), about 13% for n = 1000
    expected_top = samples / zeta(n, 0.99)
    assert abs(counts[0] - expected_top) < 0.1 * expected_top
    assert counts[0] > counts[1] > counts[9] > counts[99]
    top_ten = sum(counts[i] for i in range(10))
    assert top_ten > 0.35 * samples  # 1% of the keys take over a third of the traffic
    assert len(counts) > 300  # yet the tail is still visited


def test_uniform_is_flat() -> None:
    counts = Counter(draw(UniformKeys(10, seed=3), 20_000))
    assert max(counts.values()) < 1.15 * min(counts.values())


def test_zipfian_rank_frequencies_follow_the_power_law() -> None:
    counts = Counter(draw(ZipfianKeys(100, seed=5), 100_000))
    # P(1) / P(0) = 2 ** -0.99; P(3) / P(0) = 4 ** -0.99
    assert counts[1] / counts[0] == pytest.approx(2**-0.99, rel=0.08)
    assert counts[3] / counts[0] == pytest.approx(4**-0.99, rel=0.12)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        key_chooser("hotspot", 10)
    with pytest.raises(ValueError):
        UniformKeys(0)
    with pytest.raises(ValueError):
        ZipfianKeys(10, theta=1.0)


def test_key_names() -> None:
    assert key_name("r", 7) == "r7"
