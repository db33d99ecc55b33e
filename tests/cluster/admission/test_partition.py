"""Partition-level buckets on a storage node leader."""

from __future__ import annotations

import pytest

from cluster.admission import PartitionAdmission, partition_share


def test_share_has_headroom() -> None:
    assert partition_share(1000.0, 10) == pytest.approx(150.0)
    assert partition_share(1000.0, 10, headroom=1.0) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        partition_share(1000.0, 0)
    with pytest.raises(ValueError):
        partition_share(1000.0, 4, headroom=0.5)


def test_groups_have_independent_buckets() -> None:
    limits = PartitionAdmission(rate_per_partition=10.0, burst=20.0, now=0.0)
    assert limits.try_admit("p0", 20.0, 0.0)
    assert not limits.try_admit("p0", 1.0, 0.0)
    assert limits.try_admit("p1", 20.0, 0.0)  # p0 being hot does not touch p1
    assert limits.try_admit("p0", 1.0, 0.1)  # refilled at 10/s
    assert limits.groups() == ["p0", "p1"]


def test_default_burst_is_burst_credit() -> None:
    limits = PartitionAdmission(rate_per_partition=5.0, burst=None, now=0.0)
    assert limits.level("p0", 0.0) == 1500.0  # starts full: a new leader does not throttle


def test_set_rate_changes_one_group() -> None:
    limits = PartitionAdmission(rate_per_partition=10.0, burst=10.0, now=0.0)
    assert limits.try_admit("p0", 10.0, 0.0)
    limits.set_rate("p0", 100.0, now=0.0, burst=100.0)
    assert limits.level("p0", 0.5) == pytest.approx(50.0)
    assert limits.rate("p0") == 100.0
    assert limits.rate("p9") == 10.0
    limits.set_rate("p2", partition_share(40.0, 4), now=0.0, burst=15.0)
    assert limits.level("p2", 0.0) == 15.0
    limits.drop("p0")
    assert "p0" not in limits.groups()
