"""Partition-level admission: the token bucket a storage node's leader keeps per partition.

Global admission control bounds a table's throughput across all routers; this second line of
defence bounds each partition (replication group), so one hot partition cannot swamp the node
that leads it, and so that the cluster stays protected even while routers admit on their
fallback rate (GAC unreachable). Sans-IO: ``now`` is passed in.

    limits = PartitionAdmission(rate_per_partition=150.0, burst=None, now=clock())
    limits.set_rate("p0", partition_share(table_rate=1000, partitions=10), now=clock())
    if not limits.try_admit("p0", units=2.0, now=clock()):
        ...  # answer ThrottlingException

A partition's rate is its share of the table's rate with headroom (:func:`partition_share`):
``table_rate / partitions * 1.5`` by default, because keys are never spread perfectly evenly
across hash ranges and a partition that gets slightly more than its share of the traffic must
not throttle while the table as a whole is within its limit. GAC still holds the table to its
rate; the headroom only decides which of the two limits bites first.

A group's bucket starts full (``burst``, by default 300 seconds of the rate, the DynamoDB burst
credit): a replica that has just become leader after a failover must not throttle a partition
that was healthy a moment ago.
"""

from __future__ import annotations

import math

from .bucket import DEFAULT_BURST_CREDIT, BurstCredit, TokenBucket

__all__ = ["DEFAULT_HEADROOM", "PartitionAdmission", "partition_share"]

DEFAULT_HEADROOM = 1.5


def partition_share(
    table_rate: float, partitions: int, headroom: float = DEFAULT_HEADROOM
) -> float:
    """The rate one of ``partitions`` partitions may use: ``table_rate / partitions * headroom``."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if not (table_rate >= 0 and math.isfinite(table_rate)):
        raise ValueError(f"table_rate must be finite and >= 0, got {table_rate}")
    if not (headroom >= 1 and math.isfinite(headroom)):
        raise ValueError(f"headroom must be finite and >= 1, got {headroom}")
    return table_rate / partitions * headroom


class PartitionAdmission:
    """One token bucket per replication group led by this node.

    Groups not configured with :meth:`set_rate` use ``rate_per_partition`` and ``burst``
    (``None``: the burst credit rule). ``set_rate`` with ``burst=None`` also applies the rule.
    """

    def __init__(
        self,
        rate_per_partition: float,
        burst: float | None,
        now: float,
        *,
        credit: BurstCredit = DEFAULT_BURST_CREDIT,
    ) -> None:
        # Validate the defaults once, with the bucket's own checks.
        TokenBucket(rate_per_partition, burst, now, initial=0.0, credit=credit)
        self.default_rate = float(rate_per_partition)
        self.default_burst = burst
        self._credit = credit
        self._buckets: dict[str, TokenBucket] = {}

    def try_admit(self, group: str, units: float, now: float) -> bool:
        """Take ``units`` from the group's bucket if it holds them; never blocks."""
        return self._bucket(group, now).try_take(units, now)

    def set_rate(self, group: str, rate: float, now: float, *, burst: float | None = None) -> None:
        """Change a group's rate at ``now``; tokens earned so far count at the old rate."""
        bucket = self._buckets.get(group)
        if bucket is None:
            self._buckets[group] = TokenBucket(rate, burst, now, credit=self._credit)
        else:
            bucket.set_rate(rate, burst, now)

    def level(self, group: str, now: float) -> float:
        return self._bucket(group, now).level(now)

    def rate(self, group: str) -> float:
        bucket = self._buckets.get(group)
        return self.default_rate if bucket is None else bucket.rate

    def drop(self, group: str) -> None:
        """Forget a group (this node no longer leads it); unknown groups are ignored."""
        self._buckets.pop(group, None)

    def groups(self) -> list[str]:
        return sorted(self._buckets)

    def _bucket(self, group: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(group)
        if bucket is None:
            bucket = TokenBucket(self.default_rate, self.default_burst, now, credit=self._credit)
            self._buckets[group] = bucket
        return bucket
